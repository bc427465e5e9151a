//! COCO bbox evaluation, equal to pycocotools' `COCOeval(gt, dt, "bbox")` with its default
//! parameters (`evaluate`, `accumulate`, `summarize`; `cocoeval.py` of pycocotools 2.0).
//!
//! Everything pycocotools decides is decided the same way: the images and categories are the
//! ground truth file's (detections of other categories are left out); crowd regions and
//! ground truth outside an area range are ignored, a detection matched to one is ignored, an
//! unmatched detection outside the area range is ignored; at most 100 detections per image
//! and category, by score; IoU thresholds .50:.05:.95 and 101 recall points from numpy's
//! `linspace`; greedy matching by score; the precision envelope; -1 where a value is
//! undefined; ties in score kept in their order (numpy's stable `mergesort`); a detection's
//! area is its box's. The tests compare every number with pycocotools' on coco128.
//!
//! One difference: pycocotools fails on an empty results list; here no detections give
//! precision and recall 0 for each category with ground truth.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use vpipe_data::DatasetReport;
use vpipe_data::coco::CocoDataset;

use crate::{EvalError, Result};

/// One detection of a COCO results file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Detection {
    /// The image id (of the ground truth file).
    pub image_id: i64,
    /// The category id (of the ground truth file).
    pub category_id: i64,
    /// The box `[x, y, width, height]` in pixels.
    pub bbox: [f64; 4],
    /// The confidence.
    pub score: f64,
}

/// Reads a COCO results file: a JSON list of detections.
pub fn read_detections(path: &Path) -> Result<Vec<Detection>> {
    let bytes = std::fs::read(path).map_err(|cause| EvalError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    let invalid = |message: String| EvalError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("the file is empty".into()));
    }
    let values: Vec<serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("not a JSON list of detections: {e}")))?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let d =
                Detection::deserialize(v).map_err(|e| invalid(format!("detection {i}: {e}")))?;
            if !d.score.is_finite() || d.bbox.iter().any(|v| !v.is_finite()) {
                return Err(invalid(format!(
                    "detection {i}: a score or box value is not finite"
                )));
            }
            Ok(d)
        })
        .collect()
}

/// The 12 summary numbers' names, in pycocotools' order.
pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// Report reason: detections whose category is not among the ground truth's.
pub const UNKNOWN_CATEGORY: &str =
    "detections of a category the ground truth does not have left out";

/// One category's results.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassResult {
    /// The category id.
    pub category_id: i64,
    /// The category name.
    pub name: String,
    /// AP@[.50:.95], all areas, 100 detections; -1 when the category has no ground truth.
    pub ap: f64,
    /// The precision at each of the 101 recall points at IoU 0.50 (all areas, 100
    /// detections): its precision-recall curve; -1 when undefined.
    pub precision_iou50: Vec<f64>,
}

/// The result of a COCO bbox evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoEvalResult {
    /// The 12 summary numbers ([`STAT_NAMES`]), fractions; -1 where undefined.
    pub stats: [f64; 12],
    /// Each category of the ground truth, by id.
    pub classes: Vec<ClassResult>,
    /// The 101 recall points the curves are sampled at.
    pub recall_points: Vec<f64>,
    /// Detections left out, counted.
    pub report: DatasetReport,
}

impl CocoEvalResult {
    /// The precision-recall curve of all classes at IoU 0.50: at each recall point the mean
    /// precision of the classes with ground truth (what mAP@0.5 averages).
    pub fn overall_precision_iou50(&self) -> Vec<f64> {
        (0..self.recall_points.len())
            .map(|r| {
                let defined: Vec<f64> = self
                    .classes
                    .iter()
                    .map(|c| c.precision_iou50[r])
                    .filter(|&p| p > -1.0)
                    .collect();
                if defined.is_empty() {
                    -1.0
                } else {
                    defined.iter().sum::<f64>() / defined.len() as f64
                }
            })
            .collect()
    }
}

/// numpy's `linspace(start, stop, num)` (endpoint included), value for value.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    y[num - 1] = stop;
    y
}

/// numpy's `np.spacing(1)`.
const EPS: f64 = f64::EPSILON;
/// The detections per image evaluated.
const MAX_DETS: [usize; 3] = [1, 10, 100];
/// The area ranges all, small, medium, large.
const AREA_RANGES: [[f64; 2]; 4] = [
    [0.0, 1e10],
    [0.0, 32.0 * 32.0],
    [32.0 * 32.0, 96.0 * 96.0],
    [96.0 * 96.0, 1e10],
];

/// A ground truth box as the evaluation sees it.
struct Gt {
    id: i64,
    bbox: [f64; 4],
    area: f64,
    crowd: bool,
}

/// A detection as the evaluation sees it (`id` is its position in the file plus one, as
/// `loadRes` numbers them).
struct Dt {
    id: i64,
    bbox: [f64; 4],
    area: f64,
    score: f64,
}

/// One image and category: its ground truth, its detections by score (at most 100), and
/// their IoUs (`ious[detection][ground truth]`).
struct ImageCategory<'a> {
    gts: Vec<&'a Gt>,
    dts: Vec<&'a Dt>,
    ious: Vec<Vec<f64>>,
}

/// One image and category's matching at one area range (`evaluateImg`).
struct ImageEval {
    /// Per IoU threshold, per detection (by score): the matched ground truth id, 0 if none.
    dt_matches: Vec<Vec<i64>>,
    /// Per IoU threshold, per detection: ignored.
    dt_ignore: Vec<Vec<bool>>,
    /// The detections' scores, highest first.
    dt_scores: Vec<f64>,
    /// Per ground truth: ignored.
    gt_ignore: Vec<bool>,
}

/// pycocotools' `bbIou`: IoU of boxes `[x, y, w, h]`; over the detection's area alone for a
/// crowd region.
fn box_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let ga = g[2] * g[3];
    let da = d[2] * d[3];
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let u = if crowd { da } else { da + ga - i };
    i / u
}

/// The indices of `dts` by descending score, ties in their order (numpy's stable sort of
/// the negated scores).
fn by_score(scores: impl Iterator<Item = f64>) -> Vec<usize> {
    let scores: Vec<f64> = scores.collect();
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// `evaluateImg`: greedy matching of one image and category's detections (sorted by score,
/// at most `max_det`) to its ground truth at every IoU threshold, for area range `range`.
fn evaluate_image(
    gts: &[&Gt],
    dts: &[&Dt],
    ious: &[Vec<f64>],
    range: [f64; 2],
    iou_thrs: &[f64],
    max_det: usize,
) -> Option<ImageEval> {
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    let ignore: Vec<bool> = gts
        .iter()
        .map(|g| g.crowd || g.area < range[0] || g.area > range[1])
        .collect();
    // Ground truth not ignored first, stably.
    let mut gt_order: Vec<usize> = (0..gts.len()).collect();
    gt_order.sort_by_key(|&i| ignore[i]);
    let gt_ignore: Vec<bool> = gt_order.iter().map(|&i| ignore[i]).collect();
    let crowd: Vec<bool> = gt_order.iter().map(|&i| gts[i].crowd).collect();
    let d = dts.len().min(max_det);
    let t_n = iou_thrs.len();
    let mut gt_matched = vec![vec![0i64; gts.len()]; t_n];
    let mut dt_matches = vec![vec![0i64; d]; t_n];
    let mut dt_ignore = vec![vec![false; d]; t_n];
    if !gts.is_empty() && d > 0 {
        for (t, &thr) in iou_thrs.iter().enumerate() {
            for (di, dt) in dts[..d].iter().enumerate() {
                let mut iou = thr.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for (gi, &g) in gt_order.iter().enumerate() {
                    if gt_matched[t][gi] > 0 && !crowd[gi] {
                        continue;
                    }
                    if let Some(m) = m
                        && !gt_ignore[m]
                        && gt_ignore[gi]
                    {
                        break;
                    }
                    if ious[di][g] < iou {
                        continue;
                    }
                    iou = ious[di][g];
                    m = Some(gi);
                }
                if let Some(m) = m {
                    dt_ignore[t][di] = gt_ignore[m];
                    dt_matches[t][di] = gts[gt_order[m]].id;
                    gt_matched[t][m] = dt.id;
                }
            }
        }
    }
    for (di, dt) in dts[..d].iter().enumerate() {
        let outside = dt.area < range[0] || dt.area > range[1];
        for t in 0..t_n {
            dt_ignore[t][di] |= dt_matches[t][di] == 0 && outside;
        }
    }
    Some(ImageEval {
        dt_matches,
        dt_ignore,
        dt_scores: dts[..d].iter().map(|d| d.score).collect(),
        gt_ignore,
    })
}

/// The precision at each recall point (`q`) and the final recall of one category, area
/// range and detection limit over all images (`accumulate`); `None` when there is no
/// ground truth to find.
fn accumulate(
    evals: &[&ImageEval],
    max_det: usize,
    t: usize,
    rec_thrs: &[f64],
) -> Option<(Vec<f64>, f64)> {
    let npig = evals
        .iter()
        .flat_map(|e| &e.gt_ignore)
        .filter(|&&i| !i)
        .count();
    if npig == 0 {
        return None;
    }
    let mut dets: Vec<(f64, i64, bool)> = Vec::new();
    for e in evals {
        let n = e.dt_scores.len().min(max_det);
        for i in 0..n {
            dets.push((e.dt_scores[i], e.dt_matches[t][i], e.dt_ignore[t][i]));
        }
    }
    let order = by_score(dets.iter().map(|d| d.0));
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    let mut rc = Vec::with_capacity(order.len());
    let mut pr = Vec::with_capacity(order.len());
    for &i in &order {
        let (_, matched, ignored) = dets[i];
        if !ignored {
            if matched != 0 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
        }
        rc.push(tp / npig as f64);
        pr.push(tp / (fp + tp + EPS));
    }
    let recall = rc.last().copied().unwrap_or(0.0);
    for i in (1..pr.len()).rev() {
        if pr[i] > pr[i - 1] {
            pr[i - 1] = pr[i];
        }
    }
    let q = rec_thrs
        .iter()
        .map(|&r| {
            // numpy's searchsorted(rc, r, side="left"): the first index with rc >= r.
            let i = rc.partition_point(|&v| v < r);
            pr.get(i).copied().unwrap_or(0.0)
        })
        .collect();
    Some((q, recall))
}

/// Mean of the values above -1, or -1 when there are none (`summarize`).
fn mean_defined(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values.filter(|&v| v > -1.0) {
        sum += v;
        n += 1;
    }
    if n == 0 { -1.0 } else { sum / n as f64 }
}

/// Evaluates `detections` against the ground truth `gt` as pycocotools' `COCOeval` (bbox)
/// does. A detection of an image the ground truth does not have is an error (pycocotools
/// refuses it too); detections of unknown categories are left out and counted.
pub fn evaluate_bbox(gt: &CocoDataset, detections: &[Detection]) -> Result<CocoEvalResult> {
    let mut img_ids: Vec<i64> = gt.images.iter().map(|i| i.id).collect();
    img_ids.sort_unstable();
    let mut cats: Vec<(i64, &str)> = gt
        .categories
        .iter()
        .map(|c| (c.id, c.name.as_str()))
        .collect();
    cats.sort_unstable_by_key(|c| c.0);
    let img_index: HashMap<i64, usize> =
        img_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let cat_index: HashMap<i64, usize> = cats.iter().enumerate().map(|(i, c)| (c.0, i)).collect();
    let (n_img, n_cat) = (img_ids.len(), cats.len());
    let iou_thrs = linspace(0.5, 0.95, 10);
    let rec_thrs = linspace(0.0, 1.0, 101);

    let mut gts: Vec<Vec<Gt>> = (0..n_img * n_cat).map(|_| Vec::new()).collect();
    for a in &gt.annotations {
        if let (Some(&i), Some(&k)) = (img_index.get(&a.image_id), cat_index.get(&a.category_id)) {
            gts[k * n_img + i].push(Gt {
                id: a.id,
                bbox: a.bbox,
                area: a.area,
                crowd: a.iscrowd,
            });
        }
    }
    let mut report = DatasetReport::default();
    let mut dts: Vec<Vec<Dt>> = (0..n_img * n_cat).map(|_| Vec::new()).collect();
    for (n, d) in detections.iter().enumerate() {
        let Some(&i) = img_index.get(&d.image_id) else {
            return Err(EvalError::Invalid {
                path: gt.path.clone(),
                message: format!(
                    "detection {n} is of image id {}, which the ground truth does not have",
                    d.image_id
                ),
            });
        };
        let Some(&k) = cat_index.get(&d.category_id) else {
            report.add(
                UNKNOWN_CATEGORY,
                format!("detection {n} (category {})", d.category_id),
            );
            continue;
        };
        dts[k * n_img + i].push(Dt {
            id: n as i64 + 1,
            bbox: d.bbox,
            area: d.bbox[2] * d.bbox[3],
            score: d.score,
        });
    }

    let max_det = MAX_DETS[MAX_DETS.len() - 1];
    let t_n = iou_thrs.len();
    let r_n = rec_thrs.len();
    let (a_n, m_n) = (AREA_RANGES.len(), MAX_DETS.len());
    // precision[t][r][k][a][m] and recall[t][k][a][m], -1 where undefined.
    let p_at = |t: usize, r: usize, k: usize, a: usize, m: usize| {
        (((t * r_n + r) * n_cat + k) * a_n + a) * m_n + m
    };
    let rc_at = |t: usize, k: usize, a: usize, m: usize| ((t * n_cat + k) * a_n + a) * m_n + m;
    let mut precision = vec![-1.0f64; t_n * r_n * n_cat * a_n * m_n];
    let mut recall = vec![-1.0f64; t_n * n_cat * a_n * m_n];
    for k in 0..n_cat {
        // Per image: its ground truth, detections by score (at most 100), their IoUs.
        let per_image: Vec<ImageCategory> = (0..n_img)
            .map(|i| {
                let g: Vec<&Gt> = gts[k * n_img + i].iter().collect();
                let all = &dts[k * n_img + i];
                let d: Vec<&Dt> = by_score(all.iter().map(|d| d.score))
                    .into_iter()
                    .take(max_det)
                    .map(|j| &all[j])
                    .collect();
                let ious = d
                    .iter()
                    .map(|d| {
                        g.iter()
                            .map(|g| box_iou(&d.bbox, &g.bbox, g.crowd))
                            .collect()
                    })
                    .collect();
                ImageCategory {
                    gts: g,
                    dts: d,
                    ious,
                }
            })
            .collect();
        for (a, &range) in AREA_RANGES.iter().enumerate() {
            let evals: Vec<ImageEval> = per_image
                .iter()
                .filter_map(|c| evaluate_image(&c.gts, &c.dts, &c.ious, range, &iou_thrs, max_det))
                .collect();
            if evals.is_empty() {
                continue;
            }
            let evals: Vec<&ImageEval> = evals.iter().collect();
            for (m, &md) in MAX_DETS.iter().enumerate() {
                for t in 0..t_n {
                    if let Some((q, rc)) = accumulate(&evals, md, t, &rec_thrs) {
                        recall[rc_at(t, k, a, m)] = rc;
                        for (r, v) in q.into_iter().enumerate() {
                            precision[p_at(t, r, k, a, m)] = v;
                        }
                    }
                }
            }
        }
    }

    let thr_index = |v: f64| iou_thrs.iter().position(|&t| t == v);
    let ap = |thr: Option<f64>, a: usize, m: usize| {
        let ts: Vec<usize> = match thr {
            Some(v) => thr_index(v).into_iter().collect(),
            None => (0..t_n).collect(),
        };
        let p = &precision;
        mean_defined(ts.into_iter().flat_map(move |t| {
            (0..r_n).flat_map(move |r| (0..n_cat).map(move |k| p[p_at(t, r, k, a, m)]))
        }))
    };
    let ar = |a: usize, m: usize| {
        let rc = &recall;
        mean_defined((0..t_n).flat_map(move |t| (0..n_cat).map(move |k| rc[rc_at(t, k, a, m)])))
    };
    let stats = [
        ap(None, 0, 2),
        ap(Some(0.5), 0, 2),
        ap(Some(0.75), 0, 2),
        ap(None, 1, 2),
        ap(None, 2, 2),
        ap(None, 3, 2),
        ar(0, 0),
        ar(0, 1),
        ar(0, 2),
        ar(1, 2),
        ar(2, 2),
        ar(3, 2),
    ];
    let classes = cats
        .iter()
        .enumerate()
        .map(|(k, &(id, name))| ClassResult {
            category_id: id,
            name: name.to_string(),
            ap: mean_defined(
                (0..t_n)
                    .flat_map(|t| (0..r_n).map(move |r| (t, r)))
                    .map(|(t, r)| precision[p_at(t, r, k, 0, 2)]),
            ),
            precision_iou50: (0..r_n).map(|r| precision[p_at(0, r, k, 0, 2)]).collect(),
        })
        .collect();
    Ok(CocoEvalResult {
        stats,
        classes,
        recall_points: rec_thrs,
        report,
    })
}
