//! Errors of pipeline files, model building and runs.

use std::fmt;
use std::path::PathBuf;

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
    /// A model failed to run.
    #[error(transparent)]
    Model(#[from] vpipe_backbone::BackboneError),
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

/// The name in `known` closest to `word` by edit distance, if it is close enough to
/// be a likely typo.
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, k)| *d <= (k.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance between two strings, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names() {
        let known = ["conf_threshold", "nms_iou", "top_k", "max_detections"];
        assert_eq!(closest("conf_treshold", known), Some("conf_threshold"));
        assert_eq!(closest("topk", known), Some("top_k"));
        assert_eq!(closest("colour", known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
