//! The error type of `vpipe-train`.

use std::path::PathBuf;

/// Errors raised while training heads.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A head failed (loading, forward).
    #[error(transparent)]
    Head(#[from] vpipe_heads::HeadError),
    /// A layer's parameter failed (reading it or its gradient back).
    #[error(transparent)]
    Backbone(#[from] vpipe_backbone::BackboneError),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] vpipe_io::IoError),
    /// A weights file could not be read or written.
    #[error(transparent)]
    Weights(#[from] vpipe_weights::WeightsError),
    /// A dataset could not be read.
    #[error(transparent)]
    Dataset(#[from] vpipe_data::DataError),
    /// The loss curve could not be drawn.
    #[error(transparent)]
    Plot(#[from] vpipe_eval::EvalError),
    /// A video could not be read.
    #[error(transparent)]
    Media(#[from] vpipe_media::MediaError),
    /// The training file is wrong.
    #[error("{path}: {problem}")]
    Config {
        /// The training file.
        path: PathBuf,
        /// What is wrong, and where in it.
        problem: String,
    },
    /// The data does not fit the heads, or has no usable image.
    #[error("{0}")]
    Data(String),
    /// A checkpoint cannot be resumed, or an earlier run's results are in the way.
    #[error("{path}: {problem}")]
    Checkpoint {
        /// The checkpoint (or the file in the way).
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A step's loss was not finite, or exploded.
    #[error(
        "training stopped at step {step}: the loss is {loss} (the first step's was {first}); \
         the last good checkpoint is kept in {} — lower the learning rate (train.lr) and resume or restart",
        checkpoint.display()
    )]
    Diverged {
        /// The step.
        step: u64,
        /// Its loss.
        loss: f64,
        /// The first step's loss.
        first: f64,
        /// The checkpoint folder.
        checkpoint: PathBuf,
    },
    /// A trainer was asked for without heads.
    #[error("a trainer needs at least one head")]
    NoHeads,
    /// A head was given to the trainer that cannot be trained, or was not loaded
    /// in trainable form.
    #[error(
        "head {index} ('{kind}') cannot be trained: it was not loaded in trainable form \
         (LoadOptions::trainable_head) or does not implement TrainableHead"
    )]
    NotTrainable {
        /// The head's position among the trainer's heads.
        index: usize,
        /// The head type.
        kind: String,
    },
    /// A step was given another number of target sets than the trainer has heads.
    #[error("{targets} target sets for {heads} heads (one per head, in order)")]
    TargetCount {
        /// The trainer's heads.
        heads: usize,
        /// The target sets given.
        targets: usize,
    },
    /// The targets do not fit the head's outputs.
    #[error("head {head}: targets: {problem}")]
    Targets {
        /// The head's position among the trainer's heads.
        head: usize,
        /// What does not fit.
        problem: String,
    },
    /// A detection batch without a single ground-truth box: the multibox loss
    /// divides by the number of matched anchors.
    #[error("head {head}: no ground-truth box in the batch (the multibox loss needs at least one)")]
    NoPositives {
        /// The head's position among the trainer's heads.
        head: usize,
    },
    /// A loss tensor could not be read back.
    #[error("loss of head {head}: cannot read it back ({problem})")]
    ReadBack {
        /// The head's position among the trainer's heads.
        head: usize,
        /// What went wrong.
        problem: String,
    },
    /// An optimiser state file is not one this version wrote, or does not fit
    /// the parameters.
    #[error("{path}: {problem}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// Result alias of `vpipe-train`.
pub type Result<T> = std::result::Result<T, TrainError>;
