//! Training augmentation: a random horizontal flip, scale jitter and a random crop,
//! applied alike to an image, its boxes and its class mask, ending at the network's
//! input size with the preprocessing preset's own resize.
//!
//! Without randomness ([`Augment::none`]) the image is exactly what the preset makes
//! of it at inference ([`Preprocess::resize_and_crop`]), so a head trained without
//! augmentation sees the inputs it will run on.

use rand::Rng;
use serde::{Deserialize, Serialize};
use vpipe_media::Frame;
use vpipe_preprocess::resize::resize_rgb8;
use vpipe_preprocess::{ChannelOrder, Preprocess};

/// Mask value of pixels that no loss counts (padding, crowd regions, borders).
pub const IGNORE_INDEX: u8 = 255;

/// One training image with its targets, in the image's pixel coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The image (RGB).
    pub image: Frame,
    /// Boxes `[x1, y1, x2, y2]` in pixels.
    pub boxes: Vec<[f32; 4]>,
    /// The class of each box.
    pub labels: Vec<usize>,
    /// A class index per pixel (`width * height`, rows top to bottom), if any.
    pub mask: Option<Vec<u8>>,
}

/// Which random changes a training image gets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Probability of a horizontal flip.
    pub flip: f32,
    /// Range of the scale factor applied to the preset's resize.
    pub scale: [f32; 2],
    /// Crop at a random place (else at the centre, as the preset does).
    pub random_crop: bool,
}

impl Default for Augment {
    /// Flip half of the images, scale by 0.5 to 2, crop anywhere.
    fn default() -> Self {
        Self {
            flip: 0.5,
            scale: [0.5, 2.0],
            random_crop: true,
        }
    }
}

impl Augment {
    /// No augmentation: the preset's own preprocessing.
    pub fn none() -> Self {
        Self {
            flip: 0.0,
            scale: [1.0, 1.0],
            random_crop: false,
        }
    }

    /// Checks the settings: a probability in [0, 1] and a scale range of positive
    /// numbers, smallest first.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.flip) {
            return Err(format!("flip is a probability, got {}", self.flip));
        }
        let [lo, hi] = self.scale;
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return Err(format!(
                "scale is a range [min, max] of positive numbers, got [{lo}, {hi}]"
            ));
        }
        Ok(())
    }

    /// Flips, scales and crops `sample` (an RGB image) to the network input of
    /// `recipe`: the image resized as the preset resizes it times a random scale,
    /// then cropped (or padded with black, and [`IGNORE_INDEX`] in the mask) to the
    /// input size. Boxes whose centre leaves the crop are dropped, the others
    /// clipped; boxes less than a pixel wide or high are dropped.
    pub fn apply(&self, sample: Sample, recipe: &Preprocess, rng: &mut impl Rng) -> Sample {
        let Sample {
            image,
            mut boxes,
            labels,
            mut mask,
        } = sample;
        let mut image = image.into_order(ChannelOrder::Rgb);
        let (w, h) = (image.width, image.height);
        if self.flip > 0.0 && rng.random::<f32>() < self.flip {
            flip_rows(&mut image.data, w, h, 3);
            if let Some(m) = &mut mask {
                flip_rows(m, w, h, 1);
            }
            for b in &mut boxes {
                *b = [w as f32 - b[2], b[1], w as f32 - b[0], b[3]];
            }
        }
        let plan = recipe
            .plan(w, h)
            .unwrap_or_else(|_| unreachable!("a frame is never empty"));
        let [lo, hi] = self.scale;
        let s = if hi > lo {
            rng.random_range(lo..=hi)
        } else {
            lo
        };
        let scaled = |n: usize| ((n as f32 * s).round() as usize).max(1);
        let (sw, sh) = (scaled(plan.resized_width), scaled(plan.resized_height));
        let resized = resize_rgb8(&image.data, w, h, sw, sh, recipe.filter, recipe.kernel);
        let mask = mask.map(|m| nearest(&m, w, h, sw, sh));
        let (fx, fy) = (sw as f32 / w as f32, sh as f32 / h as f32);
        let (ow, oh) = plan.input_size;
        let offset = |size: usize, out: usize, rng: &mut dyn FnMut(i64, i64) -> i64| {
            let (a, b) = (
                (size as i64 - out as i64).min(0),
                (size as i64 - out as i64).max(0),
            );
            if self.random_crop {
                rng(a, b)
            } else {
                (size as i64 - out as i64).div_euclid(2)
            }
        };
        let mut pick = |a: i64, b: i64| rng.random_range(a..=b);
        let ox = offset(sw, ow, &mut pick);
        let oy = offset(sh, oh, &mut pick);
        let image = Frame::new(ow, oh, crop(&resized, sw, sh, ox, oy, ow, oh, 3, 0))
            .unwrap_or_else(|_| unreachable!("the crop has the input size"));
        let mask = mask.map(|m| crop(&m, sw, sh, ox, oy, ow, oh, 1, IGNORE_INDEX));
        let (mut kept_boxes, mut kept_labels) = (Vec::new(), Vec::new());
        for (b, &label) in boxes.iter().zip(&labels) {
            let b = [
                b[0] * fx - ox as f32,
                b[1] * fy - oy as f32,
                b[2] * fx - ox as f32,
                b[3] * fy - oy as f32,
            ];
            let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
            if !(0.0..ow as f32).contains(&cx) || !(0.0..oh as f32).contains(&cy) {
                continue;
            }
            let b = [
                b[0].clamp(0.0, ow as f32),
                b[1].clamp(0.0, oh as f32),
                b[2].clamp(0.0, ow as f32),
                b[3].clamp(0.0, oh as f32),
            ];
            if b[2] - b[0] >= 1.0 && b[3] - b[1] >= 1.0 {
                kept_boxes.push(b);
                kept_labels.push(label);
            }
        }
        Sample {
            image,
            boxes: kept_boxes,
            labels: kept_labels,
            mask,
        }
    }
}

/// Mirrors each row of an interleaved image with `c` channels.
fn flip_rows(data: &mut [u8], w: usize, h: usize, c: usize) {
    for row in data.chunks_exact_mut(w * c).take(h) {
        for x in 0..w / 2 {
            for k in 0..c {
                row.swap(x * c + k, (w - 1 - x) * c + k);
            }
        }
    }
}

/// Nearest-neighbour resize of a one-channel image, as OpenCV's `INTER_NEAREST`
/// (source index `floor(dst * src / dst_size)`).
fn nearest(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    let xs: Vec<usize> = (0..ow).map(|x| (x * w / ow).min(w - 1)).collect();
    let mut out = Vec::with_capacity(ow * oh);
    for y in 0..oh {
        let row = &src[(y * h / oh).min(h - 1) * w..][..w];
        out.extend(xs.iter().map(|&x| row[x]));
    }
    out
}

/// The `ow x oh` window at `(ox, oy)` of an interleaved `w x h` image with `c`
/// channels; outside the image, `fill`.
#[allow(clippy::too_many_arguments)]
fn crop(
    src: &[u8],
    w: usize,
    h: usize,
    ox: i64,
    oy: i64,
    ow: usize,
    oh: usize,
    c: usize,
    fill: u8,
) -> Vec<u8> {
    let mut out = vec![fill; ow * oh * c];
    // The columns of the window that fall inside the image.
    let x0 = (-ox).clamp(0, ow as i64) as usize;
    let x1 = (w as i64 - ox).clamp(0, ow as i64) as usize;
    if x0 >= x1 {
        return out;
    }
    for y in 0..oh {
        let sy = y as i64 + oy;
        if !(0..h as i64).contains(&sy) {
            continue;
        }
        let sx0 = (x0 as i64 + ox) as usize;
        let src_row = &src[(sy as usize * w + sx0) * c..][..(x1 - x0) * c];
        out[(y * ow + x0) * c..(y * ow + x1) * c].copy_from_slice(src_row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use vpipe_preprocess::{PreprocessPreset, PresetRecipe};

    fn sample(w: usize, h: usize) -> Sample {
        let data = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mask = (0..w * h).map(|i| ((i % w) * 20 / w) as u8).collect();
        Sample {
            image: Frame::new(w, h, data).unwrap(),
            boxes: vec![[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 5.0, 5.0]],
            labels: vec![3, 7],
            mask: Some(mask),
        }
    }

    #[test]
    fn without_randomness_it_is_the_presets_preprocessing() {
        for preset in [PreprocessPreset::CvnetsSsd, PreprocessPreset::CvnetsCls] {
            let recipe = preset.recipe();
            let s = sample(97, 61);
            let (want, t) = recipe.resize_and_crop(&s.image).unwrap();
            let got = Augment::none().apply(s, &recipe, &mut ChaCha8Rng::seed_from_u64(1));
            assert_eq!(got.image.data, want, "{preset:?}");
            assert_eq!((got.image.width, got.image.height), t.input_size);
        }
        // Boxes are mapped as the resize maps pixels (SSD: exact 320x320).
        let recipe = PreprocessPreset::CvnetsSsd.recipe();
        let got =
            Augment::none().apply(sample(160, 80), &recipe, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(
            got.boxes,
            vec![[20.0, 80.0, 100.0, 240.0], [0.0, 0.0, 10.0, 20.0]]
        );
        assert_eq!(got.labels, vec![3, 7]);
    }

    #[test]
    fn a_flip_mirrors_image_boxes_and_mask_alike() {
        let recipe = PreprocessPreset::CvnetsSsd.recipe();
        let flip = Augment {
            flip: 1.0,
            ..Augment::none()
        };
        let s = sample(320, 320);
        let mask = s.mask.clone().unwrap();
        let got = flip.apply(s.clone(), &recipe, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(got.boxes[0], [270.0, 20.0, 310.0, 60.0]);
        let m = got.mask.unwrap();
        assert_eq!(m[0], mask[319]);
        assert_eq!(&got.image.data[..3], &s.image.data[319 * 3..320 * 3]);
    }

    #[test]
    fn scaled_crops_keep_boxes_and_masks_aligned_and_pad_with_ignore() {
        let recipe = PreprocessPreset::CvnetsSsd.recipe();
        let aug = Augment {
            flip: 0.5,
            scale: [0.5, 2.0],
            random_crop: true,
        };
        // A box painted into the mask as class 9 stays under the moved box.
        let (w, h) = (200, 150);
        let mut s = sample(w, h);
        s.boxes = vec![[40.0, 30.0, 120.0, 100.0]];
        s.labels = vec![9];
        let mut m = vec![0u8; w * h];
        for y in 30..100 {
            for x in 40..120 {
                m[y * w + x] = 9;
            }
        }
        s.mask = Some(m);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut padded = false;
        for _ in 0..40 {
            let got = aug.apply(s.clone(), &recipe, &mut rng);
            let m = got.mask.unwrap();
            assert_eq!(m.len(), 320 * 320);
            padded |= m.contains(&IGNORE_INDEX);
            for b in &got.boxes {
                let (cx, cy) = (
                    ((b[0] + b[2]) / 2.0) as usize,
                    ((b[1] + b[3]) / 2.0) as usize,
                );
                assert_eq!(m[cy * 320 + cx], 9, "box {b:?}");
                assert!(b[0] >= 0.0 && b[2] <= 320.0 && b[2] - b[0] >= 1.0);
            }
        }
        assert!(padded, "scales below 1 pad the crop");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Augment::default().check().is_ok());
        let bad = Augment {
            scale: [2.0, 1.0],
            ..Augment::default()
        };
        assert!(bad.check().unwrap_err().contains("[2, 1]"));
    }
}
