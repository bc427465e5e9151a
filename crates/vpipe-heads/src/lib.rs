//! Task heads on the MobileViT backbone.
//!
//! - [`classification`]: 1x1 expansion, global average pooling, linear classifier.
//! - [`model`]: loads a checkpoint file into a backbone plus the head it carries.

pub mod classification;
pub mod model;

pub use classification::ClassificationHead;
pub use model::{LoadedModel, Model, ModelOutput};
