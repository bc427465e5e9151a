//! A training run: heads learn on a frozen backbone from a training file's data,
//! with checkpoints, resume, and one multi-head model file at the end.
//!
//! Each step takes a batch of images in a seeded order (a new permutation every
//! epoch), augments them ([`crate::augment`]), runs the backbone once on the batch
//! (the fast fused kernels, no gradient; or takes its features from the cache), and
//! makes one optimiser step of every head ([`Trainer::step`]) against the data's
//! labels or the head's teacher ([`crate::distill`]). Everything random follows from
//! the seed and the step, so a resumed run gives the weights of an uninterrupted one.
//!
//! The output folder holds, when the run ends:
//!
//! | file | what |
//! |---|---|
//! | `model.safetensors` | the backbone and every trained head ([`vpipe_weights::multihead`]) |
//! | `pipeline.yaml` | a pipeline running it: one backbone pass per frame for all heads |
//! | `losses.csv` | step, learning rate, loss, each head's loss |
//! | `loss.png` | the loss curve |
//! | `checkpoint/` | the last checkpoint (`model.safetensors`, `state.safetensors`, `losses.csv`) |
//!
//! A step whose loss is not finite, or larger than `max_loss_ratio` times the
//! first step's, stops the run with an error; the last checkpoint written stays as
//! it was. Stopping ([`RunOptions::stop`], Ctrl-C in the CLI) writes a checkpoint
//! first.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use vpipe_backbone::layout::{CheckpointTask, is_backbone_tensor, to_canonical};
use vpipe_backbone::{
    CheckpointLayout, Features, MobileVit, MobileVitConfig, Params, check_output_stride,
};
use vpipe_core::HostTensor;
use vpipe_data::DatasetReport;
use vpipe_heads::{Dropout, Head, HeadContext, HeadRegistry, LoadedModel, TrainOutput};
use vpipe_io::TensorFile;
use vpipe_media::Frame;
use vpipe_preprocess::{Preprocess, PreprocessPreset, PresetRecipe};
use vpipe_weights::{HeadEntry, StoredHead, WeightsMetadata};

use crate::augment::{Augment, Sample};
use crate::config::{HeadConfig, RANDOM_INIT, TrainConfig};
use crate::dataset::{LabelKind, TrainData};
use crate::distill::{DistillSettings, TeacherOutputs};
use crate::error::{Result, TrainError};
use crate::loss::{ImageBoxes, LossSettings, Mask, Targets};
use crate::optim::AdamWSettings;
use crate::schedule::CosineSchedule;
use crate::trainer::{Trainer, TrainerSettings, training_features};

/// How to run a training file.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the model, the losses and the checkpoints go.
    pub out_dir: PathBuf,
    /// Continue from the checkpoint in `out_dir`.
    pub resume: bool,
    /// Replace the results of an earlier run in `out_dir` (else refused).
    pub overwrite: bool,
    /// Every head must learn from its teacher (`vpipe train --distill`).
    pub distill: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Set to stop after the current step (a checkpoint is written first).
    pub stop: Arc<AtomicBool>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The step the run started at (0, or the checkpoint's when resumed).
    pub first_step: u64,
    /// Steps done in all (the checkpoint's included).
    pub steps_done: u64,
    /// Mean loss of the first tenth of this run's steps (1 to 10 steps).
    pub first_loss: f64,
    /// Mean loss of its last tenth (1 to 10 steps).
    pub last_loss: f64,
    /// Training images per second of this run (backbone, heads and data).
    pub images_per_second: f64,
    /// Backbone passes, in images (fewer than the images seen with the cache).
    pub backbone_images: u64,
    /// Whether it was stopped before the last step.
    pub stopped: bool,
    /// The model written (at the end), or the checkpoint's (when stopped).
    pub model: PathBuf,
    /// What the data reader skipped.
    pub report: DatasetReport,
}

/// One head being trained: what the training file says and where its targets come from.
struct HeadPlan {
    config: HeadConfig,
    teacher: Option<Teacher>,
    /// The kind of output its training forward gives.
    output: OutputKind,
    /// Its class names, when the data names its classes.
    labels: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputKind {
    Classification,
    Detection,
    Segmentation,
}

/// A teacher: a whole model on its own backbone, with its preprocessing.
struct Teacher {
    model: LoadedModel,
    recipe: Preprocess,
}

/// The frozen backbone and what it was loaded from.
struct Backbone {
    /// The checkpoint file.
    path: PathBuf,
    network: MobileVit,
    config: MobileVitConfig,
    layout: CheckpointLayout,
    tensors: BTreeMap<String, HostTensor>,
}

/// Folder of the last checkpoint.
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// The files a finished run writes into its output folder.
const OUTPUTS: [&str; 4] = [
    "model.safetensors",
    "pipeline.yaml",
    "losses.csv",
    "loss.png",
];

/// Runs the training file `config` (read with [`TrainConfig::read`]).
pub fn train(
    config: &TrainConfig,
    registry: &HeadRegistry,
    options: &RunOptions,
) -> Result<RunSummary> {
    let device = vpipe_core::device::default_device();
    let t = &config.train;
    prepare_out_dir(options)?;
    let backbone = load_backbone(config, &device)?;
    let preset = match &config.backbone.preprocess {
        Some(p) => p
            .parse::<PreprocessPreset>()
            .map_err(|e| config_error(format!("backbone.preprocess: {}", e.message())))?,
        None => match config.heads[0].kind.as_str() {
            "ssd" => PreprocessPreset::CvnetsSsd,
            "deeplabv3" => PreprocessPreset::CvnetsSeg,
            _ => vpipe_weights::default_preset(&backbone.layout),
        },
    };
    let recipe = preset.recipe();
    // What every model file of the run says of itself, computed once (the backbone
    // file's hash is not read again at each checkpoint).
    let about = ModelAbout {
        meta: model_metadata(config, &backbone, preset)?,
        record: config_record(config),
    };
    let mut data = TrainData::open(&config.data)?;
    if !data.report.is_empty() {
        tracing::warn!("data: {}", data.report);
    }
    let checkpoint = options.out_dir.join(CHECKPOINT_DIR);
    let resumed = if options.resume {
        Some(read_checkpoint(&checkpoint)?)
    } else {
        None
    };
    let mut heads = Vec::new();
    let mut plans = Vec::new();
    for (i, h) in config.heads.iter().enumerate() {
        if options.distill && h.teacher.is_none() {
            return Err(config_error(format!(
                "heads[{i}] ('{}'): --distill needs a `teacher` for every head",
                h.name
            )));
        }
        let tensors = match &resumed {
            Some(r) => Some(r.head(&h.name)?),
            None => head_tensors(h)?,
        };
        let head = build_head(registry, h, tensors, t.seed, &backbone.config, &device)?;
        let teacher = h
            .teacher
            .as_ref()
            .map(|p| -> Result<Teacher> {
                let model = LoadedModel::load(&checkpoint_file(p)?, &device)?;
                let recipe = vpipe_weights::default_preset(&model.layout).recipe();
                Ok(Teacher { model, recipe })
            })
            .transpose()?;
        heads.push(head);
        plans.push(HeadPlan {
            config: h.clone(),
            teacher,
            output: OutputKind::Classification,
            labels: None,
        });
    }
    let settings = TrainerSettings {
        schedule: CosineSchedule::iteration_based(
            t.warmup_steps,
            t.warmup_init_lr,
            t.lr,
            t.min_lr,
            t.steps,
        ),
        adamw: AdamWSettings {
            weight_decay: t.weight_decay,
            ..AdamWSettings::default()
        },
        loss: LossSettings {
            distill: DistillSettings {
                temperature: t.temperature,
                confidence: t.confidence,
            },
            ..LossSettings::default()
        },
        dropout_seed: t.dropout.then_some(t.seed),
    };
    let levels: Vec<usize> = {
        let mut l: Vec<usize> = heads.iter().flat_map(|h| h.levels().to_vec()).collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    let mut trainer = Trainer::new(heads, settings)?;
    let mut losses: Vec<LossRow> = Vec::new();
    let first_step = match &resumed {
        Some(r) => {
            trainer.load_state(&r.state)?;
            losses = r.losses.clone();
            if r.config != about.record {
                return Err(TrainError::Checkpoint {
                    path: checkpoint.clone(),
                    problem: "it was written by a run with other settings; start afresh (without --resume, with --overwrite) or restore the training file it was written with".into(),
                });
            }
            trainer.iteration()
        }
        None => 0,
    };
    // COCO data gives every image its VOC mask (the augmentation moves it with the
    // image); only segmentation heads without a teacher read it.
    let masks = data.labels == LabelKind::Instances;
    let augment = if t.cache_features {
        Augment::none()
    } else {
        t.augment
    };
    let n = data.len();
    let mut cache: Vec<Option<Vec<HostTensor>>> = vec![None; if t.cache_features { n } else { 0 }];
    let mut order = Order::new(t.seed, n);
    let bar = progress_bar(options.progress, first_step, t.steps);
    let started = Instant::now();
    let mut backbone_images = 0u64;
    let mut seen = 0u64;
    let mut first_loss = None;
    let mut stopped = false;
    for step in first_step..t.steps {
        // The batch: B usable images from the step's positions in the data order.
        let mut batch: Vec<(usize, Sample, Option<usize>)> = Vec::with_capacity(t.batch_size);
        let mut k = step * t.batch_size as u64;
        let mut tries = 0usize;
        while batch.len() < t.batch_size {
            if tries > n {
                return Err(TrainError::Data(
                    "no usable image left in the data (see the skipped items)".into(),
                ));
            }
            let index = order.at(k);
            let mut rng = ChaCha8Rng::seed_from_u64(mix(t.seed, k));
            k += 1;
            tries += 1;
            if let Some((sample, class)) = data.sample(index, masks) {
                let sample = augment.apply(sample, &recipe, &mut rng);
                batch.push((index, sample, class));
            }
        }
        // Every augmented image has the preset's input size.
        let input_size = (batch[0].1.image.width, batch[0].1.image.height);
        let features = batch_features(
            &backbone,
            &recipe,
            &batch,
            &levels,
            &mut cache,
            &mut backbone_images,
            &device,
        )?;
        let feats = training_features(&features);
        if step == first_step {
            probe_outputs(&mut trainer, &mut plans, &feats, input_size)?;
            check_labels(&mut plans, &data, &trainer)?;
        }
        let targets = plans
            .iter()
            .map(|p| batch_targets(p, &batch, input_size, &device))
            .collect::<Result<Vec<_>>>()?;
        let report = trainer.step(&feats, [input_size.1, input_size.0], &targets)?;
        seen += batch.len() as u64;
        let first = *first_loss.get_or_insert(report.loss);
        if !report.loss.is_finite() || report.loss > t.max_loss_ratio * first.max(1e-12) {
            bar.abandon();
            return Err(TrainError::Diverged {
                step,
                loss: report.loss,
                first,
                checkpoint: checkpoint.clone(),
            });
        }
        losses.push(LossRow {
            step,
            lr: report.lr,
            loss: report.loss,
            heads: report.head_losses.clone(),
        });
        bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  {:.1} img/s",
            report.loss,
            report.lr,
            seen as f64 / started.elapsed().as_secs_f64().max(1e-9)
        ));
        bar.inc(1);
        let done = step + 1;
        stopped = options.stop.load(Ordering::Relaxed) && done < t.steps;
        if done.is_multiple_of(t.checkpoint_every) || done == t.steps || stopped {
            write_checkpoint(
                &checkpoint,
                &about,
                &backbone,
                &mut trainer,
                &plans,
                &losses,
                done,
            )?;
        }
        if stopped {
            break;
        }
    }
    bar.finish_and_clear();
    let steps_done = trainer.iteration();
    let model = if stopped {
        checkpoint.join("model.safetensors")
    } else {
        let model = options.out_dir.join("model.safetensors");
        write_model(&model, &about, &backbone, &mut trainer, &plans, steps_done)?;
        write_losses(&options.out_dir.join("losses.csv"), &plans, &losses)?;
        let points: Vec<(f64, f64)> = losses.iter().map(|r| (r.step as f64, r.loss)).collect();
        vpipe_eval::plots::loss_curve(&points, &options.out_dir.join("loss.png"))?;
        write_pipeline(&options.out_dir.join("pipeline.yaml"), &plans, preset)?;
        model
    };
    let run = &losses[losses
        .len()
        .saturating_sub((steps_done - first_step) as usize)..];
    let mean =
        |rows: &[LossRow]| rows.iter().map(|r| r.loss).sum::<f64>() / rows.len().max(1) as f64;
    // The first and last tenth of the run (1 to 10 steps each).
    let ends = (run.len() / 10).clamp(1, 10);
    Ok(RunSummary {
        first_step,
        steps_done,
        first_loss: mean(&run[..run.len().min(ends)]),
        last_loss: mean(&run[run.len().saturating_sub(ends)..]),
        images_per_second: seen as f64 / started.elapsed().as_secs_f64().max(1e-9),
        backbone_images,
        stopped,
        model,
        report: data.report.clone(),
    })
}

/// A checkpoint of the training file: the file, or a registry entry fetched into
/// the cache.
fn checkpoint_file(written: &Path) -> Result<PathBuf> {
    Ok(vpipe_weights::locate(
        &written.to_string_lossy(),
        Path::new(""),
        &vpipe_weights::CacheConfig::from_env(),
    )?)
}

fn config_error(problem: String) -> TrainError {
    TrainError::Data(problem)
}

/// Refuses to mix a new run's results with an earlier run's.
fn prepare_out_dir(options: &RunOptions) -> Result<()> {
    let out = &options.out_dir;
    let earlier = ["model.safetensors", CHECKPOINT_DIR]
        .iter()
        .map(|f| out.join(f))
        .find(|p| p.exists());
    if options.resume {
        if !out.join(CHECKPOINT_DIR).join("state.safetensors").is_file() {
            return Err(TrainError::Checkpoint {
                path: out.join(CHECKPOINT_DIR),
                problem: "no checkpoint to resume from".into(),
            });
        }
    } else if let Some(p) = earlier {
        if !options.overwrite {
            return Err(TrainError::Checkpoint {
                path: p,
                problem: "an earlier run's results are here: --resume to continue it, --overwrite to start afresh, or another --out".into(),
            });
        }
        // The earlier run's results go, so that none is taken for this run's.
        let ckpt = out.join(CHECKPOINT_DIR);
        if ckpt.is_dir() {
            std::fs::remove_dir_all(&ckpt).map_err(|e| io_error(&ckpt, e))?;
        }
        for name in OUTPUTS {
            let p = out.join(name);
            if p.is_file() {
                std::fs::remove_file(&p).map_err(|e| io_error(&p, e))?;
            }
        }
    }
    std::fs::create_dir_all(out.join(CHECKPOINT_DIR)).map_err(|e| io_error(out, e))
}

fn io_error(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io(vpipe_io::IoError::io(path, e))
}

/// Reads the frozen backbone.
fn load_backbone(config: &TrainConfig, device: &Device) -> Result<Backbone> {
    let path = &checkpoint_file(&config.backbone.weights)?;
    let file = TensorFile::read(path)?;
    let layout = CheckpointLayout::detect(&file)?;
    let canonical = to_canonical(&file)?;
    let tensors = canonical
        .tensors
        .iter()
        .filter(|(k, _)| is_backbone_tensor(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(os) = config.backbone.output_stride {
        check_output_stride(os)
            .map_err(|e| config_error(format!("backbone.output_stride: {e}")))?;
    }
    let bconfig =
        MobileVitConfig::for_task(layout.size, layout.task, config.backbone.output_stride);
    let mut params = Params::new(path.display().to_string(), canonical, device);
    let network = MobileVit::load(&mut params, &bconfig)?;
    Ok(Backbone {
        path: path.clone(),
        network,
        config: bconfig,
        layout,
        tensors,
    })
}

/// The canonical tensors of the head a training file's head starts from: its
/// `init` checkpoint's (or its teacher's) non-backbone tensors; `None` for
/// `init: random`.
fn head_tensors(h: &HeadConfig) -> Result<Option<BTreeMap<String, HostTensor>>> {
    let path = h
        .init
        .as_ref()
        .or(h.teacher.as_ref())
        .unwrap_or_else(|| unreachable!("checked with the training file"));
    if path.as_os_str() == RANDOM_INIT {
        return Ok(None);
    }
    let file = TensorFile::read(&checkpoint_file(path)?)?;
    let canonical = to_canonical(&file)?;
    Ok(Some(
        canonical
            .tensors
            .into_iter()
            .filter(|(k, _)| !is_backbone_tensor(k))
            .collect(),
    ))
}

/// Builds a head in trainable form from its canonical tensors (or, without them,
/// initialised as ml-cvnets initialises new layers, from `seed`), checked to fit
/// the backbone's strides.
fn build_head(
    registry: &HeadRegistry,
    h: &HeadConfig,
    tensors: Option<BTreeMap<String, HostTensor>>,
    seed: u64,
    config: &MobileVitConfig,
    device: &Device,
) -> Result<Box<dyn Head>> {
    let mut params = match tensors {
        Some(t) => Params::from_named(format!("head '{}'", h.name), t, device),
        None => Params::initialised(seed, device),
    };
    params.set_trainable();
    let mut ctx = HeadContext::new(&mut params, config, &h.options);
    let head = registry.build(&h.kind, &mut ctx)?;
    for (level, stride) in head.required_strides() {
        let have = config.level_stride(level);
        if have != stride {
            return Err(config_error(format!(
                "head '{}' ({}) reads layer {level} at output stride {stride}, but the backbone gives stride {have} there: set backbone.output_stride{}",
                h.name,
                h.kind,
                if h.kind == "deeplabv3" {
                    format!(" or the head's `stride` option to {have}")
                } else {
                    String::new()
                }
            )));
        }
    }
    Ok(head)
}

/// The data order: a new seeded permutation of the images every epoch.
struct Order {
    seed: u64,
    n: usize,
    epoch: Option<u64>,
    perm: Vec<usize>,
}

impl Order {
    fn new(seed: u64, n: usize) -> Self {
        Self {
            seed,
            n,
            epoch: None,
            perm: Vec::new(),
        }
    }

    /// The image at position `k` of the whole run.
    fn at(&mut self, k: u64) -> usize {
        let epoch = k / self.n as u64;
        if self.epoch != Some(epoch) {
            self.perm = (0..self.n).collect();
            self.perm.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
                self.seed,
                u64::MAX - epoch,
            )));
            self.epoch = Some(epoch);
        }
        self.perm[(k % self.n as u64) as usize]
    }
}

/// A seed for item `k` of a run seeded with `seed` (SplitMix64's finaliser).
fn mix(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The network input of a batch of augmented samples (each already at the input
/// size), `[batch, 3, h, w]`.
fn batch_input(recipe: &Preprocess, samples: &[&Frame], device: &Device) -> Tensor<4> {
    let (w, h) = (samples[0].width, samples[0].height);
    let mut data = Vec::with_capacity(samples.len() * 3 * w * h);
    for f in samples {
        data.extend(recipe.to_planar(&f.data, f.width, f.height));
    }
    Tensor::from_data(TensorData::new(data, [samples.len(), 3, h, w]), device)
}

/// The backbone's features of a batch: computed (one pass for the batch) or, with
/// the cache, each image's taken from it (computed once, on first use).
fn batch_features(
    backbone: &Backbone,
    recipe: &Preprocess,
    batch: &[(usize, Sample, Option<usize>)],
    levels: &[usize],
    cache: &mut [Option<Vec<HostTensor>>],
    backbone_images: &mut u64,
    device: &Device,
) -> Result<Features> {
    if cache.is_empty() {
        let frames: Vec<&Frame> = batch.iter().map(|(_, s, _)| &s.image).collect();
        *backbone_images += frames.len() as u64;
        return Ok(backbone
            .network
            .forward(batch_input(recipe, &frames, device))?);
    }
    for (index, sample, _) in batch {
        if cache[*index].is_none() {
            let f = backbone
                .network
                .forward(batch_input(recipe, &[&sample.image], device))?;
            *backbone_images += 1;
            cache[*index] = Some(
                levels
                    .iter()
                    .map(|&l| host(f.levels[l - 1].clone()))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
    }
    let empty = || Tensor::<4>::zeros([batch.len(), 1, 1, 1], device);
    let mut out = [empty(), empty(), empty(), empty(), empty()];
    for (j, &l) in levels.iter().enumerate() {
        let parts: Vec<&HostTensor> = batch
            .iter()
            .map(|(i, _, _)| {
                &cache[*i]
                    .as_ref()
                    .unwrap_or_else(|| unreachable!("filled above"))[j]
            })
            .collect();
        let mut shape = parts[0].shape.clone();
        shape[0] = parts.len();
        let data: Vec<f32> = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        let dims: [usize; 4] = shape
            .try_into()
            .unwrap_or_else(|_| unreachable!("features are 4-d"));
        out[l - 1] = Tensor::from_data(TensorData::new(data, dims), device);
    }
    Ok(Features { levels: out })
}

/// A tensor copied to the host.
fn host<const D: usize>(t: Tensor<D>) -> Result<HostTensor> {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Data(format!("cannot read a tensor back: {e:?}")))?;
    Ok(HostTensor::new(shape, data))
}

/// Learns each head's kind of output from one training forward (no dropout).
fn probe_outputs(
    trainer: &mut Trainer,
    plans: &mut [HeadPlan],
    features: &Features,
    input_size: (usize, usize),
) -> Result<()> {
    for (plan, head) in plans.iter_mut().zip(trainer.heads_mut()) {
        let kind = head.kind().to_string();
        let trainable = head
            .trainable()
            .ok_or(TrainError::NotTrainable { index: 0, kind })?;
        let out = trainable.train_forward(
            features,
            [input_size.1, input_size.0],
            &mut Dropout::disabled(),
        )?;
        plan.output = match out {
            TrainOutput::Classification { .. } => OutputKind::Classification,
            TrainOutput::Detection { .. } => OutputKind::Detection,
            TrainOutput::Segmentation { .. } => OutputKind::Segmentation,
        };
    }
    Ok(())
}

/// Checks that each head without a teacher has labels of its kind in the data,
/// with classes it can predict; takes the data's class names for the heads whose
/// classes they name one for one.
fn check_labels(plans: &mut [HeadPlan], data: &TrainData, trainer: &Trainer) -> Result<()> {
    for (plan, head) in plans.iter_mut().zip(trainer.heads()) {
        if plan.teacher.is_some() {
            continue;
        }
        let name = &plan.config.name;
        let classes = head.num_classes().unwrap_or(0);
        let problem = match (plan.output, data.labels) {
            (OutputKind::Detection, LabelKind::Instances) => (data.object_classes() + 1 != classes)
                .then(|| {
                    format!(
                        "the data has {} object classes, the head {} (background included)",
                        data.object_classes(),
                        classes
                    )
                }),
            (OutputKind::Segmentation, LabelKind::Instances) => (classes
                != vpipe_core::labels::LabelSet::Voc21.len())
            .then(|| format!("COCO data gives VOC-21 masks, the head has {classes} classes")),
            // Mask values beyond the head's classes are reported by the loss.
            (OutputKind::Segmentation, LabelKind::Masks) => None,
            (OutputKind::Classification, LabelKind::Classes) => (data.classes.len() > classes)
                .then(|| {
                    format!(
                        "the data has {} classes, the head {classes}",
                        data.classes.len()
                    )
                }),
            (kind, labels) => Some(format!(
                "a {kind:?} head learns from {}, which this data ({labels:?}) does not have; give it a `teacher` or other data",
                match kind {
                    OutputKind::Detection => "boxes (COCO)",
                    OutputKind::Segmentation => "masks (COCO, masks)",
                    OutputKind::Classification => "classes (image_folder, csv)",
                }
            )),
        };
        if let Some(p) = problem {
            return Err(config_error(format!("head '{name}': {p}")));
        }
        let names = match (plan.output, data.labels) {
            (OutputKind::Detection, LabelKind::Instances) => data.object_names(),
            (OutputKind::Classification, LabelKind::Classes) => data.classes.clone(),
            _ => Vec::new(),
        };
        plan.labels = (names.len() == classes).then_some(names);
    }
    Ok(())
}

/// One head's targets for a batch: from the data's labels, or from its teacher.
fn batch_targets(
    plan: &HeadPlan,
    batch: &[(usize, Sample, Option<usize>)],
    (w, h): (usize, usize),
    device: &Device,
) -> Result<Targets> {
    if let Some(teacher) = &plan.teacher {
        return teacher_targets(teacher, plan.output, batch, (w, h), device);
    }
    Ok(match plan.output {
        OutputKind::Classification => Targets::Classes(
            batch
                .iter()
                .map(|(_, _, c)| c.unwrap_or_else(|| unreachable!("checked by check_labels")))
                .collect(),
        ),
        OutputKind::Detection => Targets::Boxes(
            batch
                .iter()
                .map(|(_, s, _)| ImageBoxes {
                    boxes: s
                        .boxes
                        .iter()
                        .map(|b| {
                            [
                                b[0] / w as f32,
                                b[1] / h as f32,
                                b[2] / w as f32,
                                b[3] / h as f32,
                            ]
                        })
                        .collect(),
                    labels: s.labels.clone(),
                })
                .collect(),
        ),
        OutputKind::Segmentation => Targets::Masks(
            batch
                .iter()
                .map(|(_, s, _)| Mask {
                    height: h,
                    width: w,
                    classes: s
                        .mask
                        .clone()
                        .unwrap_or_else(|| unreachable!("masks are made for segmentation heads")),
                })
                .collect(),
        ),
    })
}

/// The teacher's outputs on the batch's augmented images (through its own
/// preprocessing), in the student's layout.
fn teacher_targets(
    teacher: &Teacher,
    output: OutputKind,
    batch: &[(usize, Sample, Option<usize>)],
    (w, h): (usize, usize),
    device: &Device,
) -> Result<Targets> {
    let mut data = Vec::new();
    let mut size = (0, 0);
    for (_, s, _) in batch {
        let (rgb, t) = teacher
            .recipe
            .resize_and_crop(&s.image)
            .map_err(|e| TrainError::Data(format!("teacher preprocessing: {e}")))?;
        size = t.input_size;
        data.extend(teacher.recipe.to_planar(&rgb, size.0, size.1));
    }
    let input = Tensor::from_data(
        TensorData::new(data, [batch.len(), 3, size.1, size.0]),
        device,
    );
    let out = teacher.model.model.forward_raw(input)?;
    let get = |name: &str| -> Result<HostTensor> {
        let t = out
            .get(name)
            .ok_or_else(|| TrainError::Data(format!("the teacher gives no '{name}' output")))?;
        Ok(HostTensor::new(t.shape.clone(), t.data.clone()))
    };
    Ok(Targets::Teacher(
        match (output, teacher.model.layout.task) {
            (OutputKind::Classification, CheckpointTask::Classification) => {
                TeacherOutputs::Classification(get("logits")?)
            }
            (OutputKind::Detection, CheckpointTask::Detection) => TeacherOutputs::Detection {
                conf_logits: get("conf_logits")?,
                loc: get("loc")?,
            },
            (OutputKind::Segmentation, CheckpointTask::Segmentation) => {
                let l = get("logits")?;
                let dims: [usize; 4] = l
                    .shape
                    .clone()
                    .try_into()
                    .map_err(|_| TrainError::Data("the teacher's logits are not 4-d".into()))?;
                let t = Tensor::<4>::from_data(TensorData::new(l.data, dims), device);
                let align =
                    teacher.model.layout.source != vpipe_backbone::SourceLayout::HuggingFace;
                let up = interpolate(
                    t,
                    InterpolateOptions::new(InterpolateMode::Bilinear)
                        .with_align_corners(align)
                        .with_output_size([h, w]),
                );
                TeacherOutputs::Segmentation(host(up)?)
            }
            (kind, task) => {
                return Err(config_error(format!(
                    "a {kind:?} head cannot learn from a {task} teacher"
                )));
            }
        },
    ))
}

/// One line of `losses.csv`.
#[derive(Debug, Clone, PartialEq)]
struct LossRow {
    step: u64,
    lr: f64,
    loss: f64,
    heads: Vec<f64>,
}

/// The settings a checkpoint must have been written with to be resumed.
fn config_record(config: &TrainConfig) -> Value {
    let t = &config.train;
    json!({
        "backbone": config.backbone.weights.display().to_string(),
        "heads": config.heads.iter().map(|h| json!({"name": h.name, "type": h.kind, "teacher": h.teacher.as_ref().map(|p| p.display().to_string()), "options": h.options})).collect::<Vec<_>>(),
        "steps": t.steps, "batch_size": t.batch_size, "lr": t.lr, "min_lr": t.min_lr,
        "warmup_steps": t.warmup_steps, "warmup_init_lr": t.warmup_init_lr,
        "weight_decay": t.weight_decay, "seed": t.seed, "dropout": t.dropout,
        "cache_features": t.cache_features, "temperature": t.temperature,
        "confidence": t.confidence,
        "augment": serde_json::to_value(t.augment).unwrap_or(Value::Null),
    })
}

/// What a run's model files record besides their tensors: the weights metadata
/// and the training settings.
struct ModelAbout {
    meta: WeightsMetadata,
    record: Value,
}

/// The weights metadata of a run's model files: the backbone's file, its layout,
/// and the preprocessing the heads were trained with.
fn model_metadata(
    config: &TrainConfig,
    backbone: &Backbone,
    preset: PreprocessPreset,
) -> Result<WeightsMetadata> {
    Ok(WeightsMetadata {
        arch: backbone.layout.size,
        task: backbone.layout.task,
        source: backbone.layout.source,
        labels: vpipe_weights::default_labels(backbone.layout.task),
        preprocess: preset,
        f16: false,
        original_file: config
            .backbone
            .weights
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        original_sha256: vpipe_weights::sha256_file(&backbone.path)?,
        registry_name: None,
        random_init: vpipe_weights::weights_note(&backbone.path)?.is_some(),
    })
}

/// The model file of the heads as trained so far.
fn write_model(
    path: &Path,
    about: &ModelAbout,
    backbone: &Backbone,
    trainer: &mut Trainer,
    plans: &[HeadPlan],
    steps: u64,
) -> Result<()> {
    let tensors = trainer.save_heads()?;
    let heads: Vec<StoredHead> = plans
        .iter()
        .zip(tensors)
        .map(|(p, tensors)| StoredHead {
            entry: HeadEntry {
                name: p.config.name.clone(),
                kind: p.config.kind.clone(),
                options: options_with_labels(p),
                labels: p.labels.clone(),
                training: Some(json!({
                    "steps": steps,
                    "teacher": p.config.teacher.as_ref().map(|t| t.display().to_string()),
                    "config": about.record,
                })),
            },
            tensors,
        })
        .collect();
    vpipe_weights::write_multihead(path, &about.meta, &backbone.tensors, &heads)?;
    Ok(())
}

/// A head's options for the model file: the training file's, with the data's class
/// names as the `labels` option of the built-in heads, which take one.
fn options_with_labels(plan: &HeadPlan) -> serde_json::Map<String, Value> {
    let mut options = plan.config.options.clone();
    if let Some(labels) = &plan.labels
        && ["classification", "ssd", "deeplabv3"].contains(&plan.config.kind.as_str())
    {
        options.entry("labels").or_insert_with(|| json!(labels));
    }
    options
}

/// Writes a checkpoint: the model so far, the optimiser state, the losses.
fn write_checkpoint(
    dir: &Path,
    about: &ModelAbout,
    backbone: &Backbone,
    trainer: &mut Trainer,
    plans: &[HeadPlan],
    losses: &[LossRow],
    steps: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    write_losses(&dir.join("losses.csv"), plans, losses)?;
    trainer.save_state(&dir.join("state.safetensors"))?;
    write_model(
        &dir.join("model.safetensors"),
        about,
        backbone,
        trainer,
        plans,
        steps,
    )
}

/// A checkpoint read back for resuming.
struct Resumed {
    heads: Vec<StoredHead>,
    state: PathBuf,
    losses: Vec<LossRow>,
    config: Value,
}

impl Resumed {
    fn head(&self, name: &str) -> Result<BTreeMap<String, HostTensor>> {
        self.heads
            .iter()
            .find(|h| h.entry.name == name)
            .map(|h| h.tensors.clone())
            .ok_or_else(|| TrainError::Checkpoint {
                path: self.state.clone(),
                problem: format!("the checkpoint has no head named '{name}'"),
            })
    }
}

fn read_checkpoint(dir: &Path) -> Result<Resumed> {
    let model = dir.join("model.safetensors");
    let mut file = TensorFile::read(&model)?;
    let bad = |problem: String| TrainError::Checkpoint {
        path: model.clone(),
        problem,
    };
    let heads = vpipe_weights::split_heads(&mut file)?
        .ok_or_else(|| bad("not a multi-head model file".into()))?;
    let config = heads
        .first()
        .and_then(|h| h.entry.training.as_ref())
        .and_then(|t| t.get("config"))
        .cloned()
        .ok_or_else(|| bad("no training record".into()))?;
    let losses = read_losses(&dir.join("losses.csv"))?;
    Ok(Resumed {
        heads,
        state: dir.join("state.safetensors"),
        losses,
        config,
    })
}

fn write_losses(path: &Path, plans: &[HeadPlan], rows: &[LossRow]) -> Result<()> {
    let mut s = String::from("step,lr,loss");
    for p in plans {
        let _ = write!(s, ",{}", p.config.name);
    }
    s.push('\n');
    for r in rows {
        let _ = write!(s, "{},{:e},{:e}", r.step, r.lr, r.loss);
        for l in &r.heads {
            let _ = write!(s, ",{l:e}");
        }
        s.push('\n');
    }
    vpipe_io::output::write_atomic(path, s.as_bytes())?;
    Ok(())
}

fn read_losses(path: &Path) -> Result<Vec<LossRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let bad = |line: usize| TrainError::Checkpoint {
        path: path.to_path_buf(),
        problem: format!("line {line} is not step,lr,loss,..."),
    };
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, line)| {
            let v: Vec<&str> = line.split(',').collect();
            let num = |s: &str| s.parse::<f64>().map_err(|_| bad(i + 1));
            if v.len() < 3 {
                return Err(bad(i + 1));
            }
            Ok(LossRow {
                step: v[0].parse().map_err(|_| bad(i + 1))?,
                lr: num(v[1])?,
                loss: num(v[2])?,
                heads: v[3..].iter().map(|s| num(s)).collect::<Result<_>>()?,
            })
        })
        .collect()
}

/// A pipeline running the model: its one backbone feeding every trained head.
fn write_pipeline(path: &Path, plans: &[HeadPlan], preset: PreprocessPreset) -> Result<()> {
    let mut s = format!(
        "# Written by `vpipe train`: the trained heads on their one backbone, one pass per frame.\nbackbones:\n  shared:\n    weights: model.safetensors\n    preprocess: {}\nheads:\n",
        preset.name()
    );
    for p in plans {
        let _ = writeln!(
            s,
            "  - name: {}\n    type: {}",
            p.config.name, p.config.kind
        );
    }
    vpipe_io::output::write_atomic(path, s.as_bytes())?;
    Ok(())
}

/// The progress bar of a run (hidden when not asked for).
fn progress_bar(show: bool, first: u64, steps: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_position(first);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "training {bar:30} {pos}/{len} steps  {msg}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
