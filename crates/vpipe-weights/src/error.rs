//! Errors of the registry, the cache and the weights format. Each names the file
//! concerned and, where a file is missing or wrong, where to get it and where to put it.

use std::path::PathBuf;

/// Errors of `vpipe-weights`.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The registry file is malformed.
    #[error("weights registry: {0}")]
    Registry(String),
    /// Neither an existing file nor a registry name.
    #[error("'{written}' is neither a weights file (looked at {}) nor a registry name (see `vpipe weights list`)", looked_at.display())]
    NotFound {
        /// What was asked for.
        written: String,
        /// The path it would have been.
        looked_at: PathBuf,
    },
    /// Offline (or the network is unreachable) and the file is not in the cache.
    #[error("{name}: not in the cache and {reason}; get {url} and put it at {}", path.display())]
    Unavailable {
        /// Registry name.
        name: String,
        /// Where the file is published (or its mirror address).
        url: String,
        /// Where vpipe expects it.
        path: PathBuf,
        /// Why it could not be downloaded.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{name}: {url} answered HTTP {status}; get the file by other means and put it at {}", path.display())]
    Http {
        /// Registry name.
        name: String,
        /// The address asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// Where vpipe expects the file.
        path: PathBuf,
    },
    /// The downloaded or cached file does not have the expected sha256.
    #[error("{name}: {} has sha256 {found}, expected {expected} ({origin}); the file was not kept under that name — download it again (`vpipe weights fetch {name}`) or put a good copy at {}", path.display(), path.display())]
    Checksum {
        /// Registry name.
        name: String,
        /// The file that was checked.
        path: PathBuf,
        /// The expected hash.
        expected: String,
        /// The hash found.
        found: String,
        /// Where the expected hash comes from (pinned in the registry, or recorded).
        origin: &'static str,
    },
    /// A file could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A checkpoint could not be read or recognised.
    #[error(transparent)]
    Checkpoint(#[from] vpipe_backbone::BackboneError),
    /// A vpipe weights file could not be written or its metadata is wrong.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl WeightsError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        WeightsError::Io {
            path: path.into(),
            cause,
        }
    }
}

impl From<vpipe_core::CoreError> for WeightsError {
    fn from(e: vpipe_core::CoreError) -> Self {
        WeightsError::Checkpoint(e.into())
    }
}

/// Result with [`WeightsError`].
pub type Result<T> = std::result::Result<T, WeightsError>;
