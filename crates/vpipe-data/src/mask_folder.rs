//! Segmentation datasets as two folders, images and class-index masks, paired by file stem
//! (`a.jpg` with `a.png`), and the reading of class-index masks.
//!
//! Images without a mask, masks without an image and masks of another size than their image
//! are skipped and counted in the [`DatasetReport`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{DataError, DatasetReport, Result};

/// Report reason: images that have no mask of the same stem.
pub const IMAGE_WITHOUT_MASK: &str = "images without a mask skipped";
/// Report reason: masks that have no image of the same stem.
pub const MASK_WITHOUT_IMAGE: &str = "masks without an image skipped";
/// Report reason: masks whose size differs from their image's.
pub const MASK_SIZE: &str = "masks of another size than their image skipped";

/// The file extensions read as images (lower case).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff"];

/// Two files of the same stem in two folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePair {
    /// The common file stem.
    pub stem: String,
    /// The file in the first folder.
    pub first: PathBuf,
    /// The file in the second folder.
    pub second: PathBuf,
}

/// The files of two folders paired by stem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairing {
    /// The pairs, by stem.
    pub pairs: Vec<FilePair>,
    /// Files of the first folder without a partner.
    pub only_first: Vec<PathBuf>,
    /// Files of the second folder without a partner.
    pub only_second: Vec<PathBuf>,
}

/// The files directly in `dir` whose extension (any case) is one of `extensions`, by stem.
/// Two files of one stem are an error: the pairing would be ambiguous.
fn files_by_stem(dir: &Path, extensions: &[&str]) -> Result<BTreeMap<String, PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::read(dir, e))?;
    let mut out = BTreeMap::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::read(dir, e))?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if !path.is_file() || !ext.is_some_and(|e| extensions.contains(&e.as_str())) {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if let Some(other) = out.insert(stem.to_string(), path.clone()) {
            return Err(DataError::invalid(
                dir,
                format!(
                    "{} and {} have the same stem: which one to use is ambiguous",
                    other.display(),
                    path.display()
                ),
            ));
        }
    }
    Ok(out)
}

/// Pairs the files of `first` (extensions `first_ext`) with those of `second` (`second_ext`)
/// by file stem.
pub fn pair_by_stem(
    first: &Path,
    first_ext: &[&str],
    second: &Path,
    second_ext: &[&str],
) -> Result<Pairing> {
    let a = files_by_stem(first, first_ext)?;
    let mut b = files_by_stem(second, second_ext)?;
    let mut pairing = Pairing::default();
    for (stem, path) in a {
        match b.remove(&stem) {
            Some(other) => pairing.pairs.push(FilePair {
                stem,
                first: path,
                second: other,
            }),
            None => pairing.only_first.push(path),
        }
    }
    pairing.only_second = b.into_values().collect();
    Ok(pairing)
}

/// A class-index mask: one class index a pixel, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassMask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The class indices, `height * width`.
    pub data: Vec<u8>,
}

/// Reads a class-index mask: an 8-bit grayscale PNG, or an 8-bit palette PNG (as PASCAL
/// VOC's `SegmentationClass` masks are) whose palette indices are the classes.
pub fn read_class_mask(path: &Path) -> Result<ClassMask> {
    let decode_err = |message: String| DataError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| DataError::read(path, e))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(|e| decode_err(e.to_string()))?;
    let (color, depth) = reader.output_color_type();
    if depth != png::BitDepth::Eight
        || !matches!(color, png::ColorType::Grayscale | png::ColorType::Indexed)
    {
        return Err(decode_err(format!(
            "a class-index mask must be an 8-bit grayscale or palette PNG, not {color:?} with {depth:?} bits"
        )));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| decode_err("the image is too large".into()))?;
    let mut data = vec![0; size];
    let info = reader
        .next_frame(&mut data)
        .map_err(|e| decode_err(e.to_string()))?;
    data.truncate(info.buffer_size());
    Ok(ClassMask {
        width: info.width,
        height: info.height,
        data,
    })
}

/// The width and height of an image file, read from its header.
pub fn image_size(path: &Path) -> Result<(u32, u32)> {
    image::image_dimensions(path).map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// One image and its class-index mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskSample {
    /// The image file.
    pub image: PathBuf,
    /// The mask file (PNG).
    pub mask: PathBuf,
}

/// A segmentation dataset: images with their class-index masks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentationFolder {
    /// The samples, by stem.
    pub samples: Vec<MaskSample>,
    /// What was skipped.
    pub report: DatasetReport,
}

impl SegmentationFolder {
    /// Pairs the images of `images` with the PNG masks of `masks` by stem, skipping (and
    /// counting) the unpaired files and the masks whose size is not their image's.
    pub fn load(images: &Path, masks: &Path) -> Result<Self> {
        let pairing = pair_by_stem(images, IMAGE_EXTENSIONS, masks, &["png"])?;
        let mut out = Self::default();
        for p in &pairing.only_first {
            out.report.add(IMAGE_WITHOUT_MASK, p.display());
        }
        for p in &pairing.only_second {
            out.report.add(MASK_WITHOUT_IMAGE, p.display());
        }
        for pair in pairing.pairs {
            let (iw, ih) = image_size(&pair.first)?;
            let (mw, mh) = image_size(&pair.second)?;
            if (iw, ih) != (mw, mh) {
                out.report.add(
                    MASK_SIZE,
                    format!("{} ({mw}x{mh}, image {iw}x{ih})", pair.second.display()),
                );
                continue;
            }
            out.samples.push(MaskSample {
                image: pair.first,
                mask: pair.second,
            });
        }
        if out.samples.is_empty() {
            return Err(DataError::invalid(
                images,
                format!(
                    "no image has a mask of the same stem in {}",
                    masks.display()
                ),
            ));
        }
        Ok(out)
    }
}
