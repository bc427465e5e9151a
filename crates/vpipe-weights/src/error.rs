//! Errors of the registry, the cache and the weights format. Each names the file
//! concerned and, where a file is missing or wrong, where to get it and where to put it.

use std::path::{Path, PathBuf};

use vpipe_backbone::CheckpointLayout;

use crate::readback::{ReadBackError, layout_name};

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
    /// A downloaded or cached file does not read back as a checkpoint of its entry's
    /// layout, size, task and class count (see [`crate::readback`]). A download that
    /// fails so is deleted; in neither case is a hash recorded for it.
    #[error("{}", not_a_checkpoint_message(.name, .url, .path, .expected, .reason, *.downloaded))]
    NotACheckpoint {
        /// Registry name.
        name: String,
        /// The address the file was (or would be) downloaded from.
        url: String,
        /// Where vpipe keeps the entry's file.
        path: PathBuf,
        /// What the entry describes.
        expected: CheckpointLayout,
        /// What is wrong with the file (boxed: it can be large).
        reason: Box<ReadBackError>,
        /// The file was just downloaded (and has been deleted), rather than found in
        /// the cache (and left there).
        downloaded: bool,
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

/// The message of [`WeightsError::NotACheckpoint`]: what is wrong, what was done with
/// the file, and how to get a good one.
fn not_a_checkpoint_message(
    name: &str,
    url: &str,
    path: &Path,
    expected: &CheckpointLayout,
    reason: &ReadBackError,
    downloaded: bool,
) -> String {
    let expected = layout_name(expected);
    if downloaded {
        format!(
            "{name}: the file downloaded from {url} is not a usable {expected} checkpoint: \
             {reason}; it was deleted and no hash was recorded — `vpipe weights fetch {name}` \
             downloads it again, or put a good copy at {}",
            path.display()
        )
    } else {
        format!(
            "{name}: {} is not a usable {expected} checkpoint: {reason}; no hash is recorded \
             for it — delete it and run `vpipe weights fetch {name}` (from {url}), or put a \
             good copy there",
            path.display()
        )
    }
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

impl From<vpipe_io::IoError> for WeightsError {
    fn from(e: vpipe_io::IoError) -> Self {
        WeightsError::Checkpoint(e.into())
    }
}

/// Result with [`WeightsError`].
pub type Result<T> = std::result::Result<T, WeightsError>;
