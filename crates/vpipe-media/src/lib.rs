//! Media input and preprocessing.
//!
//! - [`image_io`]: decodes still images into RGB8 frames.
//! - [`resize`]: bit-exact reimplementations of Pillow's and PyTorch's uint8 resizes.
//! - [`preprocess`]: the named preprocessing presets of each checkpoint source.

pub mod error;
pub mod image_io;
pub mod preprocess;
pub mod resize;

pub use error::{MediaError, Result};
pub use image_io::{Frame, load_image};
pub use preprocess::{Preprocess, PreprocessPreset};
