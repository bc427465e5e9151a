//! Media input and preprocessing.
//!
//! - [`image_io`]: frames, and still images decoded into RGB8 frames.
//! - [`resize`]: bit-exact reimplementations of Pillow's, PyTorch's and OpenCV's
//!   (bilinear) uint8 resizes.
//! - [`preprocess`]: the named preprocessing presets of each checkpoint source.
//! - [`video`]: video files, streams and cameras through OpenCV (the `video` cargo
//!   feature, on by default; without it, still images only and no OpenCV).

pub mod error;
pub mod image_io;
pub mod preprocess;
pub mod resize;
pub mod video;

pub use error::{MediaError, Result};
pub use image_io::{Frame, load_image};
pub use preprocess::{Preprocess, PreprocessPreset, PresetRecipe, UnknownPreset};
pub use video::{FramePool, VideoInput, VideoReader, VideoWriter};
pub use vpipe_core::pixel::ChannelOrder;
