//! The losses of ml-cvnets v0.1, on burn autodiff tensors, and the targets they take.
//!
//! - Classification: label-smoothed cross-entropy (`loss_fn/classification_loss_fns/
//!   label_smoothing.py`, smoothing 0.1 in the MobileViT configs), averaged over the batch.
//! - Detection: SSD multibox loss (`loss_fn/detection_loss_fns/ssd_multibox_loss.py`):
//!   targets matched to the anchors ([`crate::matcher`]), hard-negative mining per image
//!   (the background anchors of highest background loss, `neg_pos_ratio` times as many as
//!   the image's positives, chosen without gradient), cross-entropy summed over positives
//!   and mined negatives, smooth L1 summed over the positives' box regressions, both divided
//!   by the batch's number of positives.
//! - Segmentation: cross-entropy averaged over the pixels that are not `ignore_index`
//!   (`loss_fn/segmentation_loss_fns/cross_entropy.py`); logits of another size than the
//!   mask are resized to it (nearest), as the reference does.

use burn::tensor::activation::log_softmax;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use vpipe_heads::TrainOutput;

use crate::distill::{DistillSettings, TeacherOutputs, distill_loss};
use crate::error::{Result, TrainError};
use crate::matcher::{MatchedTargets, MatcherSettings, match_anchors};

/// Ground-truth boxes of one image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageBoxes {
    /// Boxes as corners `(x1, y1, x2, y2)` in fractions of the network input's
    /// width and height.
    pub boxes: Vec<[f32; 4]>,
    /// Class of each box, 1 and up (0 is background).
    pub labels: Vec<usize>,
}

/// A class-index mask of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Class per pixel, row-major; [`LossSettings::ignore_index`] for pixels left out.
    pub classes: Vec<u8>,
}

/// The targets of one head for one batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// A class index per image.
    Classes(Vec<usize>),
    /// Boxes per image.
    Boxes(Vec<ImageBoxes>),
    /// A mask per image.
    Masks(Vec<Mask>),
    /// A teacher's outputs for the batch, to reproduce ([`crate::distill`]).
    Teacher(TeacherOutputs),
}

/// Loss settings; the defaults are those of ml-cvnets v0.1's MobileViT configs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossSettings {
    /// Label smoothing of the classification loss.
    pub label_smoothing: f64,
    /// Mined negatives per positive anchor in the multibox loss.
    pub neg_pos_ratio: usize,
    /// Anchor matching of the multibox loss.
    pub matcher: MatcherSettings,
    /// Mask value of pixels the segmentation loss leaves out.
    pub ignore_index: u8,
    /// Distillation from a teacher's outputs.
    pub distill: DistillSettings,
}

impl Default for LossSettings {
    fn default() -> Self {
        Self {
            label_smoothing: 0.1,
            neg_pos_ratio: 3,
            matcher: MatcherSettings::default(),
            ignore_index: 255,
            distill: DistillSettings::default(),
        }
    }
}

/// The loss of head `head` (its index, for messages) given its training `output`
/// and its `targets`: a one-element tensor on the autodiff graph.
pub fn head_loss(
    head: usize,
    output: &TrainOutput,
    targets: &Targets,
    settings: &LossSettings,
) -> Result<Tensor<1>> {
    let bad = |problem: String| TrainError::Targets { head, problem };
    match (output, targets) {
        (TrainOutput::Classification { logits }, Targets::Classes(labels)) => {
            label_smoothing_loss(logits.clone(), labels, settings.label_smoothing).map_err(bad)
        }
        (
            TrainOutput::Detection {
                conf_logits,
                loc,
                anchors,
            },
            Targets::Boxes(images),
        ) => {
            let [b, a, _] = conf_logits.dims();
            if images.len() != b {
                return Err(bad(format!(
                    "boxes of {} images for a batch of {b}",
                    images.len()
                )));
            }
            if anchors.len() != a {
                return Err(bad(format!(
                    "{} anchors for {a} predictions per image",
                    anchors.len()
                )));
            }
            if let Some((i, im)) = images
                .iter()
                .enumerate()
                .find(|(_, im)| im.boxes.len() != im.labels.len())
            {
                return Err(bad(format!(
                    "image {i}: {} boxes but {} labels",
                    im.boxes.len(),
                    im.labels.len()
                )));
            }
            let matched: Vec<MatchedTargets> = images
                .iter()
                .map(|im| match_anchors(&im.boxes, &im.labels, anchors, &settings.matcher))
                .collect();
            multibox_loss(
                conf_logits.clone(),
                loc.clone(),
                &matched,
                settings.neg_pos_ratio,
            )
            .map_err(|e| match e {
                MultiboxError::NoPositives => TrainError::NoPositives { head },
                MultiboxError::Targets(p) => bad(p),
            })
        }
        (TrainOutput::Segmentation { logits }, Targets::Masks(masks)) => {
            segmentation_loss(logits.clone(), masks, settings.ignore_index).map_err(bad)
        }
        (output, Targets::Teacher(teacher)) => {
            distill_loss(output, teacher, &settings.distill).map_err(bad)
        }
        (output, targets) => Err(bad(format!(
            "{} targets for a {} output",
            targets_kind(targets),
            output_kind(output)
        ))),
    }
}

fn targets_kind(t: &Targets) -> &'static str {
    match t {
        Targets::Classes(_) => "class",
        Targets::Boxes(_) => "box",
        Targets::Masks(_) => "mask",
        Targets::Teacher(_) => "teacher",
    }
}

fn output_kind(o: &TrainOutput) -> &'static str {
    match o {
        TrainOutput::Classification { .. } => "classification",
        TrainOutput::Detection { .. } => "detection",
        TrainOutput::Segmentation { .. } => "segmentation",
    }
}

/// Class indices `[n, 1]` as an int tensor.
fn index_tensor<const D: usize>(
    values: Vec<i64>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A float tensor of `shape` from `values`.
fn float_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Label-smoothed cross-entropy of `logits` `[batch, classes]`:
/// `((1 - s) * Σ -log p[label] + s / classes * Σ Σ -log p) / batch`.
pub fn label_smoothing_loss(
    logits: Tensor<2>,
    labels: &[usize],
    smoothing: f64,
) -> std::result::Result<Tensor<1>, String> {
    let [b, c] = logits.dims();
    if labels.len() != b {
        return Err(format!("{} labels for a batch of {b}", labels.len()));
    }
    if let Some(l) = labels.iter().find(|&&l| l >= c) {
        return Err(format!("class {l} out of range (the head has {c} classes)"));
    }
    let device = logits.device();
    let log_probs = log_softmax(logits, 1);
    let idx = index_tensor(labels.iter().map(|&l| l as i64).collect(), [b, 1], &device);
    let nll = log_probs.clone().gather(1, idx).sum().neg();
    let smooth = log_probs.sum().neg();
    Ok((nll * (1.0 - smoothing) + smooth * (smoothing / c as f64)) / b as f64)
}

/// Why a multibox loss could not be computed.
#[derive(Debug)]
enum MultiboxError {
    NoPositives,
    Targets(String),
}

/// `-log_softmax(x)[0]` per anchor, in `f32` as PyTorch computes it
/// (`x - max - ln Σ exp(x - max)`), from `conf` `[batch * anchors * classes]`.
fn background_loss(conf: &[f32], classes: usize) -> Vec<f32> {
    conf.chunks_exact(classes)
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
            -(row[0] - max - sum.ln())
        })
        .collect()
}

/// Hard-negative mining of one image, as ml-cvnets v0.1's `hard_negative_mining`:
/// the positives (label > 0) and the `neg_pos_ratio` × positives anchors of highest
/// background `loss` among the others.
pub fn hard_negative_mining(loss: &[f32], labels: &[usize], neg_pos_ratio: usize) -> Vec<bool> {
    let num_pos = labels.iter().filter(|&&l| l > 0).count();
    let num_neg = num_pos * neg_pos_ratio;
    let mut order: Vec<usize> = (0..loss.len()).collect();
    let key = |i: usize| {
        if labels[i] > 0 {
            f32::NEG_INFINITY
        } else {
            loss[i]
        }
    };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    let mut keep: Vec<bool> = labels.iter().map(|&l| l > 0).collect();
    for &i in order.iter().take(num_neg) {
        keep[i] = true;
    }
    keep
}

/// The multibox loss of `conf` `[batch, anchors, classes]` and `loc`
/// `[batch, anchors, 4]` against the matched targets of each image.
fn multibox_loss(
    conf: Tensor<3>,
    loc: Tensor<3>,
    matched: &[MatchedTargets],
    neg_pos_ratio: usize,
) -> std::result::Result<Tensor<1>, MultiboxError> {
    let [b, a, c] = conf.dims();
    let device = conf.device();
    if let Some(l) = matched.iter().flat_map(|m| &m.labels).find(|&&l| l >= c) {
        return Err(MultiboxError::Targets(format!(
            "class {l} out of range (the head has {c} classes, background included)"
        )));
    }
    let host = conf
        .clone()
        .detach()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| MultiboxError::Targets(format!("cannot read the logits back: {e:?}")))?;
    let bg = background_loss(&host, c);
    let mut selected = Vec::with_capacity(b * a);
    let mut positive = Vec::with_capacity(b * a);
    let mut labels = Vec::with_capacity(b * a);
    let mut locations = Vec::with_capacity(b * a * 4);
    for (i, m) in matched.iter().enumerate() {
        let keep = hard_negative_mining(&bg[i * a..(i + 1) * a], &m.labels, neg_pos_ratio);
        selected.extend(keep.iter().map(|&k| f32::from(u8::from(k))));
        for (&l, t) in m.labels.iter().zip(&m.locations) {
            positive.push(f32::from(u8::from(l > 0)));
            labels.push(l as i64);
            // Background anchors' encodings are never used (and may be infinite).
            locations.extend(if l > 0 { *t } else { [0.0; 4] });
        }
    }
    let num_pos = positive.iter().filter(|&&p| p > 0.0).count();
    if num_pos == 0 {
        return Err(MultiboxError::NoPositives);
    }
    let log_probs = log_softmax(conf, 2);
    let picked = log_probs
        .gather(2, index_tensor(labels, [b, a, 1], &device))
        .reshape([b, a]);
    let classification = (picked * float_tensor(selected, [b, a], &device))
        .sum()
        .neg();
    let diff = loc - float_tensor(locations, [b, a, 4], &device);
    let abs = diff.abs();
    let small = abs.clone().clamp_max(1.0);
    // smooth L1 (beta 1): 0.5 d² where |d| < 1, |d| - 0.5 elsewhere.
    let smooth_l1 = (small.clone() * small.clone() * 0.5 + abs - small)
        * float_tensor(positive, [b, a, 1], &device);
    Ok((smooth_l1.sum() + classification) / num_pos as f64)
}

/// Cross-entropy of `logits` `[batch, classes, h, w]` against `masks`, averaged over
/// the pixels that are not `ignore`.
pub fn segmentation_loss(
    logits: Tensor<4>,
    masks: &[Mask],
    ignore: u8,
) -> std::result::Result<Tensor<1>, String> {
    let [b, c, h, w] = logits.dims();
    if masks.len() != b {
        return Err(format!("{} masks for a batch of {b}", masks.len()));
    }
    let (mh, mw) = (masks[0].height, masks[0].width);
    if let Some(m) = masks
        .iter()
        .find(|m| m.height != mh || m.width != mw || m.classes.len() != mh * mw)
    {
        return Err(format!(
            "masks of different sizes in one batch ({}x{} with {} values, and {mh}x{mw})",
            m.height,
            m.width,
            m.classes.len()
        ));
    }
    if let Some(v) = masks
        .iter()
        .flat_map(|m| &m.classes)
        .find(|&&v| v != ignore && usize::from(v) >= c)
    {
        return Err(format!(
            "class {v} out of range (the head has {c} classes; {ignore} is ignored)"
        ));
    }
    let logits = if (h, w) == (mh, mw) {
        logits
    } else {
        interpolate(
            logits,
            InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([mh, mw]),
        )
    };
    let device = logits.device();
    let classes: Vec<i64> = masks
        .iter()
        .flat_map(|m| &m.classes)
        .map(|&v| if v == ignore { 0 } else { i64::from(v) })
        .collect();
    let valid: Vec<f32> = masks
        .iter()
        .flat_map(|m| &m.classes)
        .map(|&v| f32::from(u8::from(v != ignore)))
        .collect();
    let count = valid.iter().filter(|&&v| v > 0.0).count();
    if count == 0 {
        return Err("every pixel of the batch is ignored".into());
    }
    let picked = log_softmax(logits, 1).gather(1, index_tensor(classes, [b, 1, mh, mw], &device));
    Ok((picked * float_tensor(valid, [b, 1, mh, mw], &device))
        .sum()
        .neg()
        / count as f64)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Tensor, TensorData};

    use super::*;

    #[test]
    fn mining_keeps_positives_and_the_hardest_negatives() {
        // Two positives: six negatives wanted, but only five other anchors exist.
        let loss = [0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.8];
        let labels = [0, 2, 0, 1, 0, 0, 0];
        assert_eq!(
            hard_negative_mining(&loss, &labels, 3),
            vec![true; 7],
            "every anchor"
        );
        // One positive (anchor 1, whose own loss does not count): the 3 highest
        // background losses among the others, anchors 6, 4 and 2.
        let labels = [0, 2, 0, 0, 0, 0, 0];
        assert_eq!(
            hard_negative_mining(&loss, &labels, 3),
            vec![false, true, true, false, true, false, true]
        );
        // No positive: nothing.
        assert_eq!(hard_negative_mining(&loss, &[0; 7], 3), vec![false; 7]);
    }

    #[test]
    fn segmentation_loss_resizes_logits_to_the_mask_by_nearest_neighbour() {
        let device = vpipe_core::device::default_device();
        // Logits [1, 2 classes, 2, 2]; mask 4x4: each logit pixel covers a 2x2 block
        // (PyTorch's nearest: source index floor(i * 2 / 4)).
        let logits = [0.0f32, 1.0, 2.0, -1.0, 0.5, 0.0, 0.0, 1.0];
        let t = Tensor::<4>::from_data(TensorData::new(logits.to_vec(), [1, 2, 2, 2]), &device);
        let classes: Vec<u8> = (0..16)
            .map(|i| match (i / 4, i % 4) {
                (0, 0) => 255,
                (r, c) => ((r + c) % 2) as u8,
            })
            .collect();
        let mask = Mask {
            height: 4,
            width: 4,
            classes: classes.clone(),
        };
        let got = segmentation_loss(t, &[mask], 255).expect("loss");
        let got: f64 = got
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .expect("f64")[0];
        let mut sum = 0.0f64;
        let mut n = 0;
        for (i, &c) in classes.iter().enumerate() {
            if c == 255 {
                continue;
            }
            let src = (i / 4 / 2) * 2 + (i % 4) / 2;
            let (z0, z1) = (f64::from(logits[src]), f64::from(logits[4 + src]));
            let lse = z0.max(z1) + ((z0 - z0.max(z1)).exp() + (z1 - z0.max(z1)).exp()).ln();
            sum += lse - if c == 0 { z0 } else { z1 };
            n += 1;
        }
        let want = sum / f64::from(n);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
