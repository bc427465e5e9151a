//! vpipe: multi-task computer vision on MobileViT.
//!
//! This facade re-exports the workspace crates:
//! - [`core`]: the shared types (host tensors, results, labels, devices);
//! - [`io`]: checkpoint reading, `.npy` arrays, atomic writes;
//! - [`backbone`]: the MobileViT v1 backbone;
//! - [`heads`]: task heads and checkpoint loading;
//! - [`media`]: frames, still images, videos, streams and cameras;
//! - [`preprocess`]: the exact preprocessing of each checkpoint source;
//! - [`annotate`]: drawing results on images;
//! - [`pipeline`]: YAML pipelines, the shared-backbone graph and the runner;
//! - [`data`]: datasets (COCO instances JSON and masks, image/mask folders, ImageFolder, CSV);
//! - [`eval`]: metrics (COCO bbox evaluation as pycocotools, mIoU, top-k) and their plots;
//! - [`track`]: multi-object tracking (ByteTrack) for detection heads;
//! - [`train`]: training heads on a frozen backbone (losses, distillation, AdamW, the run).

pub use vpipe_annotate as annotate;
pub use vpipe_backbone as backbone;
pub use vpipe_core as core;
pub use vpipe_data as data;
pub use vpipe_eval as eval;
pub use vpipe_heads as heads;
pub use vpipe_io as io;
pub use vpipe_media as media;
pub use vpipe_pipeline as pipeline;
pub use vpipe_preprocess as preprocess;
pub use vpipe_track as track;
pub use vpipe_train as train;
