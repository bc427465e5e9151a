//! Media input: frames, still images and videos (preprocessing them for the
//! networks is `vpipe-preprocess`).
//!
//! - [`image_io`]: frames, and still images decoded into RGB8 frames.
//! - [`video`]: video files, streams and cameras through OpenCV (the `video` cargo
//!   feature, on by default; without it, still images only and no OpenCV).

pub mod error;
pub mod image_io;
pub mod video;

pub use error::{MediaError, Result};
pub use image_io::{Frame, load_image};
pub use video::{FramePool, VideoInput, VideoReader, VideoWriter};
pub use vpipe_core::pixel::ChannelOrder;
