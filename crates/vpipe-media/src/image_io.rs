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

/// Decodes an image file (PNG, JPEG, BMP, WebP, TIFF) into RGB8, as
/// `cv2.imread(path, cv2.IMREAD_COLOR)` and PIL's `convert("RGB")` do: alpha is
/// dropped (not blended), grey images are expanded to three equal channels, and
/// 16-bit samples keep their high byte (OpenCV's `png_set_strip_16`; Pillow's
/// 16-bit colour PNGs alike). Lossless files decode to the same pixels as in
/// OpenCV and Pillow. JPEG is decoded by the `image` crate (zune-jpeg), whose
/// inverse DCT and chroma upsampling may differ from libjpeg-turbo's (used by
/// OpenCV and Pillow) by a unit in some pixels.
pub fn load_image(path: &Path) -> Result<Frame> {
    let bytes = std::fs::read(path).map_err(|cause| MediaError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let img = image::load_from_memory(&bytes).map_err(|e| MediaError::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if is_truncated_jpeg(&bytes) {
        tracing::warn!(
            "{}: the JPEG data ends before its end-of-image marker (a truncated file?); \
             using the part that decodes",
            path.display()
        );
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data = match img {
        image::DynamicImage::ImageLuma16(i) => high_bytes::<1>(i.as_raw()),
        image::DynamicImage::ImageLumaA16(i) => high_bytes::<2>(i.as_raw()),
        image::DynamicImage::ImageRgb16(i) => high_bytes::<3>(i.as_raw()),
        image::DynamicImage::ImageRgba16(i) => high_bytes::<4>(i.as_raw()),
        other => other.into_rgb8().into_raw(),
    };
    Frame::new(w, h, data).map_err(|_| MediaError::Decode {
        path: path.to_path_buf(),
        reason: "the image is empty".into(),
    })
}

/// Whether `bytes` are a JPEG file (SOI marker) whose data does not end with the
/// end-of-image marker `FF D9` (trailing padding allowed): the decoder then fills in
/// what is missing without an error.
fn is_truncated_jpeg(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let end = bytes
        .iter()
        .rposition(|&b| b != 0 && b != b'\n' && b != b'\r' && b != b' ')
        .map_or(0, |i| i + 1);
    !bytes[..end].ends_with(&[0xFF, 0xD9])
}

/// RGB8 pixels from 16-bit pixels of `N` channels (grey, grey + alpha, RGB or
/// RGBA): the high byte of each colour sample, grey repeated, alpha dropped.
fn high_bytes<const N: usize>(samples: &[u16]) -> Vec<u8> {
    let (pixels, _) = samples.as_chunks::<N>();
    let byte = |v: u16| (v >> 8) as u8;
    pixels
        .iter()
        .flat_map(|p| {
            if N < 3 {
                [byte(p[0]); 3]
            } else {
                [byte(p[0]), byte(p[1]), byte(p[2])]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jpeg_cut_short_is_recognised() {
        let img =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]));
        let mut full = std::io::Cursor::new(Vec::new());
        img.write_to(&mut full, image::ImageFormat::Jpeg).unwrap();
        let full = full.into_inner();
        assert!(!is_truncated_jpeg(&full));
        let mut padded = full.clone();
        padded.extend_from_slice(b"\0\0\n");
        assert!(!is_truncated_jpeg(&padded));
        assert!(is_truncated_jpeg(&full[..full.len() * 2 / 3]));
        assert!(!is_truncated_jpeg(b"\x89PNG\r\n\x1a\n"));
    }

    #[test]
    fn sixteen_bit_samples_keep_their_high_byte() {
        assert_eq!(
            high_bytes::<1>(&[0x12ff, 0xff00]),
            [0x12; 3]
                .iter()
                .chain(&[0xff; 3])
                .copied()
                .collect::<Vec<u8>>()
        );
        assert_eq!(
            high_bytes::<4>(&[0x0100, 0x0200, 0x0300, 0xffff]),
            vec![1, 2, 3]
        );
        assert_eq!(high_bytes::<2>(&[0x8000, 0x0000]), vec![0x80; 3]);
    }
}
