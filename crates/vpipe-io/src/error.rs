//! The error type of `vpipe-io`.

use std::path::PathBuf;

/// Errors raised while reading checkpoints and arrays.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// The file exists but is not in a format this reader understands.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor has a shape or dtype other than the one required.
    #[error("{what}: {reason}")]
    Tensor {
        /// The tensor or array concerned.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl IoError {
    /// A [`IoError::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A [`IoError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            cause,
        }
    }
}

/// Result alias of `vpipe-io`.
pub type Result<T> = std::result::Result<T, IoError>;
