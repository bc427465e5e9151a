//! The images a training run learns from, with the labels each kind of head needs.
//!
//! - A COCO instances file: boxes for detection heads (crowd regions left out, as
//!   ml-cvnets' COCO detection set does; category ids become labels 1, 2, ... in
//!   increasing id order, 0 being the background, as the 81-class COCO heads count
//!   them) and VOC-21 class masks for segmentation heads
//!   ([`vpipe_data::masks::voc_class_mask`]: ml-cvnets' COCO-to-VOC mapping).
//! - Images with class-index PNG masks (paired by file stem): masks for
//!   segmentation heads.
//! - An ImageFolder tree or a `path,label` CSV: a class per image.
//! - A folder of images or a video: no labels (every head needs a teacher).
//!
//! What cannot be used (missing images, boxes outside their image, images whose file
//! is not the size the annotations say) is skipped and counted in
//! [`TrainData::report`].

use std::path::{Path, PathBuf};

use vpipe_data::DatasetReport;
use vpipe_data::classification::ClassificationDataset;
use vpipe_data::coco::{Annotation, CocoDataset};
use vpipe_data::mask_folder::{IMAGE_EXTENSIONS, SegmentationFolder, read_class_mask};
use vpipe_data::masks::voc_class_mask;
use vpipe_media::{Frame, VideoInput, VideoReader, load_image};

use crate::augment::Sample;
use crate::config::DataConfig;
use crate::error::{Result, TrainError};

/// Report reason: images whose file does not have the size their annotations give.
pub const SIZE_MISMATCH: &str =
    "images of another size than their annotations (and masks) say skipped";
/// Report reason: images that could not be decoded.
pub const UNREADABLE: &str = "images that could not be decoded skipped";

/// What labels the data has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    /// Boxes and masks (COCO).
    Instances,
    /// Masks only (image and mask folders).
    Masks,
    /// One class per image.
    Classes,
    /// None.
    Unlabelled,
}

/// Where one training image comes from.
#[derive(Debug, Clone)]
enum Item {
    /// An image file: the COCO image index or the class, if labelled.
    File {
        path: PathBuf,
        coco: Option<usize>,
        class: Option<usize>,
        mask: Option<PathBuf>,
    },
    /// A decoded video frame.
    Frame(Box<Frame>),
}

/// The training images.
#[derive(Debug)]
pub struct TrainData {
    items: Vec<Item>,
    coco: Option<CocoDataset>,
    /// For each COCO image, its annotations' indices in file order.
    by_image: Vec<Vec<usize>>,
    /// COCO category ids in label order (label `i + 1` is `category_ids[i]`).
    category_ids: Vec<i64>,
    /// Class names, for classification data.
    pub classes: Vec<String>,
    /// What labels it has.
    pub labels: LabelKind,
    /// What was skipped or changed.
    pub report: DatasetReport,
}

impl TrainData {
    /// Reads the data a training file describes.
    pub fn open(config: &DataConfig) -> Result<Self> {
        let mut data = if let Some(coco_path) = &config.coco {
            let images = config
                .images
                .as_deref()
                .unwrap_or_else(|| unreachable!("checked with the training file"));
            let mut coco = CocoDataset::load(coco_path)?;
            coco.remove_missing_images(images);
            coco.clip_boxes();
            let mut category_ids: Vec<i64> = coco.categories.iter().map(|c| c.id).collect();
            category_ids.sort_unstable();
            let items = coco
                .images
                .iter()
                .enumerate()
                .map(|(i, img)| Item::File {
                    path: images.join(&img.file_name),
                    coco: Some(i),
                    class: None,
                    mask: None,
                })
                .collect();
            let report = coco.report.clone();
            let by_image = coco.annotation_indices_by_image();
            Self {
                items,
                coco: Some(coco),
                by_image,
                category_ids,
                classes: Vec::new(),
                labels: LabelKind::Instances,
                report,
            }
        } else if let Some(masks) = &config.masks {
            let images = config
                .images
                .as_deref()
                .unwrap_or_else(|| unreachable!("checked with the training file"));
            let set = SegmentationFolder::load(images, masks)?;
            Self {
                items: set
                    .samples
                    .iter()
                    .map(|s| Item::File {
                        path: s.image.clone(),
                        coco: None,
                        class: None,
                        mask: Some(s.mask.clone()),
                    })
                    .collect(),
                labels: LabelKind::Masks,
                report: set.report,
                ..Self::unlabelled(Vec::new())
            }
        } else if let Some(dir) = &config.image_folder {
            Self::classified(ClassificationDataset::image_folder(dir)?)
        } else if let Some(csv) = &config.csv {
            Self::classified(ClassificationDataset::csv(csv, None)?)
        } else if let Some(dir) = &config.images {
            Self::unlabelled(image_files(dir)?)
        } else if let Some(video) = &config.video {
            Self::video(video, config.every, config.max_images)?
        } else {
            unreachable!("the training file gives one source")
        };
        if let Some(max) = config.max_images {
            data.items.truncate(max);
        }
        if data.items.is_empty() {
            return Err(TrainError::Data(
                "the data holds no usable image (see the skipped items above)".into(),
            ));
        }
        Ok(data)
    }

    fn classified(set: ClassificationDataset) -> Self {
        Self {
            items: set
                .samples
                .iter()
                .map(|s| Item::File {
                    path: s.path.clone(),
                    coco: None,
                    class: Some(s.label),
                    mask: None,
                })
                .collect(),
            coco: None,
            by_image: Vec::new(),
            category_ids: Vec::new(),
            classes: set.classes,
            labels: LabelKind::Classes,
            report: set.report,
        }
    }

    fn unlabelled(paths: Vec<PathBuf>) -> Self {
        Self {
            items: paths
                .into_iter()
                .map(|path| Item::File {
                    path,
                    coco: None,
                    class: None,
                    mask: None,
                })
                .collect(),
            coco: None,
            by_image: Vec::new(),
            category_ids: Vec::new(),
            classes: Vec::new(),
            labels: LabelKind::Unlabelled,
            report: DatasetReport::default(),
        }
    }

    /// Every `every`-th frame of a video, decoded once (at most `max` of them).
    fn video(path: &Path, every: usize, max: Option<usize>) -> Result<Self> {
        let input = VideoInput::File(path.to_path_buf());
        let mut reader = VideoReader::open(&input)?;
        let mut items = Vec::new();
        let mut index = 0usize;
        while let Some(frame) = reader.next_frame()? {
            if index.is_multiple_of(every) {
                items.push(Item::Frame(Box::new(
                    frame.into_order(vpipe_media::ChannelOrder::Rgb),
                )));
                if max.is_some_and(|m| items.len() >= m) {
                    break;
                }
            }
            index += 1;
        }
        let mut report = DatasetReport::default();
        if reader.skipped() > 0 {
            report.add(
                "corrupt video frames skipped",
                format!("{} of {}", reader.skipped(), path.display()),
            );
        }
        Ok(Self {
            report,
            ..Self::unlabelled(Vec::new())
        }
        .with_items(items))
    }

    fn with_items(mut self, items: Vec<Item>) -> Self {
        self.items = items;
        self
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of object classes of COCO data (background not counted).
    pub fn object_classes(&self) -> usize {
        self.category_ids.len()
    }

    /// The class names of COCO data's labels: the background, then the categories in
    /// increasing id order.
    pub fn object_names(&self) -> Vec<String> {
        let names = self.coco.iter().flat_map(|c| &c.categories);
        std::iter::once("background".to_string())
            .chain(self.category_ids.iter().map(|id| {
                names
                    .clone()
                    .find(|c| c.id == *id)
                    .map_or_else(|| id.to_string(), |c| c.name.clone())
            }))
            .collect()
    }

    /// Image `index` with its boxes (COCO), its class (classification data) and its
    /// mask (mask folders; with `masks`, COCO's VOC-21 mask). `None` (counted in the
    /// report) when the image cannot be used.
    pub fn sample(&mut self, index: usize, masks: bool) -> Option<(Sample, Option<usize>)> {
        let (path, coco, class, mask_file) = match &self.items[index] {
            Item::Frame(frame) => {
                return Some((
                    Sample {
                        image: (**frame).clone(),
                        boxes: Vec::new(),
                        labels: Vec::new(),
                        mask: None,
                    },
                    None,
                ));
            }
            Item::File {
                path,
                coco,
                class,
                mask,
            } => (path, *coco, *class, mask),
        };
        let image = match load_image(path) {
            Ok(f) => f,
            Err(e) => {
                self.report
                    .add(UNREADABLE, format!("{}: {e}", path.display()));
                return None;
            }
        };
        let mut sample = Sample {
            image,
            boxes: Vec::new(),
            labels: Vec::new(),
            mask: None,
        };
        if let Some(m) = mask_file {
            match read_class_mask(m) {
                Ok(mask)
                    if (mask.width as usize, mask.height as usize)
                        == (sample.image.width, sample.image.height) =>
                {
                    sample.mask = Some(mask.data);
                }
                Ok(_) => {
                    self.report.add(SIZE_MISMATCH, m.display());
                    return None;
                }
                Err(e) => {
                    self.report.add(UNREADABLE, e);
                    return None;
                }
            }
        }
        if let (Some(i), Some(coco)) = (coco, &self.coco) {
            let img = &coco.images[i];
            if (img.width as usize, img.height as usize)
                != (sample.image.width, sample.image.height)
            {
                self.report.add(
                    SIZE_MISMATCH,
                    format!(
                        "{} is {}x{}, its annotations say {}x{}",
                        path.display(),
                        sample.image.width,
                        sample.image.height,
                        img.width,
                        img.height
                    ),
                );
                return None;
            }
            let anns: Vec<&Annotation> = self.by_image[i]
                .iter()
                .map(|&a| &coco.annotations[a])
                .collect();
            for ann in anns.iter().filter(|a| !a.iscrowd) {
                let Ok(label) = self.category_ids.binary_search(&ann.category_id) else {
                    continue;
                };
                let [x, y, w, h] = ann.bbox.map(|v| v as f32);
                sample.boxes.push([x, y, x + w, y + h]);
                sample.labels.push(label + 1);
            }
            if masks {
                sample.mask = Some(voc_class_mask(img, &anns));
            }
        }
        Some((sample, class))
    }
}

/// The image files of a folder (not recursive), in sorted order.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| TrainError::Data(format!("{}: cannot list the images: {e}", dir.display())))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    out.sort();
    Ok(out)
}
