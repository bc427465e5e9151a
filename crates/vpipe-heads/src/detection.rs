//! SSDLite object detection as in Apple ml-cvnets' SSD-MobileViT.
//!
//! Layers 4 and 5 of the backbone (output strides 16 and 32) and four extra layers
//! (strides 64, 128, 256 and a global one) feed one predictor each: an optional 1x1
//! projection, then a separable convolution emitting, per anchor, 4 box regressions
//! and the class logits. Anchors, box decoding and post-processing (softmax,
//! per-class threshold and top-k, class-aware NMS, a maximum count) follow the
//! reference exactly; every setting is in [`SsdSettings`].

use burn::tensor::Tensor;
use burn::tensor::module::adaptive_avg_pool2d;
use vpipe_backbone::layers::{Activation, ConvNorm, ConvSpec};
use vpipe_backbone::{Features, Param, Params};

use crate::error::Result;
use vpipe_core::labels::LabelSet;
use vpipe_core::result::{Detection, HeadOutput};

use crate::model::{RawTensor, to_raw};

/// Detection settings; the defaults are ml-cvnets'.
#[derive(Debug, Clone, PartialEq)]
pub struct SsdSettings {
    /// Smallest anchor scale (fraction of the image).
    pub min_scale_ratio: f64,
    /// Largest anchor scale.
    pub max_scale_ratio: f64,
    /// Whether anchors are clamped to the image.
    pub clip_anchors: bool,
    /// Box-centre variance of the encoding.
    pub center_variance: f32,
    /// Box-size variance of the encoding.
    pub size_variance: f32,
    /// Per-class probability threshold (strictly greater than).
    pub conf_threshold: f32,
    /// Boxes kept per class before NMS.
    pub top_k: usize,
    /// IoU above which NMS suppresses a box of the same class.
    pub nms_iou: f32,
    /// Detections kept per image after NMS.
    pub max_detections: usize,
}

impl Default for SsdSettings {
    fn default() -> Self {
        Self {
            min_scale_ratio: 0.1,
            max_scale_ratio: 1.05,
            clip_anchors: true,
            center_variance: 0.1,
            size_variance: 0.2,
            conf_threshold: 0.05,
            top_k: 400,
            nms_iou: 0.5,
            max_detections: 200,
        }
    }
}

/// A depthwise 3x3 then pointwise 1x1 convolution (ml-cvnets `SeparableConv2d`).
#[derive(Debug, Clone)]
struct Separable {
    dw: ConvNorm,
    pw: ConvNorm,
}

impl Separable {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pw.forward(self.dw.forward(x))
    }
}

/// One predictor: optional projection, then the box/class convolution.
#[derive(Debug, Clone)]
struct Predictor {
    proj: Option<ConvNorm>,
    dw: Option<ConvNorm>,
    pw: ConvNorm,
    anchors_per_location: usize,
    aspect_ratios: Vec<f64>,
}

impl Predictor {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match &self.proj {
            Some(p) => p.forward(x),
            None => x,
        };
        let x = match &self.dw {
            Some(d) => d.forward(x),
            None => x,
        };
        self.pw.forward(x)
    }
}

/// `conf_logits`, `loc` and the feature-map size of each level.
type HostOutputs = (RawTensor, RawTensor, Vec<(usize, usize)>);

/// The SSDLite head.
#[derive(Debug, Clone)]
pub struct SsdHead {
    extra: Vec<Separable>,
    global: ConvNorm,
    predictors: Vec<Predictor>,
    num_classes: usize,
    labels: Vec<String>,
    settings: SsdSettings,
}

/// Output strides of the six predictor inputs (`-1`: global).
pub const SSD_OUTPUT_STRIDES: [i32; 6] = [16, 32, 64, 128, 256, -1];

impl SsdHead {
    /// Loads `extra_layers.*` and `ssd_heads.*` on top of a backbone whose layers 4
    /// and 5 have `channels[3]` and `channels[4]` channels.
    pub fn load(params: &mut Params, channels: [usize; 5], settings: SsdSettings) -> Result<Self> {
        // Extra layers: separable stride-2 convolutions, then pooling + 1x1 for the global level.
        let mut in_ch = channels[4];
        let mut extra = Vec::new();
        for (os, default_out) in [(64, 256), (128, 128), (256, 128)] {
            let p = format!("extra_layers.os_{os}");
            let out = params.dim_or(&format!("{p}.pw_conv.block.conv.weight"), 0, default_out);
            let dw = ConvNorm::load(
                params,
                &format!("{p}.dw_conv"),
                ConvSpec::new(in_ch, in_ch, 3, Activation::Identity)
                    .stride(2)
                    .depthwise(),
            )?;
            let pw = ConvNorm::load(
                params,
                &format!("{p}.pw_conv"),
                ConvSpec::new(in_ch, out, 1, Activation::Relu),
            )?;
            extra.push(Separable { dw, pw });
            in_ch = out;
        }
        let g_out = params.dim_or("extra_layers.os_-1.1.block.conv.weight", 0, 64);
        let global = ConvNorm::load(
            params,
            "extra_layers.os_-1.1",
            ConvSpec::new(in_ch, g_out, 1, Activation::Relu)
                .plain()
                .with_bias(false),
        )?;
        let level_in = [
            channels[3],
            channels[4],
            extra[0].pw_out(),
            extra[1].pw_out(),
            extra[2].pw_out(),
            g_out,
        ];
        let default_proj = [512, 256, 256, 128, 128, 64];
        let num_classes_default = LabelSet::Coco81.len();
        let mut predictors = Vec::with_capacity(6);
        let mut num_classes = num_classes_default;
        for (i, &cin) in level_in.iter().enumerate() {
            let p = format!("ssd_heads.{i}");
            let global_level = i == 5;
            if global_level {
                let key = format!("{p}.loc_cls_layer.block.conv.weight");
                let out = params.dim_or(&key, 0, 4 * (4 + num_classes));
                let pw = ConvNorm::load(
                    params,
                    &format!("{p}.loc_cls_layer"),
                    ConvSpec::new(cin, out, 1, Activation::Identity).plain(),
                )?;
                predictors.push(Predictor {
                    proj: None,
                    dw: None,
                    pw,
                    anchors_per_location: out / (4 + num_classes),
                    aspect_ratios: vec![2.0],
                });
                continue;
            }
            let proj_key = format!("{p}.proj_layer.block.conv.weight");
            let proj_out = params.dim_or(&proj_key, 0, default_proj[i]);
            let proj = if proj_out != cin && params.has(&proj_key) {
                Some(ConvNorm::load(
                    params,
                    &format!("{p}.proj_layer"),
                    ConvSpec::new(cin, proj_out, 1, Activation::Relu),
                )?)
            } else {
                None
            };
            let ch = if proj.is_some() { proj_out } else { cin };
            let pw_key = format!("{p}.loc_cls_layer.pw_conv.block.conv.weight");
            let out = params.dim_or(&pw_key, 0, 6 * (4 + num_classes));
            if i == 0 {
                // 6 anchors per location at every non-global level: the class count follows.
                num_classes = out / 6 - 4;
            }
            let dw = ConvNorm::load(
                params,
                &format!("{p}.loc_cls_layer.dw_conv"),
                ConvSpec::new(ch, ch, 3, Activation::Identity).depthwise(),
            )?;
            let pw = ConvNorm::load(
                params,
                &format!("{p}.loc_cls_layer.pw_conv"),
                ConvSpec::new(ch, out, 1, Activation::Identity).plain(),
            )?;
            predictors.push(Predictor {
                proj,
                dw: Some(dw),
                pw,
                anchors_per_location: out / (4 + num_classes),
                aspect_ratios: vec![2.0, 3.0],
            });
        }
        let labels = LabelSet::Coco81.names_for(num_classes);
        Ok(Self {
            extra,
            global,
            predictors,
            num_classes,
            labels,
            settings,
        })
    }

    /// Number of classes including background (index 0).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Class names.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The class names, to rename them (the `labels` option).
    pub(crate) fn labels_mut(&mut self) -> &mut Vec<String> {
        &mut self.labels
    }

    /// The settings.
    pub fn settings(&self) -> &SsdSettings {
        &self.settings
    }

    /// The six predictor inputs (strides 16, 32, 64, 128, 256, global).
    pub fn level_inputs(&self, features: &Features) -> Vec<Tensor<4>> {
        let os16 = features.levels[3].clone();
        let os32 = features.levels[4].clone();
        let mut levels = vec![os16, os32.clone()];
        let mut x = os32;
        for e in &self.extra {
            x = e.forward(x);
            levels.push(x.clone());
        }
        let pooled = adaptive_avg_pool2d(x, [1, 1]);
        levels.push(self.global.forward(pooled));
        levels
    }

    /// Its layers in a fixed order (extra layers, global layer, predictors).
    fn layers(&self) -> Vec<&ConvNorm> {
        let mut out: Vec<&ConvNorm> = self.extra.iter().flat_map(|e| [&e.dw, &e.pw]).collect();
        out.push(&self.global);
        for p in &self.predictors {
            out.extend(p.proj.iter().chain(&p.dw).chain([&p.pw]));
        }
        out
    }

    /// Its parameters when loaded in trainable form (see
    /// [`crate::training::TrainableHead::params`]).
    pub fn params(&self) -> Vec<&Param> {
        self.layers()
            .into_iter()
            .flat_map(ConvNorm::params)
            .collect()
    }

    /// Its parameters, mutable, in the order of [`SsdHead::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut layers: Vec<&mut ConvNorm> = self
            .extra
            .iter_mut()
            .flat_map(|e| [&mut e.dw, &mut e.pw])
            .collect();
        layers.push(&mut self.global);
        for p in &mut self.predictors {
            layers.extend(p.proj.iter_mut().chain(&mut p.dw).chain([&mut p.pw]));
        }
        layers.into_iter().flat_map(ConvNorm::params_mut).collect()
    }

    /// Class logits `[batch, anchors, classes]` and box regressions
    /// `[batch, anchors, 4]` as tensors, with the feature-map size of each level.
    pub fn outputs(&self, features: &Features) -> (Tensor<3>, Tensor<3>, Vec<(usize, usize)>) {
        let levels = self.level_inputs(features);
        let per = 4 + self.num_classes;
        let mut outs = Vec::with_capacity(levels.len());
        let mut sizes = Vec::with_capacity(levels.len());
        for (x, p) in levels.into_iter().zip(&self.predictors) {
            let y = p.forward(x);
            let [b, _, h, w] = y.dims();
            sizes.push((h, w));
            outs.push(
                y.permute([0, 2, 3, 1])
                    .reshape([b, h * w * p.anchors_per_location, per]),
            );
        }
        let all = Tensor::cat(outs, 1);
        let loc = all.clone().narrow(2, 0, 4);
        let conf = all.narrow(2, 4, self.num_classes);
        (conf, loc, sizes)
    }

    /// [`SsdHead::outputs`] on the CPU, as raw outputs: each level's predictions are
    /// written straight to their rows of `conf_logits` and `loc` (burn's permute,
    /// concatenation and slices each copied them once more).
    fn host_outputs(&self, features: &Features) -> Result<HostOutputs> {
        let levels = self.level_inputs(features);
        let (c, per) = (self.num_classes, 4 + self.num_classes);
        let predictions: Vec<(RawTensor, usize)> = levels
            .into_iter()
            .zip(&self.predictors)
            .map(|(x, p)| Ok((to_raw("predictions", p.forward(x))?, p.anchors_per_location)))
            .collect::<Result<_>>()?;
        let batch = predictions.first().map_or(0, |(y, _)| y.shape[0]);
        let total: usize = predictions
            .iter()
            .map(|(y, a)| y.shape[2] * y.shape[3] * a)
            .sum();
        let mut conf = vec![0.0f32; batch * total * c];
        let mut loc = vec![0.0f32; batch * total * 4];
        let mut sizes = Vec::with_capacity(predictions.len());
        let mut first = 0;
        for (y, anchors_here) in &predictions {
            let (h, w) = (y.shape[2], y.shape[3]);
            sizes.push((h, w));
            let plane = h * w;
            for (i, values) in y.data.chunks_exact(plane).enumerate() {
                let (b, ch) = (i / (anchors_here * per), i % (anchors_here * per));
                let (a, j) = (ch / per, ch % per);
                for (pix, &v) in values.iter().enumerate() {
                    let anchor = b * total + first + pix * anchors_here + a;
                    if j < 4 {
                        loc[anchor * 4 + j] = v;
                    } else {
                        conf[anchor * c + j - 4] = v;
                    }
                }
            }
            first += plane * anchors_here;
        }
        let raw = |name: &str, data, width| RawTensor {
            name: name.into(),
            shape: vec![batch, total, width],
            data,
        };
        Ok((raw("conf_logits", conf, c), raw("loc", loc, 4), sizes))
    }

    /// Raw outputs: `loc` `[batch, anchors, 4]`, `conf_logits` `[batch, anchors, classes]`,
    /// and `anchors` `[anchors, 4]` (centre x, centre y, width, height, normalised).
    pub fn forward(&self, features: &Features) -> Result<Vec<RawTensor>> {
        let last = features.last();
        let (conf, loc, sizes) =
            if vpipe_backbone::cpu::is_cpu(&last.device()) && !last.is_autodiff() {
                self.host_outputs(features)?
            } else {
                let (conf, loc, sizes) = self.outputs(features);
                (to_raw("conf_logits", conf)?, to_raw("loc", loc)?, sizes)
            };
        let anchors = self.anchors(&sizes);
        debug_assert_eq!(
            anchors.len() * self.num_classes,
            conf.data.len() / conf.shape[0].max(1)
        );
        Ok(vec![
            conf,
            loc,
            RawTensor {
                name: "anchors".into(),
                shape: vec![anchors.len(), 4],
                data: anchors.iter().flatten().copied().collect(),
            },
        ])
    }

    /// Anchors for the given feature-map sizes, in the reference order: level by
    /// level, row by row, then per location the small square, the large square, and
    /// for each aspect ratio `r` the boxes `(w*sqrt r, h/sqrt r)` and `(w/sqrt r, h*sqrt r)`.
    pub fn anchors(&self, sizes: &[(usize, usize)]) -> Vec<[f32; 4]> {
        let n = SSD_OUTPUT_STRIDES.len();
        let s = &self.settings;
        let scales: Vec<f64> = (0..=n)
            .map(|i| {
                s.min_scale_ratio + (s.max_scale_ratio - s.min_scale_ratio) * i as f64 / n as f64
            })
            .collect();
        let mut out = Vec::new();
        for (level, (&(h, w), p)) in sizes.iter().zip(&self.predictors).enumerate() {
            let min = scales[level];
            let max = (scales[level] * scales[level + 1]).sqrt();
            for y in 0..h {
                for x in 0..w {
                    let cx = (x as f64 + 0.5) / w as f64;
                    let cy = (y as f64 + 0.5) / h as f64;
                    let mut push = |bw: f64, bh: f64| {
                        let mut b = [cx as f32, cy as f32, bw as f32, bh as f32];
                        if s.clip_anchors {
                            b = b.map(|v| v.clamp(0.0, 1.0));
                        }
                        out.push(b);
                    };
                    push(min, min);
                    push(max, max);
                    for r in &p.aspect_ratios {
                        let r = r.sqrt();
                        push(min * r, min / r);
                        push(min / r, min * r);
                    }
                }
            }
        }
        out
    }

    /// Decodes one box regression `l` (4 values) against its anchor into normalised
    /// corners `[x1, y1, x2, y2]`.
    pub fn decode_box(&self, l: &[f32], a: &[f32; 4]) -> [f32; 4] {
        let (cv, sv) = (self.settings.center_variance, self.settings.size_variance);
        let cx = l[0] * cv * a[2] + a[0];
        let cy = l[1] * cv * a[3] + a[1];
        let w = (l[2] * sv).exp() * a[2];
        let h = (l[3] * sv).exp() * a[3];
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }

    /// Post-processes one image: softmax, per-class threshold and top-k, class-aware
    /// NMS, maximum count. Boxes are scaled from normalised coordinates to an image of
    /// `size` (width, height) pixels and clipped to it, as ml-cvnets' `predict_and_save`.
    pub fn postprocess(
        &self,
        conf_logits: &[f32],
        loc: &[f32],
        anchors: &[[f32; 4]],
        size: (f32, f32),
    ) -> HeadOutput {
        let s = &self.settings;
        let c = self.num_classes;
        // Scores above the threshold, in one pass over the anchors: (anchor, class,
        // score), then per class by decreasing score (ties: lower anchor first) and
        // cut to `top_k`, the order of the reference's per-class loop. Anchors whose
        // foreground bound is below the threshold cannot give one and skip the
        // softmax; the margin covers the rounding of both computations.
        let skip_below = s.conf_threshold * (1.0 - BOUND_MARGIN);
        let mut bounds = vec![0.0; conf_logits.len() / c.max(1)];
        foreground_bounds(conf_logits, c, &mut bounds);
        let mut probs = vec![0.0; c];
        let mut candidates: Vec<(usize, usize, f32)> = Vec::new();
        for (a, (logits, &bound)) in conf_logits.chunks_exact(c).zip(&bounds).enumerate() {
            if bound < skip_below {
                continue;
            }
            probs.copy_from_slice(logits);
            vpipe_backbone::cpu::softmax(&mut probs);
            candidates.extend(
                (1..c)
                    .map(|class| (a, class, probs[class]))
                    .filter(|&(_, _, p)| p > s.conf_threshold),
            );
        }
        candidates.sort_by(|x, y| x.1.cmp(&y.1).then(y.2.total_cmp(&x.2)).then(x.0.cmp(&y.0)));
        let mut per_class = (0, 0);
        candidates.retain(|&(_, class, _)| {
            per_class = if per_class.0 == class {
                (class, per_class.1 + 1)
            } else {
                (class, 1)
            };
            per_class.1 <= s.top_k
        });
        // Only the candidates' boxes are decoded.
        let mut boxes = vec![[0.0; 4]; anchors.len()];
        for &(a, _, _) in &candidates {
            if let (Some(l), Some(anchor)) = (loc.get(4 * a..4 * a + 4), anchors.get(a)) {
                boxes[a] = self.decode_box(l, anchor);
            }
        }
        let keep = nms(&candidates, &boxes, s.nms_iou);
        let detections = keep
            .into_iter()
            .take(s.max_detections)
            .map(|i| {
                let (a, class, score) = candidates[i];
                let b = boxes[a];
                let (w, h) = size;
                Detection {
                    bbox: [
                        (b[0] * w).clamp(0.0, w),
                        (b[1] * h).clamp(0.0, h),
                        (b[2] * w).clamp(0.0, w),
                        (b[3] * h).clamp(0.0, h),
                    ],
                    score,
                    class_id: class,
                    label: self.labels.get(class).cloned().unwrap_or_default(),
                    track_id: None,
                }
            })
            .collect();
        HeadOutput::Detection { detections }
    }
}

impl Separable {
    fn pw_out(&self) -> usize {
        self.pw.out_channels()
    }
}

/// Relative margin between an anchor's foreground bound and the score threshold
/// below which the anchor is skipped: far above the rounding error of the bound and
/// of the softmax (a few units in the last place of `f32`).
const BOUND_MARGIN: f32 = 1e-3;

vpipe_simd::simd_fn! {
    /// For each `row_len`-long row of class logits (background first), an upper
    /// bound of the softmax probability of its foreground classes, without an
    /// exponential per class. With `r` the row's background logit and `f` its
    /// largest foreground one, each foreground probability is at most
    /// `e^(f - r) / S` with `S = sum_j e^(x_j - r)`, and
    /// `S >= sum_j max(0, 1 + x_j - r)` since `e^y >= 1 + y`. (A row with a NaN or
    /// infinite logit has NaN probabilities, which pass no threshold, whatever its
    /// bound.) One pass over each row, in 16 interleaved lanes.
    fn foreground_bounds(logits: &[f32], row_len: usize, bounds: &mut [f32]) {
        if row_len < 2 {
            bounds.fill(f32::INFINITY);
            return;
        }
        for (row, bound) in logits.chunks_exact(row_len).zip(bounds.iter_mut()) {
            let r = row[0];
            let mut f = [f32::NEG_INFINITY; 16];
            let mut sum = [0.0f32; 16];
            let (chunks, tail) = row[1..].as_chunks::<16>();
            for chunk in chunks {
                for ((f, sum), &v) in f.iter_mut().zip(&mut sum).zip(chunk) {
                    *f = f.max(v);
                    *sum += (1.0 + (v - r)).max(0.0);
                }
            }
            let mut f = f.into_iter().fold(f32::NEG_INFINITY, f32::max);
            // The background's own term is 1.
            let mut total = 1.0 + sum.into_iter().sum::<f32>();
            for &v in tail {
                f = f.max(v);
                total += (1.0 + (v - r)).max(0.0);
            }
            *bound = (f - r).exp() / total;
        }
    }
}

/// Class-aware non-maximum suppression. Returns indices into `candidates` in
/// decreasing score order (ties: earlier first) that survive: a box is dropped when
/// its IoU with a kept box of the same class exceeds `iou_threshold`.
pub fn nms(
    candidates: &[(usize, usize, f32)],
    boxes: &[[f32; 4]],
    iou_threshold: f32,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&i, &j| candidates[j].2.total_cmp(&candidates[i].2).then(i.cmp(&j)));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        let (a, class, _) = candidates[i];
        let suppressed = kept.iter().any(|&k| {
            let (ka, kclass, _) = candidates[k];
            kclass == class && iou(&boxes[a], &boxes[ka]) > iou_threshold
        });
        if !suppressed {
            kept.push(i);
        }
    }
    kept
}

/// Intersection over union of two corner boxes; 0 when the union is empty.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union > 0.0 && union.is_finite() {
        inter / union
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The foreground bound is never below a foreground class's softmax
    /// probability, for rows that are flat, peaked on the background, peaked on a
    /// class, or spread wide.
    #[test]
    fn foreground_bounds_hold() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut uniform = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        let c = 81;
        let mut rows = Vec::new();
        for i in 0..4000 {
            let spread = [0.1, 0.5, 1.0, 3.0, 10.0][i % 5];
            let mut row: Vec<f32> = (0..c).map(|_| (uniform() - 0.5) * 2.0 * spread).collect();
            match i % 3 {
                0 => row[0] += 8.0 * uniform(),
                1 => row[1 + i % (c - 1)] += 8.0 * uniform(),
                _ => {}
            }
            rows.extend(row);
        }
        let mut bounds = vec![0.0; rows.len() / c];
        foreground_bounds(&rows, c, &mut bounds);
        let mut probs = rows.clone();
        probs
            .chunks_exact_mut(c)
            .for_each(vpipe_backbone::cpu::softmax);
        let mut tight = 0;
        for (row, &bound) in probs.chunks_exact(c).zip(&bounds) {
            let top = row[1..].iter().copied().fold(0.0, f32::max);
            assert!(top <= bound * (1.0 + 1e-5), "{top} > {bound}");
            tight += usize::from(bound < 2.0 * top);
        }
        // Loose bounds would skip nothing; these are within 2x for most rows.
        assert!(tight > 2000, "{tight}");
    }

    #[test]
    fn iou_handles_degenerate_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[0.0, 0.0, 1.0, 1.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 2.0, 1.0], &[1.0, 0.0, 3.0, 1.0]) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn nms_is_class_aware_and_ordered() {
        let boxes = [
            [0.0, 0.0, 1.0, 1.0],
            [0.05, 0.0, 1.0, 1.0],
            [0.0, 0.0, 1.0, 1.0],
        ];
        let cands = [(0, 1, 0.5), (1, 1, 0.9), (2, 2, 0.7)];
        assert_eq!(nms(&cands, &boxes, 0.5), vec![1, 2]);
        assert!(nms(&[], &boxes, 0.5).is_empty());
    }
}
