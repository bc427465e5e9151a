//! The result type shared by every head.
//!
//! Every head turns its raw outputs into one [`HeadOutput`] per image, so that
//! pipelines, annotation and result files handle all tasks the same way.

use std::collections::BTreeMap;

use serde::Serialize;

/// One class with its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScore {
    /// Class index in the head's label set.
    pub class_id: usize,
    /// Class name.
    pub label: String,
    /// Probability (softmax of the logits).
    pub score: f32,
    /// The raw logit.
    pub logit: f32,
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// Box `[x1, y1, x2, y2]` in pixels of the image it refers to.
    pub bbox: [f32; 4],
    /// Class score (softmax probability).
    pub score: f32,
    /// Class index in the head's label set.
    pub class_id: usize,
    /// Class name.
    pub label: String,
    /// The id of the track it belongs to, when its head has a tracker
    /// (`tracker:` in the pipeline file) and a track took it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
}

/// Area of one class in a segmentation mask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassArea {
    /// Class index.
    pub class_id: usize,
    /// Class name.
    pub label: String,
    /// Number of pixels.
    pub pixels: usize,
    /// Share of the image, 0 to 1.
    pub fraction: f32,
}

/// A region's counts on one frame (`zones` and `lines` of a detection head in the
/// pipeline file), keyed by class name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RegionCount {
    /// What a polygon zone holds on this frame.
    Zone {
        /// The head whose detections are counted.
        head: String,
        /// The zone.
        name: String,
        /// Detections inside, per class.
        counts: BTreeMap<String, u64>,
        /// Detections inside.
        total: u64,
    },
    /// The crossings of a line since the run started, by tracks.
    Line {
        /// The head whose tracks are counted.
        head: String,
        /// The line.
        name: String,
        /// Crossings to the line's right (seen from its start towards its end), per class.
        #[serde(rename = "in")]
        ins: BTreeMap<String, u64>,
        /// Crossings to its left, per class.
        out: BTreeMap<String, u64>,
        /// Crossings to its right.
        in_total: u64,
        /// Crossings to its left.
        out_total: u64,
    },
}

/// The post-processed output of one head for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum HeadOutput {
    /// Image classification: the top-k classes, best first.
    Classification {
        /// The best classes, highest score first.
        top_k: Vec<ClassScore>,
    },
    /// Object detection: the kept boxes, highest score first.
    Detection {
        /// The detections.
        detections: Vec<Detection>,
    },
    /// Semantic segmentation: a class index per pixel.
    Segmentation {
        /// Mask width.
        width: usize,
        /// Mask height.
        height: usize,
        /// Class index per pixel, row-major.
        #[serde(skip)]
        mask: Vec<u8>,
        /// Pixels per class present, largest first.
        areas: Vec<ClassArea>,
    },
    /// A result of a kind of the head's own (a head from another crate): written
    /// into results as its fields, and drawn by the head's own annotation hook.
    #[serde(untagged)]
    Custom(CustomOutput),
}

/// The result of a head of a kind vpipe does not know: a task name and fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomOutput {
    /// The task, written as the `task` field of the result (e.g. `embedding`).
    pub task: String,
    /// The fields written beside it.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl CustomOutput {
    /// A result of task `task` whose fields are those of `value` (a struct or a map).
    pub fn new(task: impl Into<String>, value: &impl Serialize) -> Result<Self, String> {
        let task = task.into();
        match serde_json::to_value(value) {
            Ok(serde_json::Value::Object(fields)) if !fields.contains_key("task") => {
                Ok(Self { task, fields })
            }
            Ok(serde_json::Value::Object(_)) => Err(format!(
                "the fields of a '{task}' result may not include 'task' (it names the kind)"
            )),
            Ok(other) => Err(format!(
                "a '{task}' result must serialize to an object of fields, not {other}"
            )),
            Err(e) => Err(format!("cannot serialize a '{task}' result: {e}")),
        }
    }
}

/// Softmax over `logits`, computed in `f64` for stability.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// The `k` best classes of one row of logits, highest first (ties: lower index first).
pub fn top_k(logits: &[f32], k: usize, labels: &[String]) -> Vec<ClassScore> {
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| ClassScore {
            class_id: i,
            label: labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("class_{i}")),
            score: probs[i],
            logit: logits[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_results_are_written_with_their_task() {
        #[derive(Serialize)]
        struct Embedding {
            vector: Vec<f32>,
        }
        let out = HeadOutput::Custom(
            CustomOutput::new("embedding", &Embedding { vector: vec![0.5] }).unwrap(),
        );
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"task":"embedding","vector":[0.5]}"#
        );
        assert!(CustomOutput::new("x", &1).is_err());
        assert!(CustomOutput::new("x", &serde_json::json!({"task": 1})).is_err());
    }

    #[test]
    fn top_k_orders_and_names() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let t = top_k(&[0.5, 2.0, 1.0, 3.0], 3, &labels);
        let ids: Vec<usize> = t.iter().map(|c| c.class_id).collect();
        assert_eq!(ids, vec![3, 1, 2]);
        assert_eq!(t[0].label, "class_3");
        assert_eq!(t[1].label, "b");
        let total: f32 = softmax(&[0.5, 2.0, 1.0, 3.0]).iter().sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
