//! Reading a weights file back as the checkpoint its registry description promises.
//!
//! The whole model is built from the file on the CPU ([`vpipe_heads::LoadedModel`]), so
//! a file that was cut short, that is no checkpoint at all, that lacks a tensor, holds one
//! of the wrong shape or one the architecture has no place for, or that is a whole
//! checkpoint of another layout, size, task or class count, is found out before vpipe
//! trusts it. Reading back one of the shipped MobileViT-XXS files took 5-15 ms on a
//! 2-core machine.

use std::path::Path;

use vpipe_backbone::CheckpointLayout;
use vpipe_core::device::default_device;
use vpipe_heads::{HeadError, LoadedModel};

use crate::registry::Description;

/// Why a file does not read back as the checkpoint its description promises.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// No model can be built from the file: it is cut short or no checkpoint, or a
    /// tensor is missing, has the wrong shape or is left over.
    #[error("{0}")]
    Unreadable(HeadError),
    /// The file is a whole checkpoint, but of another layout, size or task.
    #[error("it reads back as a {} checkpoint", layout_name(.found))]
    OtherCheckpoint {
        /// What the file was recognised as.
        found: CheckpointLayout,
    },
    /// The file's head predicts another number of classes than its label set has.
    #[error("its head predicts {found} classes, the label set {labels} has {expected}")]
    OtherClassCount {
        /// Classes of the head in the file.
        found: usize,
        /// Classes of the label set.
        expected: usize,
        /// The label set's name.
        labels: &'static str,
    },
}

/// A layout in words: `mobilevit_s classification (cvnets layout)`.
pub fn layout_name(layout: &CheckpointLayout) -> String {
    format!("{} {} ({} layout)", layout.size, layout.task, layout.source)
}

/// Reads the file at `path` back as a checkpoint of `description`: builds the whole
/// model from it on the CPU (every tensor present with its shape, none left over) and
/// checks that its layout, size, task and number of classes are the described ones.
/// Returns what was recognised.
pub fn read_back(
    path: &Path,
    description: &Description,
) -> std::result::Result<CheckpointLayout, ReadBackError> {
    let loaded = LoadedModel::load(path, &default_device()).map_err(ReadBackError::Unreadable)?;
    let expected = description.checkpoint_layout();
    if loaded.layout != expected {
        return Err(ReadBackError::OtherCheckpoint {
            found: loaded.layout,
        });
    }
    let labels = description.labels;
    // Every head a checkpoint carries predicts classes.
    if let Some(found) = loaded.model.head().num_classes()
        && found != labels.len()
    {
        return Err(ReadBackError::OtherClassCount {
            found,
            expected: labels.len(),
            labels: labels.name(),
        });
    }
    Ok(loaded.layout)
}
