//! Video files, network streams and cameras.
//!
//! With the `video` cargo feature (on by default) they are read and written through
//! OpenCV ([`VideoReader`], [`VideoWriter`]). Without it vpipe needs no OpenCV and
//! handles still images only: opening a video, stream or camera is an error that
//! says so.

use std::path::PathBuf;

#[cfg(feature = "video")]
mod opencv_io;
#[cfg(feature = "video")]
pub use opencv_io::{VideoReader, VideoWriter};

#[cfg(not(feature = "video"))]
mod without_video;
#[cfg(not(feature = "video"))]
pub use without_video::{VideoReader, VideoWriter};

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoInput {
    /// A video file (mp4, avi, mkv, ...).
    File(PathBuf),
    /// A network stream (`rtsp://`, `http(s)://`, ...).
    Url(String),
    /// A camera, by index.
    Camera(i32),
}

impl VideoInput {
    /// Whether frames arrive in real time (streams and cameras).
    pub fn is_live(&self) -> bool {
        !matches!(self, VideoInput::File(_))
    }
}

impl std::fmt::Display for VideoInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VideoInput::File(p) => write!(f, "{}", p.display()),
            VideoInput::Url(u) => write!(f, "{u}"),
            VideoInput::Camera(i) => write!(f, "camera {i}"),
        }
    }
}

/// Frame buffers handed back after use, so that [`VideoReader`] decodes into them
/// instead of allocating (and zero-filling) a buffer per frame. Cloning gives
/// another handle to the same pool.
#[derive(Debug, Clone, Default)]
pub struct FramePool(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl FramePool {
    /// Buffers kept; more are freed.
    const KEPT: usize = 16;

    /// Hands a frame's buffer back for a later frame.
    pub fn give(&self, buffer: Vec<u8>) {
        if buffer.is_empty() {
            return;
        }
        if let Ok(mut kept) = self.0.lock()
            && kept.len() < Self::KEPT
        {
            kept.push(buffer);
        }
    }

    /// A buffer of `len` bytes (its contents are stale), from the pool or new.
    #[cfg_attr(not(feature = "video"), allow(dead_code))]
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        let pooled = self.0.lock().ok().and_then(|mut kept| kept.pop());
        match pooled {
            Some(b) if b.len() == len => b,
            _ => vec![0; len],
        }
    }
}
