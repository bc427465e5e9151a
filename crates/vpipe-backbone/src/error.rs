//! The error type of `vpipe-backbone`.

/// Errors raised while building a backbone from a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// Reading the checkpoint file failed.
    #[error(transparent)]
    Core(#[from] vpipe_io::IoError),
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("{file}: missing tensor '{key}' (expected shape {expected:?})")]
    MissingTensor {
        /// The checkpoint file.
        file: String,
        /// The tensor name, in the checkpoint's own naming.
        key: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
    },
    /// A tensor in the checkpoint has a shape other than the architecture's.
    #[error("{file}: tensor '{key}' has shape {found:?}, the architecture needs {expected:?}")]
    ShapeMismatch {
        /// The checkpoint file.
        file: String,
        /// The tensor name, in the checkpoint's own naming.
        key: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The shape found in the file.
        found: Vec<usize>,
    },
    /// The checkpoint holds tensors the architecture has no place for.
    #[error("{file}: {count} unexpected tensor(s), first '{first}' with shape {shape:?}")]
    UnexpectedTensors {
        /// The checkpoint file.
        file: String,
        /// How many tensors were not used.
        count: usize,
        /// The first unused tensor name.
        first: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// The checkpoint is not a MobileViT v1 checkpoint of a known layout or size.
    #[error("{file}: {reason}")]
    Unrecognised {
        /// The checkpoint file.
        file: String,
        /// Why it was not recognised.
        reason: String,
    },
    /// A trainable parameter or its gradient could not be read back to host memory.
    #[error("parameter '{name}': cannot read it back ({problem})")]
    ReadBack {
        /// The parameter's canonical name.
        name: String,
        /// What went wrong.
        problem: String,
    },
    /// An input tensor does not fit the network.
    #[error("input: {0}")]
    Input(String),
}

/// Result alias of `vpipe-backbone`.
pub type Result<T> = std::result::Result<T, BackboneError>;
