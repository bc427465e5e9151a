//! Training core for vpipe's heads on a frozen MobileViT backbone.
//!
//! Heads train on the same model definition they run inference with: loaded in
//! trainable form ([`vpipe_heads::LoadOptions::trainable_head`]), their layers keep
//! unfolded parameters as leaves of burn's autodiff graph, with batch norms in
//! inference mode (running statistics frozen; see [`vpipe_backbone::trainable`]).
//! The numerics follow Apple ml-cvnets v0.1, with which the MobileViT v1 weights
//! were trained, and PyTorch:
//!
//! - [`loss`]: label-smoothed cross-entropy, the SSD multibox loss (with
//!   [`matcher`]'s anchor matching and 3:1 hard-negative mining), segmentation
//!   cross-entropy with an ignore index; the targets they take ([`Targets`]).
//! - [`optim`]: AdamW as `torch.optim.AdamW`, with state per parameter name.
//! - [`schedule`]: linear warm-up and cosine decay.
//! - [`trainer`]: one step over one or more heads ([`Trainer::step`]), the trained
//!   heads under canonical names ([`Trainer::save_heads`]), the optimiser state for
//!   resuming ([`Trainer::save_state`], [`Trainer::load_state`]).
//!
//! [`benchmark`] is the fixed step `vpipe bench train` times.
//!
//! Dropout is not applied: the heads train without it (the parity references set
//! every dropout to p = 0).

pub mod augment;
pub mod benchmark;
pub mod config;
pub mod dataset;
pub mod distill;
pub mod error;
pub mod loss;
pub mod matcher;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use loss::{ImageBoxes, LossSettings, Mask, Targets};
pub use matcher::MatcherSettings;
pub use optim::{AdamW, AdamWSettings};
pub use run::{RunOptions, RunSummary, train};
pub use schedule::CosineSchedule;
pub use trainer::{StepReport, Trainer, TrainerSettings, training_features};
