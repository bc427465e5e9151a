//! The error type of `vpipe-media`.

use std::path::PathBuf;

/// Errors raised while reading or preprocessing media.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The file could not be read.
    #[error("cannot read {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is not a decodable image.
    #[error("cannot decode image {path}: {reason}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// A preprocessing setting or input is invalid.
    #[error("preprocessing: {0}")]
    Preprocess(String),
    /// A video, stream or camera could not be opened, read or written.
    #[error("{0}")]
    Video(String),
}

/// Result alias of `vpipe-media`.
pub type Result<T> = std::result::Result<T, MediaError>;
