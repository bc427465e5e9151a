//! Masks from COCO regions, exactly as pycocotools makes them, and VOC-21 class masks.
//!
//! [`Rle`] is COCO's run-length encoding: counts of alternating 0s and 1s (0s first) over the
//! mask in column-major order. Polygons are rasterised with pycocotools' own algorithm
//! (`maskApi.c`, `rleFrPoly`: the boundary upsampled 5 times, its y-crossings taken at pixel
//! centres), so [`annotation_mask`] equals `COCO.annToMask` bit for bit (tested against it on
//! every coco128 annotation); compressed strings are read as `rleFrString` reads them.
//!
//! [`voc_class_mask`] makes the 21-class PASCAL VOC mask of a COCO image with the mapping and
//! overlap rule of ml-cvnets' `COCOSegmentationDataset` (`data/datasets/segmentation/
//! coco_segmentation.py`; not in tag cvnets-v0.1, taken from the newest tree): each VOC class
//! is one COCO category ([`VOC_COCO_IDS`]), other categories are left out, crowd regions are
//! included, and where instances overlap the first one in file order keeps its pixels.

#[cfg(doc)]
use crate::coco::CocoDataset;
use crate::coco::{Annotation, CocoImage, Segmentation};
use crate::{DataError, Result};

/// A COCO run-length encoded mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    /// Mask height.
    pub height: u32,
    /// Mask width.
    pub width: u32,
    /// Run lengths, alternately of 0s and 1s, starting with 0s, over the column-major mask;
    /// they sum to `height * width`.
    pub counts: Vec<u32>,
}

/// pycocotools' polygon upsampling factor.
const POLY_SCALE: f64 = 5.0;

impl Rle {
    /// An RLE from its counts (COCO's uncompressed form), checked to cover the mask.
    pub fn from_counts(counts: Vec<u32>, height: u32, width: u32) -> Result<Self> {
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        let want = u64::from(height) * u64::from(width);
        if total != want {
            return Err(DataError::Rle(format!(
                "its counts sum to {total} but the mask {width}x{height} has {want} pixels"
            )));
        }
        Ok(Self {
            height,
            width,
            counts,
        })
    }

    /// An RLE from COCO's compressed string (`rleFrString`: 6 bits a character from `'0'`,
    /// counts after the third stored as differences to the one two before).
    pub fn from_compressed(s: &str, height: u32, width: u32) -> Result<Self> {
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::new();
        let mut p = 0;
        while p < bytes.len() {
            let mut x: i64 = 0;
            let mut k = 0;
            loop {
                let Some(c) = bytes.get(p).map(|&b| i64::from(b) - 48) else {
                    return Err(DataError::Rle(
                        "the compressed string ends mid-count".into(),
                    ));
                };
                if !(0..64).contains(&c) || k > 6 {
                    return Err(DataError::Rle(format!(
                        "invalid character {:?} at {p} of the compressed string",
                        char::from(bytes[p])
                    )));
                }
                x |= (c & 0x1f) << (5 * k);
                let more = c & 0x20 != 0;
                p += 1;
                k += 1;
                if !more {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            if counts.len() > 2 {
                x += i64::from(counts[counts.len() - 2]);
            }
            let count = u32::try_from(x).map_err(|_| {
                DataError::Rle(format!("count {x} at {p} of the compressed string"))
            })?;
            counts.push(count);
        }
        Self::from_counts(counts, height, width)
    }

    /// The RLE of a polygon `[x1, y1, x2, y2, ...]` on a `height` x `width` mask, as
    /// pycocotools' `rleFrPoly` makes it (points outside the mask are clipped). No points
    /// give an empty mask.
    pub fn from_polygon(xy: &[f64], height: u32, width: u32) -> Self {
        let (h, w) = (i64::from(height), i64::from(width));
        let k = xy.len() / 2;
        if k == 0 {
            return Self::empty(height, width);
        }
        // Upsample and take discrete points densely along the whole boundary.
        let scaled = |v: f64| (POLY_SCALE * v + 0.5) as i32;
        let mut x: Vec<i32> = (0..k).map(|j| scaled(xy[2 * j])).collect();
        let mut y: Vec<i32> = (0..k).map(|j| scaled(xy[2 * j + 1])).collect();
        x.push(x[0]);
        y.push(y[0]);
        let mut u = Vec::new();
        let mut v = Vec::new();
        for j in 0..k {
            let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
            let dx = (xe - xs).abs();
            let dy = (ys - ye).abs();
            let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
            if flip {
                std::mem::swap(&mut xs, &mut xe);
                std::mem::swap(&mut ys, &mut ye);
            }
            if dx >= dy {
                let s = f64::from(ye - ys) / f64::from(dx);
                for d in 0..=dx {
                    let t = if flip { dx - d } else { d };
                    u.push(t + xs);
                    v.push((f64::from(ys) + s * f64::from(t) + 0.5) as i32);
                }
            } else {
                let s = f64::from(xe - xs) / f64::from(dy);
                for d in 0..=dy {
                    let t = if flip { dy - d } else { d };
                    v.push(t + ys);
                    u.push((f64::from(xs) + s * f64::from(t) + 0.5) as i32);
                }
            }
        }
        // Keep the points where the boundary crosses a pixel column, downsampled.
        let mut a: Vec<i64> = Vec::new();
        for j in 1..u.len() {
            if u[j] == u[j - 1] {
                continue;
            }
            let xd = f64::from(if u[j] < u[j - 1] { u[j] } else { u[j] - 1 });
            let xd = (xd + 0.5) / POLY_SCALE - 0.5;
            if xd.floor() != xd || xd < 0.0 || xd > (w - 1) as f64 {
                continue;
            }
            let yd = f64::from(if v[j] < v[j - 1] { v[j] } else { v[j - 1] });
            let mut yd = (yd + 0.5) / POLY_SCALE - 0.5;
            if yd < 0.0 {
                yd = 0.0;
            } else if yd > h as f64 {
                yd = h as f64;
            }
            let yd = yd.ceil();
            a.push(xd as i64 * h + yd as i64);
        }
        // Those positions, sorted, toggle the mask: their differences are the runs.
        a.push(h * w);
        a.sort_unstable();
        let mut prev = 0;
        for value in &mut a {
            let t = *value;
            *value -= prev;
            prev = t;
        }
        let mut counts: Vec<u32> = Vec::with_capacity(a.len());
        let mut j = 0;
        counts.push(a[j] as u32);
        j += 1;
        while j < a.len() {
            if a[j] > 0 {
                counts.push(a[j] as u32);
                j += 1;
            } else {
                j += 1;
                if j < a.len() {
                    *counts.last_mut().expect("counts has its first run") += a[j] as u32;
                    j += 1;
                }
            }
        }
        Self {
            height,
            width,
            counts,
        }
    }

    /// The all-zero mask.
    pub fn empty(height: u32, width: u32) -> Self {
        Self {
            height,
            width,
            counts: vec![height * width],
        }
    }

    /// The number of 1 pixels.
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| u64::from(c))
            .sum()
    }

    /// Sets to 1 the pixels of `mask` (row-major, `height * width`) that this RLE has set.
    pub fn paint(&self, mask: &mut [u8]) {
        let h = self.height as usize;
        let mut pos = 0usize;
        for (i, &c) in self.counts.iter().enumerate() {
            let c = c as usize;
            if i % 2 == 1 {
                for p in pos..pos + c {
                    // Column-major position p is row p % h, column p / h.
                    mask[(p % h) * self.width as usize + p / h] = 1;
                }
            }
            pos += c;
        }
    }

    /// The mask, row-major, 0 or 1 a pixel.
    pub fn decode(&self) -> Vec<u8> {
        let mut mask = vec![0u8; self.height as usize * self.width as usize];
        self.paint(&mut mask);
        mask
    }
}

/// The binary mask (row-major, 0 or 1) of `ann` on `image`, equal to pycocotools'
/// `COCO.annToMask`: the union of its polygons, or its RLE. An annotation without a
/// segmentation gives an empty mask.
pub fn annotation_mask(ann: &Annotation, image: &CocoImage) -> Vec<u8> {
    let mut mask = vec![0u8; image.height as usize * image.width as usize];
    paint_annotation(ann, image, &mut mask);
    mask
}

/// Sets to 1 the pixels of `mask` that `ann`'s region covers (RLE sizes were checked against
/// their image by [`CocoDataset::load`]).
fn paint_annotation(ann: &Annotation, image: &CocoImage, mask: &mut [u8]) {
    match &ann.segmentation {
        None => {}
        Some(Segmentation::Polygons(polys)) => {
            for poly in polys {
                Rle::from_polygon(poly, image.height, image.width).paint(mask);
            }
        }
        Some(Segmentation::Rle(rle)) => rle.paint(mask),
    }
}

/// The COCO category id of each VOC class (ml-cvnets' `coco_to_pascal_mapping`; the VOC
/// class names are `vpipe_core::labels::LabelSet::Voc21`'s); index 0, the background, has
/// id 0, which no COCO category uses. The COCO names, in VOC order:
/// airplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, dining table, dog,
/// horse, motorcycle, person, potted plant, sheep, couch, train, tv.
pub const VOC_COCO_IDS: [i64; 21] = [
    0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72,
];

/// The VOC-21 class-index mask (row-major, one byte a pixel) of `image` from its
/// `annotations` in file order (as [`CocoDataset::annotations_by_image`] lists them): each
/// annotation of a VOC category paints its class where no earlier annotation painted one, as
/// ml-cvnets' `_gen_seg_mask` does.
pub fn voc_class_mask(image: &CocoImage, annotations: &[&Annotation]) -> Vec<u8> {
    let n = image.height as usize * image.width as usize;
    let mut mask = vec![0u8; n];
    let mut instance = vec![0u8; n];
    for ann in annotations {
        let Some(class) = VOC_COCO_IDS[1..]
            .iter()
            .position(|&id| id == ann.category_id)
        else {
            continue;
        };
        instance.fill(0);
        paint_annotation(ann, image, &mut instance);
        for (m, &i) in mask.iter_mut().zip(&instance) {
            if *m == 0 && i != 0 {
                *m = class as u8 + 1;
            }
        }
    }
    mask
}
