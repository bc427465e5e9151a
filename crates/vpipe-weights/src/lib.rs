//! MobileViT weights: where to get them, how to keep them, and vpipe's own format.
//!
//! - [`registry`]: the official checkpoints (Apple ml-cvnets, Hugging Face, timm) and
//!   the files shipped in `weights/`, from `weights/registry.yaml` (compiled in).
//! - [`cache`]: the local cache (`VPIPE_CACHE`, else the XDG cache folder), the
//!   mirror (`VPIPE_WEIGHTS_MIRROR`) and the hashes recorded for unpinned entries.
//! - [`download`]: fetching a registry entry into the cache, with a progress bar,
//!   resumed partial downloads, sha256 verification and a read-back of the file as a
//!   checkpoint of the entry before it enters the cache.
//! - [`readback`]: that read-back: the whole model is built from the file, and its
//!   layout, size, task and class count compared with the entry's.
//! - [`format`](mod@format): vpipe's own weights format (canonical tensors in safetensors, with
//!   their metadata) and the import of any supported checkpoint into it.
//! - [`multihead`]: multi-head model files, one backbone and named heads trained on it.
//! - [`provenance`]: tells random-initialised reference weights from trained ones.

pub mod cache;
pub mod download;
pub mod error;
pub mod format;
pub mod multihead;
pub mod provenance;
pub mod readback;
pub mod registry;

pub use cache::CacheConfig;
pub use download::{fetch, locate, sha256_file, verify_cached};
pub use error::{Result, WeightsError};
pub use format::{ImportOptions, WeightsMetadata, import};
pub use multihead::{HeadEntry, StoredHead, split_heads, write_multihead};
pub use provenance::{RANDOM_INIT_NOTE, weights_note};
pub use readback::{ReadBackError, read_back};
pub use registry::{Entry, Registry, ShippedFile};

use vpipe_backbone::CheckpointLayout;
use vpipe_backbone::SourceLayout;
use vpipe_backbone::layout::CheckpointTask;
use vpipe_core::labels::LabelSet;
use vpipe_core::preset::PreprocessPreset;

/// The preprocessing a checkpoint was trained with.
pub fn default_preset(layout: &CheckpointLayout) -> PreprocessPreset {
    match (layout.source, layout.task) {
        (SourceLayout::Timm, _) => PreprocessPreset::Timm,
        (SourceLayout::HuggingFace, CheckpointTask::Segmentation) => PreprocessPreset::HfSeg,
        (SourceLayout::HuggingFace, _) => PreprocessPreset::HfCls,
        (SourceLayout::Cvnets, CheckpointTask::Classification) => PreprocessPreset::CvnetsCls,
        (SourceLayout::Cvnets, CheckpointTask::Detection) => PreprocessPreset::CvnetsSsd,
        (SourceLayout::Cvnets, CheckpointTask::Segmentation) => PreprocessPreset::CvnetsSeg,
    }
}

/// The class names a checkpoint of `task` predicts.
pub fn default_labels(task: CheckpointTask) -> LabelSet {
    match task {
        CheckpointTask::Classification => LabelSet::ImageNet1k,
        CheckpointTask::Detection => LabelSet::Coco81,
        CheckpointTask::Segmentation => LabelSet::Voc21,
    }
}
