//! The metrics' errors.

use std::path::PathBuf;

/// An evaluation that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A dataset could not be read.
    #[error(transparent)]
    Data(#[from] vpipe_data::DataError),
    /// A file could not be read.
    #[error("{}: cannot read: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// A results file is not what its format requires (the message says where).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where in the file.
        message: String,
    },
    /// A class index outside the classes evaluated.
    #[error("class index {value} is out of range: there are {classes} classes")]
    ClassOutOfRange {
        /// The index found.
        value: usize,
        /// The number of classes.
        classes: usize,
    },
    /// A classification prediction that ranks no class.
    #[error("a prediction ranks no class")]
    EmptyPrediction,
    /// Prediction and ground truth of different sizes.
    #[error("the prediction has {prediction} values but the ground truth {truth}")]
    SizeMismatch {
        /// Values in the prediction.
        prediction: usize,
        /// Values in the ground truth.
        truth: usize,
    },
    /// A plot could not be drawn or written.
    #[error("{}: cannot draw the plot: {message}", path.display())]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}
