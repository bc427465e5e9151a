//! SSD target assignment, as ml-cvnets v0.1's `SSDMatcher`
//! (`cvnets/misc/match_prior.py`, `cvnets/misc/third_party/ssd_utils.py`,
//! `cvnets/misc/box_utils.py`), in the same `f32` arithmetic.
//!
//! Each anchor takes the ground-truth box it overlaps most; each box also claims
//! the anchor that overlaps it most (a later box wins a contested anchor), whatever
//! the overlap; anchors whose best overlap is under the IoU threshold are
//! background (label 0). Matched boxes are encoded against their anchors with the
//! centre and size variances (SSD's Eq. 2).

/// The matcher's settings; the defaults are ml-cvnets'.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatcherSettings {
    /// Overlap under which an anchor is background.
    pub iou_threshold: f32,
    /// Variance of the box-centre encoding.
    pub center_variance: f32,
    /// Variance of the box-size encoding.
    pub size_variance: f32,
}

impl Default for MatcherSettings {
    fn default() -> Self {
        Self {
            iou_threshold: 0.5,
            center_variance: 0.1,
            size_variance: 0.2,
        }
    }
}

/// The targets of one image: per anchor, the encoded box to regress and the class
/// (0: background).
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedTargets {
    /// Encoded boxes `(tx, ty, tw, th)`, one per anchor.
    pub locations: Vec<[f32; 4]>,
    /// Class per anchor, 0 for background.
    pub labels: Vec<usize>,
}

/// Centre form `(cx, cy, w, h)` to corners `(x1, y1, x2, y2)`.
pub fn center_to_corners(b: &[f32; 4]) -> [f32; 4] {
    [
        b[0] - b[2] * 0.5,
        b[1] - b[3] * 0.5,
        b[0] + b[2] * 0.5,
        b[1] + b[3] * 0.5,
    ]
}

/// Corners `(x1, y1, x2, y2)` to centre form `(cx, cy, w, h)`.
pub fn corners_to_center(b: &[f32; 4]) -> [f32; 4] {
    [
        (b[0] + b[2]) * 0.5,
        (b[1] + b[3]) * 0.5,
        b[2] - b[0],
        b[3] - b[1],
    ]
}

/// Intersection over union of two corner-form boxes, with ml-cvnets' `1e-5` added
/// to the union.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |x1: f32, y1: f32, x2: f32, y2: f32| (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
    let overlap = area(
        a[0].max(b[0]),
        a[1].max(b[1]),
        a[2].min(b[2]),
        a[3].min(b[3]),
    );
    let area_a = area(a[0], a[1], a[2], a[3]);
    let area_b = area(b[0], b[1], b[2], b[3]);
    overlap / (area_a + area_b - overlap + 1e-5)
}

/// Encodes a centre-form box against a centre-form anchor:
/// `((g_c - a_c) / a_size) / center_variance`, `ln(g_size / a_size) / size_variance`.
pub fn encode(gt: &[f32; 4], anchor: &[f32; 4], s: &MatcherSettings) -> [f32; 4] {
    [
        ((gt[0] - anchor[0]) / anchor[2]) / s.center_variance,
        ((gt[1] - anchor[1]) / anchor[3]) / s.center_variance,
        (gt[2] / anchor[2]).ln() / s.size_variance,
        (gt[3] / anchor[3]).ln() / s.size_variance,
    ]
}

/// Matches the ground truth of one image, `boxes` (corners, fractions of the image)
/// with their `labels` (1 and up), to `anchors` (centre form, fractions). An image
/// without boxes gets one all-zero box of label 0, as the reference does: every
/// anchor is background.
pub fn match_anchors(
    boxes: &[[f32; 4]],
    labels: &[usize],
    anchors: &[[f32; 4]],
    s: &MatcherSettings,
) -> MatchedTargets {
    let (boxes, labels): (Vec<[f32; 4]>, Vec<usize>) = if boxes.is_empty() {
        (vec![[0.0; 4]], vec![0])
    } else {
        (boxes.to_vec(), labels.to_vec())
    };
    let corners: Vec<[f32; 4]> = anchors.iter().map(center_to_corners).collect();
    // Best box per anchor (first on ties) and best anchor per box (first on ties).
    let mut best_box: Vec<(f32, usize)> = Vec::with_capacity(anchors.len());
    let mut best_anchor: Vec<(f32, usize)> = vec![(f32::NEG_INFINITY, 0); boxes.len()];
    for (a, anchor) in corners.iter().enumerate() {
        let mut best = (f32::NEG_INFINITY, 0);
        for (t, gt) in boxes.iter().enumerate() {
            let v = iou(gt, anchor);
            if v > best.0 {
                best = (v, t);
            }
            if v > best_anchor[t].0 {
                best_anchor[t] = (v, a);
            }
        }
        best_box.push(best);
    }
    for (t, &(_, a)) in best_anchor.iter().enumerate() {
        best_box[a].1 = t;
    }
    for &(_, a) in &best_anchor {
        best_box[a].0 = 2.0;
    }
    let mut out = MatchedTargets {
        locations: Vec::with_capacity(anchors.len()),
        labels: Vec::with_capacity(anchors.len()),
    };
    for (anchor, &(overlap, t)) in anchors.iter().zip(&best_box) {
        out.labels.push(if overlap < s.iou_threshold {
            0
        } else {
            labels[t]
        });
        out.locations
            .push(encode(&corners_to_center(&boxes[t]), anchor, s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_hand_computed_boxes() {
        // Two unit squares overlapping by half: 0.5 / (1 + 1 - 0.5 + 1e-5).
        let v = iou(&[0.0, 0.0, 1.0, 1.0], &[0.5, 0.0, 1.5, 1.0]);
        assert!((v - 0.5 / 1.50001).abs() < 1e-7, "{v}");
        assert_eq!(iou(&[0.0, 0.0, 0.1, 0.1], &[0.5, 0.5, 0.6, 0.6]), 0.0);
    }

    #[test]
    fn encoding_of_a_hand_computed_box() {
        let s = MatcherSettings::default();
        // Anchor centred at (0.5, 0.5), 0.2 x 0.4; box centred at (0.52, 0.46), 0.4 x 0.4.
        let t = encode(&[0.52, 0.46, 0.4, 0.4], &[0.5, 0.5, 0.2, 0.4], &s);
        let want = [1.0, -1.0, 2f32.ln() / 0.2, 0.0];
        for (a, b) in t.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{t:?} vs {want:?}");
        }
    }

    #[test]
    fn assignment_follows_overlap_threshold_and_forced_best_anchor() {
        let s = MatcherSettings::default();
        // Anchors (centre form): 0 sits on box A, 1 overlaps A by less than 0.5,
        // 2 is far from everything but is box B's best anchor (B is tiny and far).
        let anchors = [
            [0.25, 0.25, 0.5, 0.5],
            [0.5, 0.25, 0.5, 0.5],
            [0.9, 0.9, 0.2, 0.2],
        ];
        let boxes = [[0.0, 0.0, 0.5, 0.5], [0.95, 0.95, 0.99, 0.99]];
        let m = match_anchors(&boxes, &[3, 7], &anchors, &s);
        // Anchor 1 overlaps A by 1/3 < 0.5: background; anchor 2 is forced to B.
        assert_eq!(m.labels, vec![3, 0, 7]);
        assert_eq!(m.locations[0], [0.0, 0.0, 0.0, 0.0]);
        // An image without boxes: all background.
        let empty = match_anchors(&[], &[], &anchors, &s);
        assert_eq!(empty.labels, vec![0, 0, 0]);
    }
}
