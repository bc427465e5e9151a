//! Still-image decoding.

use std::path::Path;

use crate::error::{MediaError, Result};

/// An RGB8 image, rows top to bottom, pixels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes, R G B per pixel.
    pub data: Vec<u8>,
}

impl Frame {
    /// Wraps an RGB8 buffer; fails if its length does not match the size.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 || data.len() != width * height * 3 {
            return Err(MediaError::Preprocess(format!(
                "an RGB frame of {width}x{height} needs {} bytes, got {}",
                width * height * 3,
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }
}

/// Decodes an image file (PNG, JPEG, BMP, WebP, TIFF) into RGB8. Alpha is dropped
/// and grey images are expanded, as PIL's `convert("RGB")` does.
pub fn load_image(path: &Path) -> Result<Frame> {
    let bytes = std::fs::read(path).map_err(|cause| MediaError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let img = image::load_from_memory(&bytes).map_err(|e| MediaError::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let rgb = img.into_rgb8();
    let (w, h) = rgb.dimensions();
    Frame::new(w as usize, h as usize, rgb.into_raw()).map_err(|_| MediaError::Decode {
        path: path.to_path_buf(),
        reason: "the image is empty".into(),
    })
}
