//! The training file: which backbone, which data, which heads, and how long.
//!
//! ```yaml
//! backbone:
//!   weights: ../weights/reference/cvnets_mobilevit_xxs.pt   # frozen
//!   output_stride: 32          # optional (default: the checkpoint's task's)
//!   preprocess: cvnets-ssd     # optional (default: the first head's task's)
//! data:                        # one of:
//!   coco: coco128/instances.json   # boxes (SSD) and VOC-21 masks (DeepLabv3)
//!   images: coco128/images         # with `coco` or `masks`; alone: unlabelled images
//!   # masks: DIR               # class-index PNG masks, paired with images by stem
//!   # image_folder: DIR          # classes from sub-folders
//!   # csv: labels.csv            # path,label
//!   # video: clip.mp4           # unlabelled frames, every `every`-th
//! heads:
//!   - name: objects
//!     type: ssd
//!     init: ../weights/reference/cvnets_ssd_mobilevit_xxs.pt   # start from its head
//!     teacher: ../weights/reference/cvnets_ssd_mobilevit_xxs.pt # distil from it
//!     options: {}
//! train:
//!   steps: 300
//!   batch_size: 8
//! ```
//!
//! Paths are relative to the training file; a checkpoint may also be a weights
//! registry name (`vpipe weights list`), fetched into the cache when the run starts. Every key is checked: an unknown one is
//! an error with its line and column.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::augment::Augment;
use crate::error::{Result, TrainError};

/// The `init` of a head that starts from scratch.
pub const RANDOM_INIT: &str = "random";

/// A parsed training file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The frozen backbone.
    pub backbone: BackboneConfig,
    /// The images and their labels.
    pub data: DataConfig,
    /// The heads to train, all on the backbone's features.
    pub heads: Vec<HeadConfig>,
    /// Steps, batch, optimiser, augmentation, checkpoints.
    #[serde(default)]
    pub train: TrainSettings,
}

/// The frozen backbone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneConfig {
    /// A MobileViT checkpoint (any layout vpipe reads), or a weights registry name.
    pub weights: PathBuf,
    /// Output stride (32, 16 or 8); default: the checkpoint's task's.
    #[serde(default)]
    pub output_stride: Option<usize>,
    /// Preprocessing preset of the network input (and of the model written);
    /// default: the first head's task's (`cvnets-ssd`, `cvnets-seg`, `cvnets-cls`).
    #[serde(default)]
    pub preprocess: Option<String>,
}

/// Where the images and their labels come from: exactly one source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A COCO instances file: boxes for detection heads, VOC-21 masks (ml-cvnets'
    /// mapping) for segmentation heads. Needs `images`.
    #[serde(default)]
    pub coco: Option<PathBuf>,
    /// The images folder of `coco` or `masks`, or alone a folder of unlabelled images.
    #[serde(default)]
    pub images: Option<PathBuf>,
    /// A folder of class-index PNG masks, paired with `images` by file stem.
    #[serde(default)]
    pub masks: Option<PathBuf>,
    /// An ImageFolder tree (a sub-folder per class, classes in sorted order).
    #[serde(default)]
    pub image_folder: Option<PathBuf>,
    /// A `path,label` CSV file.
    #[serde(default)]
    pub csv: Option<PathBuf>,
    /// A video file, unlabelled.
    #[serde(default)]
    pub video: Option<PathBuf>,
    /// With `video`: keep every n-th frame (default 10).
    #[serde(default = "default_every")]
    pub every: usize,
    /// Use at most this many images (the first ones).
    #[serde(default)]
    pub max_images: Option<usize>,
}

fn default_every() -> usize {
    10
}

/// One head to train.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// Its name (in the model file and in results).
    pub name: String,
    /// Its type, as registered (`classification`, `ssd`, `deeplabv3`, or your own).
    #[serde(rename = "type")]
    pub kind: String,
    /// A checkpoint (or registry name) whose head of this type it starts from
    /// (default: the teacher's), or `random`: new layers initialised as ml-cvnets
    /// initialises them.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// A checkpoint (or registry name) to distil from (its own backbone and
    /// preprocessing): the head
    /// learns to reproduce its outputs instead of the data's labels.
    #[serde(default)]
    pub teacher: Option<PathBuf>,
    /// Head options (as in a pipeline).
    #[serde(default)]
    pub options: Map<String, Value>,
}

/// How the heads are trained; the defaults suit a short fine-tuning run on a CPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// Optimiser steps.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (after the warm-up).
    pub lr: f64,
    /// Learning rate at the end of the cosine.
    pub min_lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// Learning rate at the first warm-up step.
    pub warmup_init_lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Random flips, scale jitter and crops.
    pub augment: Augment,
    /// Run the backbone once per image and keep its features (turns augmentation
    /// off: every step then sees the images as the preset makes them).
    pub cache_features: bool,
    /// Write a checkpoint every this many steps (and at the end, and on Ctrl-C).
    pub checkpoint_every: u64,
    /// Seed of the data order, the augmentation and the dropout.
    pub seed: u64,
    /// Dropout where ml-cvnets has it.
    pub dropout: bool,
    /// Temperature of the distillation's KL divergence.
    pub temperature: f64,
    /// A teacher's anchor counts as confident (its box regression is learnt) when
    /// its highest object-class probability is above this.
    pub confidence: f32,
    /// Stop when a step's loss exceeds this many times the first step's.
    pub max_loss_ratio: f64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            steps: 300,
            batch_size: 8,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 20,
            warmup_init_lr: 1e-5,
            weight_decay: 0.01,
            augment: Augment::default(),
            cache_features: false,
            checkpoint_every: 100,
            seed: 0,
            dropout: true,
            temperature: 2.0,
            confidence: 0.5,
            max_loss_ratio: 100.0,
        }
    }
}

impl TrainConfig {
    /// Reads and checks the training file at `path`; its relative paths are made
    /// relative to its folder.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Config {
            path: path.to_path_buf(),
            problem: format!("cannot read it: {e}"),
        })?;
        let bad = |problem: String| TrainError::Config {
            path: path.to_path_buf(),
            problem,
        };
        let mut config: TrainConfig =
            serde_yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        config.resolve(dir);
        config.check().map_err(bad)?;
        Ok(config)
    }

    /// Makes every relative path relative to `dir`.
    fn resolve(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        // A checkpoint may also be a weights registry name (fetched when the run
        // starts), unless a file of that name is beside the training file.
        let fix_weights = |p: &mut PathBuf| {
            let registry = vpipe_weights::Registry::builtin();
            let written = p.to_string_lossy().into_owned();
            if registry.get(&written).is_none() || dir.join(&*p).is_file() {
                fix(p);
            }
        };
        fix_weights(&mut self.backbone.weights);
        let d = &mut self.data;
        for p in [
            &mut d.coco,
            &mut d.images,
            &mut d.masks,
            &mut d.image_folder,
            &mut d.csv,
            &mut d.video,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        for h in &mut self.heads {
            for p in [&mut h.init, &mut h.teacher].into_iter().flatten() {
                if p.as_os_str() != RANDOM_INIT {
                    fix_weights(p);
                }
            }
        }
    }

    /// The checks serde cannot make: one data source, heads named once, settings
    /// in range.
    fn check(&self) -> std::result::Result<(), String> {
        let d = &self.data;
        let sources = [
            d.coco.is_some(),
            d.masks.is_some(),
            d.image_folder.is_some(),
            d.csv.is_some(),
            d.video.is_some(),
            d.images.is_some() && d.coco.is_none() && d.masks.is_none(),
        ];
        if sources.iter().filter(|&&s| s).count() != 1 {
            return Err(
                "data: give exactly one source: coco or masks (with images), images, image_folder, csv or video"
                    .into(),
            );
        }
        if (d.coco.is_some() || d.masks.is_some()) && d.images.is_none() {
            return Err("data: coco and masks need images (the folder of their images)".into());
        }
        if d.every == 0 {
            return Err("data.every: must be at least 1".into());
        }
        if self.heads.is_empty() {
            return Err("heads: give at least one head to train".into());
        }
        for (i, h) in self.heads.iter().enumerate() {
            if h.name.is_empty() || h.name.contains('.') {
                return Err(format!(
                    "heads[{i}].name: '{}' must be non-empty, without '.'",
                    h.name
                ));
            }
            if self.heads[..i].iter().any(|o| o.name == h.name) {
                return Err(format!("heads[{i}].name: '{}' is used twice", h.name));
            }
            if h.init.is_none() && h.teacher.is_none() {
                return Err(format!(
                    "heads[{i}]: give `init` (a checkpoint with a {} head to start from, or `random`) or `teacher`",
                    h.kind
                ));
            }
        }
        let t = &self.train;
        if t.steps == 0 || t.batch_size == 0 || t.checkpoint_every == 0 {
            return Err("train: steps, batch_size and checkpoint_every must be at least 1".into());
        }
        if !(t.lr > 0.0 && t.min_lr >= 0.0 && t.warmup_init_lr >= 0.0 && t.weight_decay >= 0.0) {
            return Err("train: learning rates and weight decay must be positive".into());
        }
        if !(t.temperature > 0.0 && t.max_loss_ratio > 1.0) {
            return Err("train: temperature must be > 0 and max_loss_ratio > 1".into());
        }
        t.augment.check().map_err(|e| format!("train.augment: {e}"))
    }

    /// Whether a head learns from a teacher.
    pub fn distils(&self, head: usize) -> bool {
        self.heads[head].teacher.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<TrainConfig> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.yaml");
        std::fs::write(&p, text).unwrap();
        TrainConfig::read(&p)
    }

    const OK: &str = "backbone: {weights: b.pt}
data: {coco: c.json, images: imgs}
heads:
  - {name: objects, type: ssd, init: s.pt}
train: {steps: 5, augment: {flip: 0.0}}
";

    #[test]
    fn a_training_file_is_read_with_defaults_and_paths_beside_it() {
        let c = read(OK).unwrap();
        assert!(c.backbone.weights.ends_with("b.pt") && c.backbone.weights.is_absolute());
        assert_eq!(c.train.steps, 5);
        assert_eq!(c.train.batch_size, 8);
        assert_eq!(c.train.augment.flip, 0.0);
        assert_eq!(c.train.augment.scale, Augment::default().scale);
    }

    #[test]
    fn mistakes_are_named() {
        let e = read(&OK.replace("steps: 5", "step: 5"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `step`") && e.contains("line"),
            "{e}"
        );
        let e = read(&OK.replace("{coco: c.json, images: imgs}", "{}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one source"), "{e}");
        let e = read(&OK.replace(", images: imgs", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("coco and masks need images"), "{e}");
        let e = read(&OK.replace(", init: s.pt", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("heads[0]: give `init`"), "{e}");
        let e = read(&OK.replace("flip: 0.0", "flip: 2.0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.augment: flip"), "{e}");
    }
}
