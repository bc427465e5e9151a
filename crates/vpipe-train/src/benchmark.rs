//! A fixed training step to time: what `vpipe bench train` and `cargo bench --bench
//! train` measure, and what `scripts/bench_train.py` does in PyTorch.
//!
//! A checkpoint's own head, loaded in trainable form, trains on the checkpoint's
//! own frozen backbone. The batch is one image repeated, through the checkpoint's
//! preprocessing preset (its input size: 256×256 classification, 320×320 SSD,
//! 512×512 DeepLabv3); the targets are fixed ([`bench_targets`]); AdamW runs at a
//! constant learning rate of 1e-4 with weight decay 0.01. A step without the feature
//! cache is [`BenchCase::features`] (the backbone, no gradient) and then
//! [`BenchCase::step`]; with the cache, the features are computed once and each step
//! is [`BenchCase::step`] alone.

use std::path::Path;

use burn::tensor::{Device, Tensor};
use vpipe_backbone::layout::CheckpointTask;
use vpipe_backbone::{Features, MobileVit};
use vpipe_heads::{LoadOptions, LoadedModel};
use vpipe_media::Frame;
use vpipe_preprocess::PresetRecipe;

use crate::error::Result;
use crate::loss::{ImageBoxes, LossSettings, Mask, Targets};
use crate::optim::AdamWSettings;
use crate::schedule::CosineSchedule;
use crate::trainer::{StepReport, Trainer, TrainerSettings, training_features};

/// The learning rate of every timed step.
pub const BENCH_LR: f64 = 1e-4;

/// Boxes of the detection targets: corners `(x1, y1, x2, y2)` in fractions of the
/// input, and their COCO-81 classes.
pub const BENCH_BOXES: [([f32; 4], usize); 3] = [
    ([0.10, 0.15, 0.60, 0.70], 1),
    ([0.50, 0.20, 0.90, 0.50], 17),
    ([0.05, 0.60, 0.30, 0.95], 3),
];

/// Classes of the classification targets, image `i` taking `BENCH_CLASSES[i % 2]`.
pub const BENCH_CLASSES: [usize; 2] = [3, 417];

/// The fixed targets of a batch of `batch` images of `height` × `width` for a head of
/// a `task` checkpoint: classes ([`BENCH_CLASSES`]), boxes ([`BENCH_BOXES`]), or a
/// VOC mask of background with a class-15 rectangle (rows 15–70 %, columns 25–60 %)
/// and a class-8 square (rows and columns 70–90 %).
pub fn bench_targets(task: CheckpointTask, batch: usize, height: usize, width: usize) -> Targets {
    match task {
        CheckpointTask::Classification => {
            Targets::Classes((0..batch).map(|i| BENCH_CLASSES[i % 2]).collect())
        }
        CheckpointTask::Detection => Targets::Boxes(vec![
            ImageBoxes {
                boxes: BENCH_BOXES.iter().map(|(b, _)| *b).collect(),
                labels: BENCH_BOXES.iter().map(|(_, c)| *c).collect(),
            };
            batch
        ]),
        CheckpointTask::Segmentation => {
            let within = |x: usize, n: usize, from: usize, to: usize| {
                x * 100 >= from * n && x * 100 < to * n
            };
            let classes = (0..height * width)
                .map(|i| {
                    let (y, x) = (i / width, i % width);
                    if within(y, height, 15, 70) && within(x, width, 25, 60) {
                        15
                    } else if within(y, height, 70, 90) && within(x, width, 70, 90) {
                        8
                    } else {
                        0
                    }
                })
                .collect();
            Targets::Masks(vec![
                Mask {
                    height,
                    width,
                    classes,
                };
                batch
            ])
        }
    }
}

/// One checkpoint's head, its frozen backbone, a batch and its targets, ready to
/// time training steps on.
#[derive(Debug)]
pub struct BenchCase {
    backbone: MobileVit,
    trainer: Trainer,
    input: Tensor<4>,
    input_size: [usize; 2],
    targets: Vec<Targets>,
}

impl BenchCase {
    /// Loads `checkpoint` (its head in trainable form) and makes a batch of `batch`
    /// copies of `image` through the checkpoint's preprocessing preset.
    pub fn new(checkpoint: &Path, image: &Frame, batch: usize, device: &Device) -> Result<Self> {
        let options = LoadOptions {
            trainable_head: true,
            ..LoadOptions::default()
        };
        let loaded = LoadedModel::load_with(checkpoint, device, &options)?;
        let recipe = vpipe_weights::default_preset(&loaded.layout).recipe();
        let (input, transforms) = recipe.batch(&vec![image; batch], device)?;
        let (width, height) = transforms[0].input_size;
        let targets = vec![bench_targets(loaded.layout.task, batch, height, width)];
        let (backbone, head) = loaded.model.into_parts();
        let settings = TrainerSettings {
            schedule: CosineSchedule::iteration_based(0, BENCH_LR, BENCH_LR, BENCH_LR, 1),
            adamw: AdamWSettings::default(),
            loss: LossSettings::default(),
            dropout_seed: None,
        };
        Ok(Self {
            backbone,
            trainer: Trainer::new(vec![head], settings)?,
            input,
            input_size: [height, width],
            targets,
        })
    }

    /// The network input's `[height, width]`.
    pub fn input_size(&self) -> [usize; 2] {
        self.input_size
    }

    /// The backbone's features of the batch (inference form, no gradient), as
    /// constants of the heads' autodiff graph ([`training_features`]).
    pub fn features(&self) -> Result<Features> {
        Ok(training_features(
            &self.backbone.forward(self.input.clone())?,
        ))
    }

    /// One training step of the head on `features`: forward, loss, backward, AdamW.
    pub fn step(&mut self, features: &Features) -> Result<StepReport> {
        self.trainer.step(features, self.input_size, &self.targets)
    }
}
