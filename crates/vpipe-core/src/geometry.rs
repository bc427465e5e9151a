//! Geometry shared by preprocessing and post-processing.

/// Where the network input lies in the original image: maps network-input pixel
/// coordinates back to original-image pixels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct InputTransform {
    /// Original image width.
    pub src_width: usize,
    /// Original image height.
    pub src_height: usize,
    /// Resized width (before cropping).
    pub resized_width: usize,
    /// Resized height (before cropping).
    pub resized_height: usize,
    /// Crop offset `(left, top)` in resized pixels.
    pub crop_offset: (usize, usize),
    /// Network input `(width, height)`.
    pub input_size: (usize, usize),
}

impl InputTransform {
    /// Maps a point in network-input pixels to original-image pixels.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = self.src_width as f32 / self.resized_width as f32;
        let sy = self.src_height as f32 / self.resized_height as f32;
        (
            (x + self.crop_offset.0 as f32) * sx,
            (y + self.crop_offset.1 as f32) * sy,
        )
    }

    /// Maps a box `[x1, y1, x2, y2]` in network-input pixels to original-image
    /// pixels, clipped to the image.
    pub fn box_to_source(&self, b: [f32; 4]) -> [f32; 4] {
        let (x1, y1) = self.to_source(b[0], b[1]);
        let (x2, y2) = self.to_source(b[2], b[3]);
        let (w, h) = (self.src_width as f32, self.src_height as f32);
        [
            x1.clamp(0.0, w),
            y1.clamp(0.0, h),
            x2.clamp(0.0, w),
            y2.clamp(0.0, h),
        ]
    }

    /// The identity mapping for an input used as it is.
    pub fn identity(width: usize, height: usize) -> Self {
        Self {
            src_width: width,
            src_height: height,
            resized_width: width,
            resized_height: height,
            crop_offset: (0, 0),
            input_size: (width, height),
        }
    }
}
