//! Task heads on the MobileViT backbone.
//!
//! - [`api`]: the public head API ([`Head`], [`HeadRegistry`]) for heads of your own.
//!
//! - [`classification`]: 1x1 expansion, global average pooling, linear classifier.
//! - [`detection`]: SSDLite with anchors, box decoding and class-aware NMS.
//! - [`segmentation`]: DeepLabv3 with atrous spatial pyramid pooling.
//! - [`training`]: the opt-in training hook ([`TrainableHead`]) and what a
//!   head's training forward returns.
//! - [`model`]: loads a checkpoint file into a backbone plus the head it carries.

pub mod api;
pub mod classification;
pub mod detection;
pub mod error;
pub mod model;
mod options;
pub mod segmentation;
pub mod training;

pub use api::{Head, HeadContext, HeadFactory, HeadRegistry, output, row};
pub use classification::ClassificationHead;
pub use detection::{SsdHead, SsdSettings};
pub use error::{HeadError, Result};
pub use model::{LoadOptions, LoadedModel, Model, ModelOutput, RawTensor};
pub use segmentation::{DeepLabHead, UpsampleConvention};
pub use training::{Dropout, TrainOutput, TrainableHead};
