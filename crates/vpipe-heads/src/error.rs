//! The error type of `vpipe-heads`: what can go wrong building a head, running it
//! and reading its outputs.

use vpipe_backbone::BackboneError;

/// Errors of heads and of checkpoint-to-model assembly.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The weights or the backbone: a checkpoint that cannot be read or recognised,
    /// or a tensor that is missing, misshapen or unused.
    #[error(transparent)]
    Weights(#[from] BackboneError),
    /// A head option's value is not one the head accepts.
    #[error("head option '{key}': {message}")]
    Option {
        /// The option's path below the head's `options` (`conf_threshold`, `a.b`).
        key: String,
        /// What is wrong, in words (`expected a whole number ≥ 1`).
        message: String,
        /// What would fix it (the value given and the default), if known.
        help: Option<String>,
    },
    /// An option the head's options type does not have.
    #[error("unknown option '{key}' for the {head} head ({hint})")]
    UnknownOption {
        /// The option as given.
        key: String,
        /// The head type.
        head: String,
        /// The closest option the head has, or the options it has, in words.
        hint: String,
    },
    /// No head type of that name is registered.
    #[error("unknown head type '{name}' (known: {known})")]
    UnknownType {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// A head type of that name is registered already.
    #[error("head type '{0}' is already registered")]
    AlreadyRegistered(String),
    /// A raw output a head reads is missing or does not have the expected shape.
    #[error("raw output '{name}': {problem}")]
    RawOutput {
        /// The output's name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A checkpoint that does not fit what was asked of it (its task, an output
    /// stride for a task that has none).
    #[error("{0}")]
    Model(String),
    /// A head's own failure, in its words (heads from other crates).
    #[error("{0}")]
    Head(String),
}

/// Result alias of `vpipe-heads`.
pub type Result<T> = std::result::Result<T, HeadError>;
