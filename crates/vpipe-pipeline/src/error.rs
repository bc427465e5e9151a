//! Errors of pipeline files, model building and runs.

use std::fmt;
use std::path::PathBuf;

pub use vpipe_core::suggest::closest;

/// A problem in a pipeline file, with where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The pipeline file.
    pub file: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
    /// Key path, e.g. `heads[1].options.conf_threshold` (empty for the whole file).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it, e.g. "did you mean `conf_threshold`?".
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// Errors of the pipeline crate.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The pipeline file has a problem.
    #[error("{0}")]
    Config(Box<ConfigError>),
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// An input could not be opened or decoded.
    #[error("{input}: {message}")]
    Input {
        /// The input (file, URL or camera).
        input: String,
        /// What went wrong.
        message: String,
    },
    /// An output could not be written.
    #[error("{output}: {message}")]
    Output {
        /// The output file.
        output: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A head's tracker could not follow its results.
    #[error("head '{head}': {message}")]
    Tracking {
        /// The head.
        head: String,
        /// What went wrong.
        message: String,
    },
    /// A model failed to run.
    #[error(transparent)]
    Model(#[from] vpipe_backbone::BackboneError),
    /// A head failed to run or post-process.
    #[error(transparent)]
    Head(#[from] vpipe_heads::HeadError),
    /// Preprocessing failed.
    #[error(transparent)]
    Media(#[from] vpipe_media::MediaError),
}

impl From<ConfigError> for PipelineError {
    fn from(e: ConfigError) -> Self {
        PipelineError::Config(Box::new(e))
    }
}

/// Result with [`PipelineError`].
pub type Result<T> = std::result::Result<T, PipelineError>;
