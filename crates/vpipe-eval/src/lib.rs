//! vpipe's metrics, pure Rust, and their plots.
//!
//! - [`coco_eval`]: COCO bbox evaluation equal to pycocotools' `COCOeval` (the 12 summary
//!   numbers, per-class AP, precision-recall curves).
//! - [`confusion`]: the confusion matrix that segmentation and classification share.
//! - [`segmentation`]: per-class IoU, mIoU and pixel accuracy over a dataset.
//! - [`classification`]: top-1 and top-5 accuracy.
//! - [`plots`]: PNG plots: precision-recall curves, confusion matrices, a training loss curve.

pub mod classification;
pub mod coco_eval;
pub mod confusion;
mod error;
pub mod plots;
pub mod segmentation;

pub use error::EvalError;

/// Result of the metrics and plots.
pub type Result<T> = std::result::Result<T, EvalError>;
