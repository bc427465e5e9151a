//! DeepLabv3 semantic segmentation as in ml-cvnets and Hugging Face: atrous spatial
//! pyramid pooling on layer 5 (a 1x1 branch, three dilated 3x3 branches, an
//! image-pooling branch), a 1x1 projection, and a 1x1 classifier. The backbone runs
//! at output stride 16 (released checkpoints) or 8.

use burn::tensor::module::{adaptive_avg_pool2d, interpolate};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};
use vpipe_backbone::layers::{Activation, ConvNorm, ConvSpec};
use vpipe_backbone::{Features, Param, Params};

use crate::error::{HeadError, Result};
use vpipe_core::labels::LabelSet;
use vpipe_core::result::{ClassArea, HeadOutput};

use crate::model::{RawTensor, to_raw};

/// How logits are brought back to the input size, which differs between sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsampleConvention {
    /// ml-cvnets: bilinear, `align_corners = true`.
    AlignCorners,
    /// Hugging Face post-processing: bilinear, `align_corners = false`.
    HalfPixel,
}

impl UpsampleConvention {
    /// `logits` upsampled (bilinear) to `size` (`[height, width]`) with this convention.
    pub fn upsample(self, logits: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        interpolate(
            logits,
            InterpolateOptions::new(InterpolateMode::Bilinear)
                .with_align_corners(self == UpsampleConvention::AlignCorners)
                .with_output_size(size),
        )
    }
}

impl UpsampleConvention {
    /// The class of the largest [`UpsampleConvention::upsample`]d logit at each pixel
    /// of `size` (`[height, width]`), for `logits` `[batch, classes, h, w]` in host
    /// memory: `[batch, 1, height, width]` class indices, each exactly what burn's
    /// bilinear interpolation and `argmax` give (the first largest, a NaN first of
    /// all), without the upsampled logits.
    ///
    /// burn's CPU interpolation computes each output value from its four inputs one
    /// at a time; here the inputs of a row of outputs are gathered once per input
    /// row and class, and the weighting and the running maximum over the classes
    /// run as vector loops over the row, with burn's coordinates and rounding
    /// (`a (1-x)(1-y) + b x (1-y) + c (1-x) y + d x y`, left to right). On
    /// DeepLabv3-XXS at 512 the two burn operations took about a third of the time.
    pub fn upsampled_argmax(
        self,
        logits: &[f32],
        [batch, classes, h, w]: [usize; 4],
        [oh, ow]: [usize; 2],
    ) -> Vec<f32> {
        assert_eq!(logits.len(), batch * classes * h * w, "logits shape");
        let align = self == UpsampleConvention::AlignCorners;
        let xs = LinearTaps::new(w, ow, align);
        let ys = LinearTaps::new(h, oh, align);
        let mut mask = vec![0.0f32; batch * oh * ow];
        let rows_per_task = oh.div_ceil(4 * vpipe_core::device::cpu_threads()).max(1);
        vpipe_core::parallel::for_each_chunk_mut(&mut mask, rows_per_task * ow.max(1), |i, out| {
            let mut rows = GatheredRows::new(classes, ow);
            let mut scratch = ArgmaxRow::new(ow);
            let mut image = usize::MAX;
            for (dy, out_row) in out.chunks_mut(ow.max(1)).enumerate() {
                let row = i * rows_per_task + dy;
                if row / oh != image {
                    image = row / oh;
                    rows.forget();
                }
                let plane = &logits[image * classes * h * w..(image + 1) * classes * h * w];
                let y = row % oh;
                let (lo, hi, wy) = (ys.low[y], ys.high[y], ys.weight[y]);
                rows.load(plane, [h, w], [lo, hi], &xs);
                for c in 0..classes {
                    scratch.update(c, rows.class(c), &xs, wy);
                }
                out_row.copy_from_slice(&scratch.index);
            }
        });
        mask
    }
}

/// For each output position along one axis: the two input positions it reads and
/// the weight of the second, as burn's CPU interpolation computes them (in `f64`,
/// then rounded to `f32`), with `1 - weight`.
struct LinearTaps {
    low: Vec<usize>,
    high: Vec<usize>,
    weight: Vec<f32>,
    rest: Vec<f32>,
}

impl LinearTaps {
    fn new(input: usize, output: usize, align_corners: bool) -> Self {
        let ratio = if align_corners {
            (input as f64 - 1.0) / (output.max(1) - 1).max(1) as f64
        } else {
            input as f64 / output as f64
        };
        let mut taps = Self {
            low: Vec::with_capacity(output),
            high: Vec::with_capacity(output),
            weight: Vec::with_capacity(output),
            rest: Vec::with_capacity(output),
        };
        for o in 0..output {
            let at = if align_corners {
                o as f64 * ratio
            } else {
                (o as f64 + 0.5) * ratio - 0.5
            };
            let low = at.floor().max(0.0) as usize;
            let weight = (at - low as f64).max(0.0) as f32;
            taps.low.push(low);
            taps.high.push((low + 1).min(input - 1));
            taps.weight.push(weight);
            taps.rest.push(1.0 - weight);
        }
        taps
    }
}

/// For the two input rows an output row reads, every class's inputs at each
/// output column: `[low row at low column, low row at high column, high row at low
/// column, high row at high column]`, each `classes x out_width`. Consecutive
/// output rows mostly read the same input rows, so these are kept until they change.
struct GatheredRows {
    rows: [usize; 2],
    data: [Vec<f32>; 4],
    width: usize,
}

impl GatheredRows {
    fn new(classes: usize, width: usize) -> Self {
        Self {
            rows: [usize::MAX; 2],
            data: std::array::from_fn(|_| vec![0.0; classes * width]),
            width,
        }
    }

    /// Drops the gathered rows (the next image starts).
    fn forget(&mut self) {
        self.rows = [usize::MAX; 2];
    }

    /// Gathers input rows `lo` and `hi` of every class of `plane` (`[classes, h, w]`).
    fn load(&mut self, plane: &[f32], [h, w]: [usize; 2], [lo, hi]: [usize; 2], xs: &LinearTaps) {
        if self.rows == [lo, hi] {
            return;
        }
        if self.rows[1] == lo {
            // Moving down one input row: the old high row is the new low one.
            self.data.swap(0, 2);
            self.data.swap(1, 3);
            self.rows = [lo, usize::MAX];
        }
        let width = self.width;
        for (k, row) in [lo, hi].into_iter().enumerate() {
            if self.rows[k] == row {
                continue;
            }
            let [first, second] = &mut self.data[2 * k..2 * k + 2] else {
                unreachable!("two buffers per row")
            };
            for (class, (f, s)) in first
                .chunks_mut(width)
                .zip(second.chunks_mut(width))
                .enumerate()
            {
                let src = &plane[(class * h + row) * w..][..w];
                for (x, (f, s)) in f.iter_mut().zip(s.iter_mut()).enumerate() {
                    *f = src[xs.low[x]];
                    *s = src[xs.high[x]];
                }
            }
            self.rows[k] = row;
        }
    }

    /// Class `c`'s four gathered rows.
    fn class(&self, c: usize) -> [&[f32]; 4] {
        let w = self.width;
        self.data.each_ref().map(|d| &d[c * w..(c + 1) * w])
    }
}

/// The running largest value and its class at each column of an output row.
struct ArgmaxRow {
    best: Vec<f32>,
    index: Vec<f32>,
}

impl ArgmaxRow {
    fn new(width: usize) -> Self {
        Self {
            best: vec![0.0; width],
            index: vec![0.0; width],
        }
    }

    /// Interpolates class `c`'s row and keeps, column by column, the larger value
    /// (class 0 sets the start, so nothing is left from the row before).
    fn update(&mut self, c: usize, rows: [&[f32]; 4], xs: &LinearTaps, wy: f32) {
        interpolate_and_compare(
            &mut self.best,
            &mut self.index,
            c as f32,
            c == 0,
            rows,
            [&xs.weight[..], &xs.rest[..]],
            wy,
        );
    }
}

vpipe_simd::simd_fn! {
    /// One class's interpolated row, `a (1-x)(1-y) + b x (1-y) + c (1-x) y + d x y`
    /// evaluated left to right as burn does, merged into the running maximum
    /// (`first`: it is the start): a value replaces the best when the best is not
    /// NaN and the value is NaN or larger, burn's `argmax` rule.
    fn interpolate_and_compare(
        best: &mut [f32],
        index: &mut [f32],
        class: f32,
        first: bool,
        rows: [&[f32]; 4],
        weights: [&[f32]; 2],
        wy: f32,
    ) {
        let ([a, b, c, d], [wx, rx]) = (rows, weights);
        let ry = 1.0 - wy;
        let n = best.len();
        let (a, b, c, d, wx, rx) = (&a[..n], &b[..n], &c[..n], &d[..n], &wx[..n], &rx[..n]);
        for x in 0..n {
            let v = a[x] * rx[x] * ry + b[x] * wx[x] * ry + c[x] * rx[x] * wy + d[x] * wx[x] * wy;
            let better = first || (!best[x].is_nan() && (v.is_nan() || v > best[x]));
            best[x] = if better { v } else { best[x] };
            index[x] = if better { class } else { index[x] };
        }
    }
}

/// The DeepLabv3 head.
#[derive(Debug, Clone)]
pub struct DeepLabHead {
    branches: Vec<ConvNorm>,
    pool: ConvNorm,
    project: ConvNorm,
    classifier: ConvNorm,
    num_classes: usize,
    labels: Vec<String>,
    upsample: UpsampleConvention,
}

/// ASPP dilation rates of the released checkpoints.
pub const ASPP_RATES: [usize; 3] = [6, 12, 18];

impl DeepLabHead {
    /// Loads `seg_head.aspp.*` and `seg_head.classifier.*` over `in_channels` (layer 5).
    pub fn load(
        params: &mut Params,
        in_channels: usize,
        rates: [usize; 3],
        upsample: UpsampleConvention,
    ) -> Result<Self> {
        let a = "seg_head.aspp.aspp_layer";
        let out = params.dim_or(&format!("{a}.convs.0.block.conv.weight"), 0, 256);
        let mut branches = vec![ConvNorm::load(
            params,
            &format!("{a}.convs.0"),
            ConvSpec::new(in_channels, out, 1, Activation::Relu),
        )?];
        for (i, rate) in rates.iter().enumerate() {
            branches.push(ConvNorm::load(
                params,
                &format!("{a}.convs.{}", i + 1),
                ConvSpec::new(in_channels, out, 3, Activation::Relu).dilation(*rate),
            )?);
        }
        let pool = ConvNorm::load(
            params,
            &format!("{a}.convs.4.aspp_pool.conv_1x1"),
            ConvSpec::new(in_channels, out, 1, Activation::Relu),
        )?;
        let project = ConvNorm::load(
            params,
            &format!("{a}.project"),
            ConvSpec::new(5 * out, out, 1, Activation::Relu),
        )?;
        let num_classes = params.dim_or("seg_head.classifier.block.conv.weight", 0, 21);
        let classifier = ConvNorm::load(
            params,
            "seg_head.classifier",
            ConvSpec::new(out, num_classes, 1, Activation::Identity).plain(),
        )?;
        let labels = LabelSet::Voc21.names_for(num_classes);
        Ok(Self {
            branches,
            pool,
            project,
            classifier,
            num_classes,
            labels,
            upsample,
        })
    }

    /// Its layers in a fixed order.
    fn layers(&self) -> impl Iterator<Item = &ConvNorm> {
        self.branches
            .iter()
            .chain([&self.pool, &self.project, &self.classifier])
    }

    /// Its parameters when loaded in trainable form (see
    /// [`crate::training::TrainableHead::params`]).
    pub fn params(&self) -> Vec<&Param> {
        self.layers().flat_map(ConvNorm::params).collect()
    }

    /// Its parameters, mutable, in the order of [`DeepLabHead::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.branches
            .iter_mut()
            .chain([&mut self.pool, &mut self.project, &mut self.classifier])
            .flat_map(ConvNorm::params_mut)
            .collect()
    }

    /// Class names.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The class names, to rename them (the `labels` option).
    pub(crate) fn labels_mut(&mut self) -> &mut Vec<String> {
        &mut self.labels
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The ASPP output (branches, pooling branch, projection) at the backbone's
    /// output stride, `[batch, channels, h, w]`.
    pub fn aspp(&self, features: &Features) -> Tensor<4> {
        let x = features.last().clone();
        let [b, _, h, w] = x.dims();
        let mut parts: Vec<Tensor<4>> = self
            .branches
            .iter()
            .map(|br| br.forward(x.clone()))
            .collect();
        let pooled = self.pool.forward(adaptive_avg_pool2d(x, [1, 1]));
        let c = pooled.dims()[1];
        parts.push(pooled.expand([b, c, h, w]));
        self.project.forward(Tensor::cat(parts, 1))
    }

    /// The 1x1 classifier on the ASPP output.
    pub fn classify(&self, aspp: Tensor<4>) -> Tensor<4> {
        self.classifier.forward(aspp)
    }

    /// Logits at the backbone's output stride, `[batch, classes, h, w]`.
    pub fn logits(&self, features: &Features) -> Tensor<4> {
        self.classify(self.aspp(features))
    }

    /// `logits` upsampled to the network input `size` (`[height, width]`) with the
    /// source's convention: what the reference model outputs, and its loss sees.
    pub fn upsample(&self, logits: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        self.upsample.upsample(logits, size)
    }

    /// The class mask at the original image size `[height, width]` for image `index`
    /// of raw `logits` `[batch, classes, h, w]`: upsampled to the network input size
    /// `input` with the source's convention, then resized (bilinear, half-pixel) to the
    /// original size as Hugging Face's `post_process_semantic_segmentation` does, then
    /// the argmax.
    pub fn mask_at(
        &self,
        logits: &RawTensor,
        index: usize,
        input: [usize; 2],
        original: [usize; 2],
    ) -> Result<Vec<u8>> {
        let [_, c, h, w] =
            <[usize; 4]>::try_from(logits.shape.as_slice()).map_err(|_| HeadError::RawOutput {
                name: logits.name.clone(),
                problem: format!("shape {:?}, not [batch, classes, h, w]", logits.shape),
            })?;
        let per = c * h * w;
        let data = logits
            .data
            .get(index * per..(index + 1) * per)
            .ok_or_else(|| HeadError::RawOutput {
                name: logits.name.clone(),
                problem: format!("no image {index} in the batch"),
            })?
            .to_vec();
        let t = Tensor::<4>::from_data(
            TensorData::new(data, [1, c, h, w]),
            &self.classifier.device(),
        );
        let mut up = self.upsample.upsample(t, input);
        if original != input {
            up = interpolate(
                up,
                InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_align_corners(false)
                    .with_output_size(original),
            );
        }
        let mask = up
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|e| HeadError::RawOutput {
                name: "mask".into(),
                problem: format!("cannot read it back: {e:?}"),
            })?;
        Ok(mask.into_iter().map(|v| v as u8).collect())
    }

    /// Raw outputs for an input of `size`: `logits` (before upsampling) and `mask`
    /// (argmax at the input size, as float class indices).
    pub fn forward(&self, features: &Features, size: [usize; 2]) -> Result<Vec<RawTensor>> {
        let logits = self.logits(features);
        if !vpipe_backbone::cpu::is_cpu(&logits.device()) || logits.is_autodiff() {
            let up = self.upsample.upsample(logits.clone(), size);
            let mask = up.argmax(1).float();
            return Ok(vec![to_raw("logits", logits)?, to_raw("mask", mask)?]);
        }
        let logits = to_raw("logits", logits)?;
        let [b, c, h, w] =
            <[usize; 4]>::try_from(&logits.shape[..]).map_err(|_| HeadError::RawOutput {
                name: "logits".into(),
                problem: format!(
                    "shape {:?} is not [batch, classes, height, width]",
                    logits.shape
                ),
            })?;
        let mask = RawTensor {
            name: "mask".into(),
            shape: vec![b, 1, size[0], size[1]],
            data: self
                .upsample
                .upsampled_argmax(&logits.data, [b, c, h, w], size),
        };
        Ok(vec![logits, mask])
    }

    /// The class areas of a mask.
    pub fn postprocess(&self, mask: Vec<u8>, width: usize, height: usize) -> HeadOutput {
        let mut counts = vec![0usize; self.num_classes.max(1)];
        for &m in &mask {
            if let Some(c) = counts.get_mut(m as usize) {
                *c += 1;
            }
        }
        let total = (width * height).max(1) as f32;
        let mut areas: Vec<ClassArea> = counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, &n)| ClassArea {
                class_id: i,
                label: self.labels.get(i).cloned().unwrap_or_default(),
                pixels: n,
                fraction: n as f32 / total,
            })
            .collect();
        areas.sort_by(|a, b| b.pixels.cmp(&a.pixels).then(a.class_id.cmp(&b.class_id)));
        HeadOutput::Segmentation {
            width,
            height,
            mask,
            areas,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_upsampled_argmax_is_burns_upsample_and_argmax() {
        let device = burn::tensor::Device::flex();
        for convention in [
            UpsampleConvention::AlignCorners,
            UpsampleConvention::HalfPixel,
        ] {
            for ([b, c, h, w], size) in [
                ([2, 5, 5, 7], [37, 23]),
                ([1, 21, 32, 32], [512, 512]),
                ([1, 3, 1, 1], [3, 4]),
                ([1, 4, 4, 4], [4, 4]),
            ] {
                // Values on a coarse grid, so that many pixels are ties, and a NaN.
                let mut s = 12345u32;
                let mut logits: Vec<f32> = (0..b * c * h * w)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 17;
                        s ^= s << 5;
                        (s % 5) as f32 * 0.25
                    })
                    .collect();
                if logits.len() > 40 {
                    logits[37] = f32::NAN;
                }
                let want: Vec<f32> = convention
                    .upsample(
                        Tensor::<4>::from_data(
                            TensorData::new(logits.clone(), [b, c, h, w]),
                            &device,
                        ),
                        size,
                    )
                    .argmax(1)
                    .float()
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("f32");
                let got = convention.upsampled_argmax(&logits, [b, c, h, w], size);
                assert_eq!(got.len(), want.len());
                let differ = got.iter().zip(&want).filter(|(g, w)| g != w).count();
                assert_eq!(differ, 0, "{convention:?} {:?} -> {size:?}", [b, c, h, w]);
            }
        }
    }
}
