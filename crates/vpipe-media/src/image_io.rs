//! Still-image decoding.

use std::path::Path;

use vpipe_core::pixel::{ChannelOrder, swap_red_blue};

use crate::error::{MediaError, Result};

/// An 8-bit colour image, rows top to bottom, pixels interleaved: RGB for decoded
/// stills, BGR for video frames (as OpenCV decodes them, which saves two full-frame
/// channel swaps per frame). [`Frame::order`] says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes, three channels per pixel in `order`.
    pub data: Vec<u8>,
    /// Channel order of `data`.
    pub order: ChannelOrder,
}

impl Frame {
    /// Wraps an RGB8 buffer; fails if its length does not match the size.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        Self::with_order(width, height, data, ChannelOrder::Rgb)
    }

    /// Wraps a buffer of 3-channel pixels in `order`; fails if its length does not
    /// match the size.
    pub fn with_order(
        width: usize,
        height: usize,
        data: Vec<u8>,
        order: ChannelOrder,
    ) -> Result<Self> {
        if width == 0 || height == 0 || data.len() != width * height * 3 {
            return Err(MediaError::Preprocess(format!(
                "a {width}x{height} frame needs {} bytes, got {}",
                width * height * 3,
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
            order,
        })
    }

    /// The frame with its channels in `order` (swapped when they are not).
    pub fn into_order(self, order: ChannelOrder) -> Frame {
        if self.order == order {
            return self;
        }
        let mut data = vec![0u8; self.data.len()];
        swap_red_blue(&mut data, &self.data, 3);
        Frame {
            data,
            order,
            ..self
        }
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
