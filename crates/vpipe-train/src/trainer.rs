//! One optimiser step of one or more heads on a frozen backbone's features.
//!
//! The backbone runs in inference form (the fused kernels, no gradient), and its
//! features enter the heads' autodiff graph as constants ([`training_features`]), so
//! that features can also be computed once and cached. Each head's training forward
//! ([`vpipe_heads::TrainableHead::train_forward`]) gives its output, [`head_loss`] its
//! loss; the losses are summed, differentiated once, and every trainable parameter
//! is updated by [`AdamW`] at the learning rate of the [`CosineSchedule`].

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use vpipe_backbone::Features;
use vpipe_core::HostTensor;
use vpipe_heads::{Dropout, Head};
use vpipe_io::TensorFile;

use crate::error::{Result, TrainError};
use crate::loss::{LossSettings, Targets, head_loss};
use crate::optim::{AdamW, AdamWSettings};
use crate::schedule::CosineSchedule;

/// Everything a [`Trainer`] needs besides the heads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainerSettings {
    /// The learning-rate schedule.
    pub schedule: CosineSchedule,
    /// The optimiser's hyper-parameters.
    pub adamw: AdamWSettings,
    /// The losses' settings.
    pub loss: LossSettings,
    /// Seed of the heads' dropout masks; `None` trains without dropout.
    pub dropout_seed: Option<u64>,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The iteration this step was (counted from 0).
    pub iteration: u64,
    /// The learning rate it used.
    pub lr: f64,
    /// The summed loss of all heads, before the update.
    pub loss: f64,
    /// Each head's loss, in the order of the heads.
    pub head_losses: Vec<f64>,
}

/// The counters a resumed run continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    iteration: u64,
    epoch: u64,
    /// The dropout generator's state.
    dropout: Option<u64>,
}

/// Trains heads in trainable form on a frozen backbone's features.
#[derive(Debug)]
pub struct Trainer {
    heads: Vec<Box<dyn Head>>,
    settings: TrainerSettings,
    optimizer: AdamW,
    progress: Progress,
}

/// The metadata key of a state file's iteration and epoch.
const PROGRESS_METADATA_KEY: &str = "vpipe.train_progress";

/// `features` (from the backbone, in inference form) as constants of the autodiff
/// graph: the heads differentiate through them but not into the backbone.
pub fn training_features(features: &Features) -> Features {
    Features {
        levels: features.levels.clone().map(|t| {
            let device = t.device().autodiff();
            Tensor::from_data(t.into_data(), &device)
        }),
    }
}

impl Trainer {
    /// A trainer of `heads`, each loaded in trainable form
    /// ([`vpipe_heads::LoadOptions::trainable_head`]).
    pub fn new(mut heads: Vec<Box<dyn Head>>, settings: TrainerSettings) -> Result<Self> {
        if heads.is_empty() {
            return Err(TrainError::NoHeads);
        }
        for (index, head) in heads.iter_mut().enumerate() {
            if head.trainable().is_none() {
                return Err(TrainError::NotTrainable {
                    index,
                    kind: head.kind().to_string(),
                });
            }
        }
        Ok(Self {
            heads,
            settings,
            optimizer: AdamW::new(settings.adamw),
            progress: Progress {
                iteration: 0,
                epoch: 0,
                dropout: Dropout::seeded_or_disabled(settings.dropout_seed).state(),
            },
        })
    }

    /// The heads.
    pub fn heads(&self) -> &[Box<dyn Head>] {
        &self.heads
    }

    /// The heads, mutable (for a forward outside a step).
    pub fn heads_mut(&mut self) -> &mut [Box<dyn Head>] {
        &mut self.heads
    }

    /// The optimiser (its state per parameter).
    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    /// Steps taken so far.
    pub fn iteration(&self) -> u64 {
        self.progress.iteration
    }

    /// Sets the epoch (an epoch-based schedule follows it).
    pub fn set_epoch(&mut self, epoch: u64) {
        self.progress.epoch = epoch;
    }

    /// Sets the iteration the next step counts as (as a resumed run does).
    pub fn set_iteration(&mut self, iteration: u64) {
        self.progress.iteration = iteration;
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.settings
            .schedule
            .lr(self.progress.epoch, self.progress.iteration)
    }

    /// One step: each head's forward on `features` (see [`training_features`]) for a
    /// network input of `input_size` (`[height, width]`), its loss against its
    /// `targets` (one per head, in order), backward through the sum, and an AdamW
    /// update of every trainable parameter.
    pub fn step(
        &mut self,
        features: &Features,
        input_size: [usize; 2],
        targets: &[Targets],
    ) -> Result<StepReport> {
        if targets.len() != self.heads.len() {
            return Err(TrainError::TargetCount {
                heads: self.heads.len(),
                targets: targets.len(),
            });
        }
        let mut losses = Vec::with_capacity(self.heads.len());
        let mut dropout = Dropout::resume(self.progress.dropout);
        for (index, (head, t)) in self.heads.iter_mut().zip(targets).enumerate() {
            let kind = head.kind().to_string();
            let trainable = head
                .trainable()
                .ok_or(TrainError::NotTrainable { index, kind })?;
            let output = trainable.train_forward(features, input_size, &mut dropout)?;
            losses.push(head_loss(index, &output, t, &self.settings.loss)?);
        }
        let head_losses = losses
            .iter()
            .enumerate()
            .map(|(head, l)| {
                l.clone()
                    .into_data()
                    .convert::<f64>()
                    .try_into_vec::<f64>()
                    .map(|v| v[0])
                    .map_err(|e| TrainError::ReadBack {
                        head,
                        problem: format!("{e:?}"),
                    })
            })
            .collect::<Result<Vec<f64>>>()?;
        let Some(total) = losses.into_iter().reduce(|a, b| a + b) else {
            return Err(TrainError::NoHeads);
        };
        let grads = total.backward();
        let lr = self.lr();
        for (index, head) in self.heads.iter_mut().enumerate() {
            let kind = head.kind().to_string();
            let trainable = head
                .trainable()
                .ok_or(TrainError::NotTrainable { index, kind })?;
            for param in trainable.params_mut() {
                if !param.is_trainable() {
                    continue;
                }
                let Some(grad) = param.grad(&grads)? else {
                    continue;
                };
                let mut value = param.to_host()?.data;
                self.optimizer
                    .update(&format!("{index}/{}", param.name()), &mut value, &grad, lr);
                param.set(value);
            }
        }
        let report = StepReport {
            iteration: self.progress.iteration,
            lr,
            loss: head_losses.iter().sum(),
            head_losses,
        };
        self.progress.iteration += 1;
        self.progress.dropout = dropout.state();
        Ok(report)
    }

    /// Each head's tensors under their canonical checkpoint names (frozen batch
    /// norm statistics included), as the normal loader reads them.
    pub fn save_heads(&mut self) -> Result<Vec<BTreeMap<String, HostTensor>>> {
        let mut out = Vec::with_capacity(self.heads.len());
        for (index, head) in self.heads.iter_mut().enumerate() {
            let kind = head.kind().to_string();
            let trainable = head
                .trainable()
                .ok_or(TrainError::NotTrainable { index, kind })?;
            let mut tensors = BTreeMap::new();
            for p in trainable.params() {
                tensors.insert(p.name().to_string(), p.to_host()?);
            }
            out.push(tensors);
        }
        Ok(out)
    }

    /// Writes the optimiser state, the iteration and epoch and the dropout
    /// generator's state to `path` (a
    /// safetensors file, written atomically), to resume from with
    /// [`Trainer::load_state`].
    pub fn save_state(&self, path: &Path) -> Result<()> {
        let (tensors, mut metadata) = self.optimizer.to_tensors();
        metadata.insert(
            PROGRESS_METADATA_KEY.to_string(),
            serde_json::to_string(&self.progress).map_err(|e| TrainError::State {
                path: path.to_path_buf(),
                problem: e.to_string(),
            })?,
        );
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .into_iter()
            .map(|(n, t)| {
                (
                    n,
                    t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    t.shape,
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, b, shape)| {
                TensorView::new(Dtype::F32, shape.clone(), b).map(|v| (n.as_str(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .and_then(|v| safetensors::tensor::serialize(v, Some(metadata.into_iter().collect())))
            .map_err(|e| TrainError::State {
                path: path.to_path_buf(),
                problem: format!("cannot serialise: {e}"),
            })?;
        vpipe_io::output::write_atomic(path, &views)?;
        Ok(())
    }

    /// Restores the optimiser state, the iteration and epoch and the dropout
    /// generator's state that
    /// [`Trainer::save_state`] wrote to `path`; the optimiser keeps the settings
    /// saved with it.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        let file = TensorFile::read(path)?;
        let bad = |problem: String| TrainError::State {
            path: path.to_path_buf(),
            problem,
        };
        let progress = file
            .metadata
            .get(PROGRESS_METADATA_KEY)
            .ok_or_else(|| bad(format!("no '{PROGRESS_METADATA_KEY}' metadata")))?;
        self.progress = serde_json::from_str(progress)
            .map_err(|e| bad(format!("'{PROGRESS_METADATA_KEY}': {e}")))?;
        self.optimizer = AdamW::from_tensors(&file.tensors, &file.metadata).map_err(bad)?;
        Ok(())
    }
}
