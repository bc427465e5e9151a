//! COCO instances JSON: images, annotations (boxes, polygons, RLE in either form, crowd
//! regions) and categories.
//!
//! [`CocoDataset::load`] fails, naming the file and the item, on what cannot be read: an empty
//! or invalid file, a file without images, an item without its required fields, duplicate
//! ids. What a dataset can do without is skipped, counted in its [`DatasetReport`] and left to
//! the caller to print: annotations of unknown image ids or unknown category ids (pycocotools'
//! `COCOeval` ignores both too). Boxes are kept as written, so that an evaluation sees what
//! pycocotools sees; [`CocoDataset::clip_boxes`] (training) clips them to their image and drops
//! the degenerate ones, and [`CocoDataset::remove_missing_images`] drops the images missing on
//! disk with their annotations.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::masks::Rle;
use crate::{DataError, DatasetReport, Result};

/// One image of a COCO file.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoImage {
    /// The image id.
    pub id: i64,
    /// The file name, relative to the images folder.
    pub file_name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// One category of a COCO file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Category {
    /// The category id (COCO's run from 1 to 90 with gaps).
    pub id: i64,
    /// The category name.
    pub name: String,
    /// The super-category, if given.
    #[serde(default)]
    pub supercategory: Option<String>,
}

/// An annotation's region.
#[derive(Debug, Clone, PartialEq)]
pub enum Segmentation {
    /// Polygons as `[x1, y1, x2, y2, ...]` in pixels; the region is their union.
    Polygons(Vec<Vec<f64>>),
    /// A run-length encoded mask (from either COCO form: a list of counts or the compressed
    /// string), as its counts.
    Rle(Rle),
}

/// One annotation of a COCO file.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// The annotation id.
    pub id: i64,
    /// The id of its image.
    pub image_id: i64,
    /// Its category id.
    pub category_id: i64,
    /// The box `[x, y, width, height]` in pixels.
    pub bbox: [f64; 4],
    /// The region's area in pixels (`area`; the box's area when the file has none).
    pub area: f64,
    /// A crowd region (`iscrowd` 1): a group of objects, matched to any number of detections
    /// and ignored by evaluation.
    pub iscrowd: bool,
    /// The region, if the file gives one.
    pub segmentation: Option<Segmentation>,
}

/// A COCO instances file, read and validated.
#[derive(Debug, Clone)]
pub struct CocoDataset {
    /// The file it was read from.
    pub path: PathBuf,
    /// The images, in file order.
    pub images: Vec<CocoImage>,
    /// The annotations kept, in file order.
    pub annotations: Vec<Annotation>,
    /// The categories, in file order.
    pub categories: Vec<Category>,
    /// What was skipped or changed.
    pub report: DatasetReport,
}

/// Report reason: annotations whose image id is not among the images.
pub const UNKNOWN_IMAGE: &str = "annotations with an unknown image id skipped";
/// Report reason: annotations whose category id is not among the categories.
pub const UNKNOWN_CATEGORY: &str = "annotations with an unknown category id skipped";
/// Report reason: boxes reaching outside their image (kept as written by `load`).
pub const BOX_OUTSIDE: &str = "boxes reaching outside their image";
/// Report reason: boxes clipped to their image by [`CocoDataset::clip_boxes`].
pub const BOX_CLIPPED: &str = "boxes clipped to their image";
/// Report reason: annotations whose box is empty after clipping, dropped by
/// [`CocoDataset::clip_boxes`].
pub const BOX_DEGENERATE: &str = "annotations with an empty box after clipping skipped";
/// Report reason: images missing on disk, dropped with their annotations by
/// [`CocoDataset::remove_missing_images`].
pub const IMAGE_MISSING: &str = "images missing on disk skipped";

/// The top level of a COCO file.
#[derive(Deserialize)]
#[serde(expecting = "a COCO instances object (\"images\", \"annotations\", \"categories\")")]
struct RawFile {
    images: Vec<Value>,
    #[serde(default)]
    annotations: Vec<Value>,
    #[serde(default)]
    categories: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(expecting = "an image object (id, file_name, width, height)")]
struct RawImage {
    id: i64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Deserialize)]
#[serde(expecting = "an annotation object (id, image_id, category_id, bbox, ...)")]
struct RawAnnotation {
    id: i64,
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    #[serde(default)]
    area: Option<f64>,
    #[serde(default)]
    iscrowd: Option<Value>,
    #[serde(default)]
    segmentation: Option<RawSegmentation>,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a segmentation: a list of polygons, or an RLE object (counts, size)"
)]
enum RawSegmentation {
    Polygons(Vec<Vec<f64>>),
    Rle { counts: RawCounts, size: [u32; 2] },
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "RLE counts: a list of integers or a compressed string"
)]
enum RawCounts {
    List(Vec<u32>),
    Compressed(String),
}

impl CocoDataset {
    /// Reads and validates the COCO instances file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| DataError::read(path, e))?;
        Self::from_slice(&bytes, path)
    }

    /// Reads and validates a COCO instances file's bytes; `path` names it in errors.
    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<Self> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(DataError::invalid(path, "the file is empty"));
        }
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(DataError::invalid(
                path,
                "the file is a JSON list (a results file?), not a COCO instances object",
            ));
        }
        let raw: RawFile = serde_json::from_slice(bytes).map_err(|cause| DataError::Json {
            path: path.to_path_buf(),
            cause,
        })?;
        if raw.images.is_empty() {
            return Err(DataError::invalid(
                path,
                "\"images\" is empty: no images to read",
            ));
        }
        let mut report = DatasetReport::default();
        let images = raw
            .images
            .into_iter()
            .enumerate()
            .map(|(i, v)| parse_image(v, i, path))
            .collect::<Result<Vec<_>>>()?;
        let mut by_id = HashMap::new();
        for (i, img) in images.iter().enumerate() {
            if by_id.insert(img.id, i).is_some() {
                return Err(DataError::invalid(
                    path,
                    format!("image id {} appears twice in \"images\"", img.id),
                ));
            }
        }
        let categories = raw
            .categories
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                Category::deserialize(v)
                    .map_err(|e| DataError::invalid(path, format!("\"categories\"[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut category_ids = HashSet::new();
        for c in &categories {
            if !category_ids.insert(c.id) {
                return Err(DataError::invalid(
                    path,
                    format!("category id {} appears twice in \"categories\"", c.id),
                ));
            }
        }
        let mut annotations = Vec::with_capacity(raw.annotations.len());
        let mut annotation_ids = HashSet::new();
        for (i, v) in raw.annotations.into_iter().enumerate() {
            let ann = parse_annotation(v, i, path)?;
            if !annotation_ids.insert(ann.id) {
                return Err(DataError::invalid(
                    path,
                    format!("annotation id {} appears twice in \"annotations\"", ann.id),
                ));
            }
            let Some(&img) = by_id.get(&ann.image_id) else {
                report.add(
                    UNKNOWN_IMAGE,
                    format!("annotation {} (image {})", ann.id, ann.image_id),
                );
                continue;
            };
            if !category_ids.contains(&ann.category_id) {
                report.add(
                    UNKNOWN_CATEGORY,
                    format!("annotation {} (category {})", ann.id, ann.category_id),
                );
                continue;
            }
            let image = &images[img];
            if let Some(Segmentation::Rle(rle)) = &ann.segmentation
                && (rle.height != image.height || rle.width != image.width)
            {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "annotation {}: its RLE mask is {}x{} but image {} is {}x{}",
                        ann.id, rle.width, rle.height, image.id, image.width, image.height
                    ),
                ));
            }
            if clipped_box(&ann.bbox, image) != ann.bbox {
                report.add(BOX_OUTSIDE, format!("annotation {}", ann.id));
            }
            annotations.push(ann);
        }
        Ok(Self {
            path: path.to_path_buf(),
            images,
            annotations,
            categories,
            report,
        })
    }

    /// The index of the image with id `id` in [`Self::images`].
    pub fn image_index(&self, id: i64) -> Option<usize> {
        self.images.iter().position(|i| i.id == id)
    }

    /// The annotations of each image, by index into [`Self::images`], in file order.
    pub fn annotations_by_image(&self) -> Vec<Vec<&Annotation>> {
        self.annotation_indices_by_image()
            .into_iter()
            .map(|a| a.into_iter().map(|i| &self.annotations[i]).collect())
            .collect()
    }

    /// [`Self::annotations_by_image`] as indices into [`Self::annotations`].
    pub fn annotation_indices_by_image(&self) -> Vec<Vec<usize>> {
        let index: HashMap<i64, usize> = self
            .images
            .iter()
            .enumerate()
            .map(|(i, img)| (img.id, i))
            .collect();
        let mut out = vec![Vec::new(); self.images.len()];
        for (a, ann) in self.annotations.iter().enumerate() {
            if let Some(&i) = index.get(&ann.image_id) {
                out[i].push(a);
            }
        }
        out
    }

    /// Clips every box to its image and drops the annotations whose box is then empty,
    /// counting both in the report.
    pub fn clip_boxes(&mut self) {
        let sizes: HashMap<i64, CocoImage> =
            self.images.iter().map(|i| (i.id, i.clone())).collect();
        let report = &mut self.report;
        self.annotations.retain_mut(|ann| {
            let Some(image) = sizes.get(&ann.image_id) else {
                return true;
            };
            let clipped = clipped_box(&ann.bbox, image);
            if clipped[2] <= 0.0 || clipped[3] <= 0.0 {
                report.add(BOX_DEGENERATE, format!("annotation {}", ann.id));
                return false;
            }
            if clipped != ann.bbox {
                report.add(BOX_CLIPPED, format!("annotation {}", ann.id));
                ann.bbox = clipped;
            }
            true
        });
    }

    /// Drops the images whose file is not in `dir`, with their annotations, counting them in
    /// the report.
    pub fn remove_missing_images(&mut self, dir: &Path) {
        let mut missing = HashSet::new();
        let report = &mut self.report;
        self.images.retain(|img| {
            let present = dir.join(&img.file_name).is_file();
            if !present {
                report.add(IMAGE_MISSING, &img.file_name);
                missing.insert(img.id);
            }
            present
        });
        self.annotations.retain(|a| !missing.contains(&a.image_id));
    }
}

/// `bbox` clipped to `image`'s bounds (width and height at least 0); a box inside them is
/// returned as it is.
fn clipped_box(bbox: &[f64; 4], image: &CocoImage) -> [f64; 4] {
    let (w, h) = (f64::from(image.width), f64::from(image.height));
    if bbox[0] >= 0.0 && bbox[1] >= 0.0 && bbox[0] + bbox[2] <= w && bbox[1] + bbox[3] <= h {
        return *bbox;
    }
    let x0 = bbox[0].clamp(0.0, w);
    let y0 = bbox[1].clamp(0.0, h);
    let x1 = (bbox[0] + bbox[2]).clamp(0.0, w);
    let y1 = (bbox[1] + bbox[3]).clamp(0.0, h);
    [x0, y0, (x1 - x0).max(0.0), (y1 - y0).max(0.0)]
}

fn parse_image(v: Value, i: usize, path: &Path) -> Result<CocoImage> {
    let id = v.get("id").cloned();
    let raw = RawImage::deserialize(v).map_err(|e| {
        let at = match id {
            Some(id) => format!("\"images\"[{i}] (id {id})"),
            None => format!("\"images\"[{i}]"),
        };
        DataError::invalid(path, format!("{at}: {e}"))
    })?;
    if raw.width == 0 || raw.height == 0 {
        return Err(DataError::invalid(
            path,
            format!("image {}: its size is {}x{}", raw.id, raw.width, raw.height),
        ));
    }
    Ok(CocoImage {
        id: raw.id,
        file_name: raw.file_name,
        width: raw.width,
        height: raw.height,
    })
}

fn parse_annotation(v: Value, i: usize, path: &Path) -> Result<Annotation> {
    let id = v.get("id").cloned();
    let at = |e: String| {
        let at = match &id {
            Some(id) => format!("annotation {id} (\"annotations\"[{i}])"),
            None => format!("\"annotations\"[{i}]"),
        };
        DataError::invalid(path, format!("{at}: {e}"))
    };
    let raw = RawAnnotation::deserialize(v).map_err(|e| at(e.to_string()))?;
    if raw.bbox.iter().any(|v| !v.is_finite()) || raw.bbox[2] < 0.0 || raw.bbox[3] < 0.0 {
        return Err(at(format!("invalid bbox {:?}", raw.bbox)));
    }
    let iscrowd = match raw.iscrowd {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(Value::Number(n)) if n.as_u64() == Some(0) => false,
        Some(Value::Number(n)) if n.as_u64() == Some(1) => true,
        Some(other) => return Err(at(format!("\"iscrowd\" must be 0 or 1, not {other}"))),
    };
    let segmentation = match raw.segmentation {
        None => None,
        Some(RawSegmentation::Polygons(p)) => Some(Segmentation::Polygons(p)),
        Some(RawSegmentation::Rle {
            counts,
            size: [h, w],
        }) => {
            let rle = match counts {
                RawCounts::List(c) => Rle::from_counts(c, h, w),
                RawCounts::Compressed(s) => Rle::from_compressed(&s, h, w),
            }
            .map_err(|e| at(e.to_string()))?;
            Some(Segmentation::Rle(rle))
        }
    };
    Ok(Annotation {
        id: raw.id,
        image_id: raw.image_id,
        category_id: raw.category_id,
        area: raw.area.unwrap_or(raw.bbox[2] * raw.bbox[3]),
        bbox: raw.bbox,
        iscrowd,
        segmentation,
    })
}
