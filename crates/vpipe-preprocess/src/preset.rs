//! Preprocessing presets that reproduce each checkpoint source exactly.
//!
//! | preset | reproduces | resize | crop | channels | scaling |
//! |---|---|---|---|---|---|
//! | `cvnets-cls` | ml-cvnets v0.1 ImageNet evaluation | shorter side 288, `cv2.resize` `INTER_LINEAR` | centre 256, `(size - 256) // 2` | BGR | x / 255 |
//! | `cvnets-ssd` | ml-cvnets v0.1 COCO SSD evaluation | exactly 320x320, `cv2.resize` `INTER_LINEAR` | none | BGR | x / 255 |
//! | `cvnets-seg` | ml-cvnets v0.1 PASCAL VOC evaluation | exactly 512x512, `cv2.resize` `INTER_LINEAR` | none | BGR | x / 255 |
//! | `timm` | timm `mobilevit_*` evaluation transform | shorter side 284 (256 / 0.9), bicubic, Pillow | centre 256 | RGB | x / 255 |
//! | `hf-cls` | transformers `MobileViTImageProcessor`, `apple/mobilevit-*` | shorter side 288, bilinear, PyTorch uint8 antialias | centre 256 | BGR | x * (1/255) |
//! | `hf-seg` | the same, `apple/deeplabv3-mobilevit-*` | shorter side 544, bilinear, PyTorch uint8 antialias | centre 512 | BGR | x * (1/255) |
//!
//! The MobileViT v1 weights were trained with ml-cvnets v0.1 (tag `cvnets-v0.1`),
//! which reads images with `cv2.imread` (BGR) and resizes them with `cv2.resize`
//! (`data/datasets/dataset_base.py` `read_image`; `data/transforms/image.py`
//! `_resize_fn`, `Resize`, `CenterCrop`, `NumpyToTensor`; the `validation_transforms`
//! of `data/datasets/classification/imagenet.py`, `detection/coco.py` and
//! `segmentation/pascal_voc.py`). The `cvnets-*` presets reproduce OpenCV's
//! `INTER_LINEAR` resize bit for bit ([`ResizeKernel::OpenCv`] with
//! [`Filter::Bilinear`], reimplemented in Rust: no OpenCV is needed for still
//! images). ml-cvnets v0.2 and later read with PIL (RGB) instead;
//! vpipe has no preset for that, since no MobileViT v1 weights were trained with it.

use std::mem::MaybeUninit;

use burn::tensor::{Device, Tensor, TensorData};

use vpipe_media::{Frame, MediaError, Result};

use crate::resize::{Filter, ResizeKernel, resize_rgb8};
pub use vpipe_core::geometry::InputTransform;
pub use vpipe_core::pixel::ChannelOrder;
pub use vpipe_core::preset::{PreprocessPreset, UnknownPreset};

/// How the image is resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// The shorter side becomes `n`; the longer one `int(n * long / short)`.
    ShorterSide(usize),
    /// Exactly `width x height`, ignoring the aspect ratio.
    Exact {
        /// Output width.
        width: usize,
        /// Output height.
        height: usize,
    },
}

/// How the centre crop's offset is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropRounding {
    /// `(size - crop) // 2`, as ml-cvnets and transformers' image processors.
    Floor,
    /// `int(round((size - crop) / 2))` with round-half-to-even, as torchvision's
    /// `CenterCrop` (timm).
    HalfEven,
}

/// How 8-bit values become floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scaling {
    /// `x / 255` (torchvision `ToTensor`).
    Divide255,
    /// `x * float32(1 / 255)` (Hugging Face `rescale`).
    MultiplyReciprocal,
}

/// A complete preprocessing recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Resize rule.
    pub resize: Resize,
    /// Interpolation filter.
    pub filter: Filter,
    /// Whose uint8 arithmetic the resize reproduces.
    pub kernel: ResizeKernel,
    /// Centre crop `(width, height)`, if any.
    pub crop: Option<(usize, usize)>,
    /// Rounding of the crop offset.
    pub crop_rounding: CropRounding,
    /// Channel order.
    pub channels: ChannelOrder,
    /// Scaling to floats.
    pub scaling: Scaling,
    /// Per-channel mean subtracted after scaling (in network channel order).
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after the mean.
    pub std: [f32; 3],
}

/// The recipe of each named preset: `PreprocessPreset::CvnetsSsd.recipe()`.
pub trait PresetRecipe {
    /// The preset's resize, crop, channel order and scaling.
    fn recipe(self) -> Preprocess;
}

impl PresetRecipe for PreprocessPreset {
    fn recipe(self) -> Preprocess {
        // ml-cvnets v0.1: cv2.imread (BGR), cv2.resize INTER_LINEAR, x / 255.
        let cvnets = Preprocess {
            resize: Resize::ShorterSide(288),
            filter: Filter::Bilinear,
            kernel: ResizeKernel::OpenCv,
            crop: Some((256, 256)),
            crop_rounding: CropRounding::Floor,
            channels: ChannelOrder::Bgr,
            scaling: Scaling::Divide255,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let pillow = Preprocess {
            kernel: ResizeKernel::Pillow,
            channels: ChannelOrder::Rgb,
            ..cvnets.clone()
        };
        // transformers' torchvision backend crops at `int((size - crop) / 2.0)`.
        let hf = Preprocess {
            kernel: ResizeKernel::TorchAntialias,
            channels: ChannelOrder::Bgr,
            scaling: Scaling::MultiplyReciprocal,
            ..pillow.clone()
        };
        match self {
            PreprocessPreset::Timm => Preprocess {
                resize: Resize::ShorterSide(284),
                filter: Filter::Bicubic,
                crop_rounding: CropRounding::HalfEven,
                ..pillow
            },
            PreprocessPreset::HfCls => hf,
            PreprocessPreset::HfSeg => Preprocess {
                resize: Resize::ShorterSide(544),
                crop: Some((512, 512)),
                ..hf
            },
            PreprocessPreset::CvnetsSsd => Preprocess {
                resize: Resize::Exact {
                    width: 320,
                    height: 320,
                },
                crop: None,
                ..cvnets
            },
            PreprocessPreset::CvnetsSeg => Preprocess {
                resize: Resize::Exact {
                    width: 512,
                    height: 512,
                },
                crop: None,
                ..cvnets
            },
            PreprocessPreset::CvnetsCls => cvnets,
        }
    }
}

impl Preprocess {
    /// The network input size `(width, height)` for an image of `width x height`.
    pub fn plan(&self, width: usize, height: usize) -> Result<InputTransform> {
        if width == 0 || height == 0 {
            return Err(MediaError::Preprocess("the image is empty".into()));
        }
        let (rw, rh) = match self.resize {
            Resize::ShorterSide(n) => {
                if width <= height {
                    (n, (n as f64 * height as f64 / width as f64) as usize)
                } else {
                    ((n as f64 * width as f64 / height as f64) as usize, n)
                }
            }
            Resize::Exact { width, height } => (width, height),
        };
        if rw == 0 || rh == 0 {
            return Err(MediaError::Preprocess(format!(
                "resizing {width}x{height} gives an empty image"
            )));
        }
        let (crop_offset, input_size) = match self.crop {
            None => ((0, 0), (rw, rh)),
            Some((cw, ch)) => {
                if cw > rw || ch > rh {
                    return Err(MediaError::Preprocess(format!(
                        "centre crop {cw}x{ch} is larger than the resized image {rw}x{rh}"
                    )));
                }
                let off = |size: usize, crop: usize| match self.crop_rounding {
                    CropRounding::Floor => (size - crop) / 2,
                    CropRounding::HalfEven => round_half_even((size - crop) as f64 / 2.0),
                };
                ((off(rw, cw), off(rh, ch)), (cw, ch))
            }
        };
        Ok(InputTransform {
            src_width: width,
            src_height: height,
            resized_width: rw,
            resized_height: rh,
            crop_offset,
            input_size,
        })
    }

    /// Resizes and crops a frame into the network's 8-bit input image (pixels in
    /// the frame's channel order).
    pub fn resize_and_crop(&self, frame: &Frame) -> Result<(Vec<u8>, InputTransform)> {
        let t = self.plan(frame.width, frame.height)?;
        let resized = resize_rgb8(
            &frame.data,
            frame.width,
            frame.height,
            t.resized_width,
            t.resized_height,
            self.filter,
            self.kernel,
        );
        if resized.len() != t.resized_width * t.resized_height * 3 {
            return Err(MediaError::Preprocess(format!(
                "cannot resize {}x{} to {}x{} with {:?} {:?}",
                frame.width,
                frame.height,
                t.resized_width,
                t.resized_height,
                self.kernel,
                self.filter
            )));
        }
        let (cw, ch) = t.input_size;
        if (cw, ch) == (t.resized_width, t.resized_height) {
            return Ok((resized, t));
        }
        let (x0, y0) = t.crop_offset;
        let row = t.resized_width * 3;
        let mut out = Vec::with_capacity(cw * ch * 3);
        for y in y0..y0 + ch {
            out.extend_from_slice(&resized[y * row + x0 * 3..y * row + (x0 + cw) * 3]);
        }
        Ok((out, t))
    }

    /// Converts an RGB8 network image into planar floats `[3 * h * w]` in network
    /// channel order, scaled and normalised.
    pub fn to_planar(&self, rgb: &[u8], width: usize, height: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(3 * width * height);
        self.append_planar(rgb, ChannelOrder::Rgb, width, height, &mut out);
        out
    }

    /// [`Preprocess::to_planar`] of pixels in `order`, appended to `out` (so that a
    /// batch is built in place).
    fn append_planar(
        &self,
        pixels: &[u8],
        order: ChannelOrder,
        width: usize,
        height: usize,
        out: &mut Vec<f32>,
    ) {
        let plane = width * height;
        let pixels = &pixels[..3 * plane];
        out.reserve(3 * plane);
        let (first, rest) = out.spare_capacity_mut()[..3 * plane].split_at_mut(plane);
        let (second, third) = rest.split_at_mut(plane);
        let source = [0, 1, 2].map(|c| self.channels.index_in(c, order));
        deinterleave_scaled(
            [first, second, third],
            pixels,
            source,
            self.scaling,
            self.mean,
            self.std,
        );
        // SAFETY: `deinterleave_scaled` wrote every element of the three planes
        // (each has one element per pixel of `pixels`), which were the `3 * plane`
        // reserved elements after `out.len()`.
        unsafe { out.set_len(out.len() + 3 * plane) };
    }

    /// The whole recipe: frame in, planar network input and its geometry out.
    pub fn apply(&self, frame: &Frame) -> Result<(Vec<f32>, InputTransform)> {
        let (pixels, t) = self.resize_and_crop(frame)?;
        let (w, h) = t.input_size;
        let mut planar = Vec::with_capacity(3 * w * h);
        self.append_planar(&pixels, frame.order, w, h, &mut planar);
        Ok((planar, t))
    }

    /// Preprocesses a batch of frames into one tensor `[batch, 3, h, w]`. All frames
    /// must give the same input size.
    pub fn batch(
        &self,
        frames: &[&Frame],
        device: &Device,
    ) -> Result<(Tensor<4>, Vec<InputTransform>)> {
        let mut data = Vec::new();
        let mut transforms = Vec::with_capacity(frames.len());
        for f in frames {
            let (rgb, t) = self.resize_and_crop(f)?;
            if let Some(first) = transforms.first().map(|t: &InputTransform| t.input_size)
                && first != t.input_size
            {
                return Err(MediaError::Preprocess(format!(
                    "frames of one batch give different input sizes: {first:?} and {:?}",
                    t.input_size
                )));
            }
            if data.is_empty() {
                data.reserve_exact(frames.len() * 3 * t.input_size.0 * t.input_size.1);
            }
            self.append_planar(&rgb, f.order, t.input_size.0, t.input_size.1, &mut data);
            transforms.push(t);
        }
        let (w, h) = transforms
            .first()
            .map(|t| t.input_size)
            .ok_or_else(|| MediaError::Preprocess("empty batch".into()))?;
        let tensor = Tensor::from_data(TensorData::new(data, [frames.len(), 3, h, w]), device);
        Ok((tensor, transforms))
    }
}

/// `1 / 255` in `f32`, the factor of [`Scaling::MultiplyReciprocal`] and of
/// [`div255`]'s first estimate.
const RECIPROCAL: f32 = 1.0 / 255.0;

vpipe_simd::simd_fn! {
    /// Splits interleaved 8-bit pixels into three float planes: plane `c` takes
    /// source channel `order[c]`, as `(v * scale - mean[c]) / std[c]`, where
    /// `v * scale` is `v / 255` or `v * (1 / 255)` as `scaling` says, exactly as the
    /// reference computes it (the normalisation is skipped for a channel with mean 0
    /// and std 1, as in the references). Writes every element of the planes when
    /// `pixels` holds one pixel per element.
    fn deinterleave_scaled(
        planes: [&mut [MaybeUninit<f32>]; 3],
        pixels: &[u8],
        order: [usize; 3],
        scaling: Scaling,
        mean: [f32; 3],
        std: [f32; 3],
    ) {
        for (c, plane) in planes.into_iter().enumerate() {
            let src = order[c];
            let values = plane.iter_mut().zip(pixels.chunks_exact(3));
            let (m, s) = (mean[c], std[c]);
            match (scaling, m == 0.0 && s == 1.0) {
                (Scaling::Divide255, true) => values.for_each(|(d, p)| {
                    d.write(div255(f32::from(p[src])));
                }),
                (Scaling::MultiplyReciprocal, true) => values.for_each(|(d, p)| {
                    d.write(f32::from(p[src]) * RECIPROCAL);
                }),
                (Scaling::Divide255, false) => values.for_each(|(d, p)| {
                    d.write((div255(f32::from(p[src])) - m) / s);
                }),
                (Scaling::MultiplyReciprocal, false) => values.for_each(|(d, p)| {
                    d.write((f32::from(p[src]) * RECIPROCAL - m) / s);
                }),
            }
        }
    }
}

/// `v / 255` for a byte value `v`, without a division: the product with the
/// reciprocal, corrected once by its residual (computed exactly by a fused
/// multiply-add). A test checks all 256 values against the division, bit for bit.
#[inline(always)]
fn div255(v: f32) -> f32 {
    let q = v * RECIPROCAL;
    let residual = (-q).mul_add(255.0, v);
    residual.mul_add(RECIPROCAL, q)
}

fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    };
    r.max(0.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_values_divide_by_255_exactly_without_a_division() {
        for v in 0..=255u8 {
            let v = f32::from(v);
            assert_eq!(div255(v).to_bits(), (v / 255.0).to_bits(), "{v}");
        }
    }

    #[test]
    fn plans_follow_each_source() {
        let t = PreprocessPreset::Timm.recipe().plan(640, 480).unwrap();
        assert_eq!((t.resized_width, t.resized_height), (378, 284));
        assert_eq!(t.crop_offset, (61, 14));
        let c = PreprocessPreset::CvnetsCls.recipe().plan(535, 426).unwrap();
        assert_eq!((c.resized_width, c.resized_height), (361, 288));
        assert_eq!(c.crop_offset, (52, 16));
        let s = PreprocessPreset::CvnetsSsd.recipe().plan(768, 576).unwrap();
        assert_eq!(s.input_size, (320, 320));
        let (x, y) = s.to_source(160.0, 320.0);
        assert_eq!((x, y), (384.0, 576.0));
        assert!(PreprocessPreset::HfCls.recipe().plan(0, 5).is_err());
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.5), 4);
        assert_eq!(round_half_even(1.0), 1);
        assert_eq!(
            "hf-seg".parse::<PreprocessPreset>(),
            Ok(PreprocessPreset::HfSeg)
        );
        assert!("hf".parse::<PreprocessPreset>().is_err());
    }

    /// A BGR frame gives the network input of the same frame in RGB.
    #[test]
    fn channel_order_of_the_frame_does_not_change_the_input() {
        let data: Vec<u8> = (0..97 * 61 * 3).map(|i| (i * 31 % 251) as u8).collect();
        let rgb = Frame::new(97, 61, data).unwrap();
        let bgr = rgb.clone().into_order(ChannelOrder::Bgr);
        for preset in PreprocessPreset::ALL {
            let recipe = preset.recipe();
            assert_eq!(
                recipe.apply(&rgb).unwrap(),
                recipe.apply(&bgr).unwrap(),
                "{preset}"
            );
        }
    }

    #[test]
    fn a_single_pixel_image_is_handled() {
        let f = Frame::new(1, 1, vec![10, 20, 30]).unwrap();
        let (planar, t) = PreprocessPreset::HfCls.recipe().apply(&f).unwrap();
        assert_eq!(t.input_size, (256, 256));
        assert_eq!(planar.len(), 3 * 256 * 256);
        assert!((planar[0] - 30.0 / 255.0).abs() < 1e-6);
    }
}
