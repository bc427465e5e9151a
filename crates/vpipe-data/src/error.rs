//! The readers' errors.

use std::path::PathBuf;

/// A dataset that cannot be read. Each variant names the file and, where there is one, the
/// item (image id, annotation id, line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read.
    #[error("{}: cannot read: {cause}", path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// A JSON file is not valid JSON, or not of the format's structure (the message gives
    /// line and column).
    #[error("{}: {}: {cause}", path.display(), if cause.is_data() { "not of the expected structure" } else { "not valid JSON" })]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        cause: serde_json::Error,
    },
    /// A file's content is not what its format requires.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where in the file.
        message: String,
    },
    /// An image or mask could not be decoded.
    #[error("{}: cannot decode: {message}", path.display())]
    Decode {
        /// The image or mask file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A run-length encoding that does not describe its mask.
    #[error("invalid RLE: {0}")]
    Rle(String),
}

impl DataError {
    /// An [`DataError::Invalid`] for `path`.
    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A [`DataError::Read`] for `path`.
    pub(crate) fn read(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Self::Read {
            path: path.into(),
            cause,
        }
    }
}
