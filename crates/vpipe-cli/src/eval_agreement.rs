//! `vpipe eval agreement`: how closely a student (heads trained on one shared
//! backbone, for example by `vpipe train --distill`) reproduces its teachers, on the
//! same frames. Both pipelines run over the input; heads of the same name and task
//! are compared, the teacher's results standing as the ground truth:
//!
//! - segmentation: pixel agreement (the pixel accuracy against the teacher's mask)
//!   and mIoU against the teacher's masks;
//! - detection: COCO mAP (pycocotools' evaluation) against the teacher's detections
//!   scoring at least `--teacher-threshold`;
//! - classification: top-1 agreement (the same best class) and how often the
//!   teacher's best class is among the student's top 5.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use clap::Args;
use serde_json::{Value, json};
use vpipe_backbone::Precision;
use vpipe_core::result::HeadOutput;
use vpipe_data::DatasetReport;
use vpipe_data::coco::{Annotation, Category, CocoDataset, CocoImage};
use vpipe_eval::coco_eval::{self, Detection, STAT_NAMES};
use vpipe_eval::confusion::ConfusionMatrix;
use vpipe_eval::segmentation::segmentation_metrics;
use vpipe_heads::HeadRegistry;
use vpipe_pipeline::{FrameResults, NamedOutput, RunOptions, Sink, resolve_input};

use crate::eval::{Common, publish};

/// Arguments of `vpipe eval agreement`.
#[derive(Debug, Args)]
pub(crate) struct AgreementArgs {
    /// The teachers' pipeline (for example `pipelines/multitask.yaml`: each public
    /// checkpoint on its own backbone).
    #[arg(long)]
    teacher: PathBuf,
    /// The student's pipeline (for example the `pipeline.yaml` `vpipe train` wrote).
    #[arg(long)]
    student: PathBuf,
    /// Run the student with this precision of the CPU's matrix products instead of its
    /// file's `precision:` (`--teacher P.yaml --student P.yaml --student-precision
    /// bf16` measures bf16 against fp32, `int8` int8).
    #[arg(long)]
    student_precision: Option<Precision>,
    /// The frames both run on: an image, a folder, a glob or a video.
    #[arg(long)]
    input: String,
    /// Teacher detections scoring below this are not counted as objects.
    #[arg(long, default_value_t = 0.5)]
    teacher_threshold: f32,
    /// Compare only this head (default: every head name the two pipelines share).
    #[arg(long)]
    head: Option<String>,
    #[command(flatten)]
    common: Common,
}

/// Every frame's results, in frame order.
type Frames = Arc<Mutex<Vec<(u64, Vec<NamedOutput>)>>>;

/// A sink that keeps every frame's results.
struct Keep(Frames);

impl Sink for Keep {
    fn name(&self) -> String {
        "agreement".into()
    }

    fn write(&mut self, frame: &FrameResults<'_>) -> vpipe_pipeline::Result<Vec<PathBuf>> {
        let mut frames = self.0.lock().unwrap_or_else(|e| e.into_inner());
        frames.push((frame.index, frame.outputs.to_vec()));
        Ok(Vec::new())
    }

    fn finish(self: Box<Self>) -> vpipe_pipeline::Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
}

/// Runs the pipeline at `path` over `input`, its own outputs under `out`; returns
/// each frame's results by frame number.
fn run_over(
    path: &Path,
    precision: Option<Precision>,
    input: &str,
    out: &Path,
    registry: &HeadRegistry,
) -> Result<Vec<(u64, Vec<NamedOutput>)>> {
    let pipeline = crate::pipeline::compile(path, None, None, precision, registry)?;
    let frames: Frames = Arc::default();
    let options = RunOptions {
        out_dir: out.to_path_buf(),
        progress: true,
        stop: Arc::new(AtomicBool::new(false)),
        max_frames: None,
        overwrite: true,
    };
    let summary = vpipe_pipeline::run_with_sinks(
        &pipeline,
        &resolve_input(input, false)?,
        &options,
        vec![Box::new(Keep(Arc::clone(&frames)))],
    )?;
    for (input, message) in &summary.failed {
        eprintln!("warning: {input}: {message} (left out of the comparison)");
    }
    let mut frames = std::mem::take(&mut *frames.lock().unwrap_or_else(|e| e.into_inner()));
    frames.sort_by_key(|(i, _)| *i);
    Ok(frames)
}

/// Runs the command.
pub(crate) fn run(args: AgreementArgs, registry: &HeadRegistry) -> Result<()> {
    let scratch;
    let out = match &args.common.out {
        Some(o) => o.clone(),
        None => {
            scratch = tempfile::tempdir()?;
            scratch.path().to_path_buf()
        }
    };
    let teacher = run_over(
        &args.teacher,
        None,
        &args.input,
        &out.join("teacher"),
        registry,
    )?;
    let student = run_over(
        &args.student,
        args.student_precision,
        &args.input,
        &out.join("student"),
        registry,
    )?;
    // The frames both gave results for, paired.
    let pairs: Vec<(&[NamedOutput], &[NamedOutput])> = teacher
        .iter()
        .filter_map(|(i, t)| {
            student
                .iter()
                .find(|(j, _)| j == i)
                .map(|(_, s)| (t.as_slice(), s.as_slice()))
        })
        .collect();
    if pairs.is_empty() {
        bail!("no frame gave results in both pipelines");
    }
    let names: Vec<String> = pairs[0]
        .0
        .iter()
        .filter(|t| pairs[0].1.iter().any(|s| s.head == t.head))
        .map(|t| t.head.clone())
        .filter(|n| args.head.as_ref().is_none_or(|h| h == n))
        .collect();
    if names.is_empty() {
        bail!(
            "the pipelines share no head name{} (teacher: {}; student: {})",
            args.head
                .as_ref()
                .map(|h| format!(" '{h}'"))
                .unwrap_or_default(),
            pairs[0]
                .0
                .iter()
                .map(|o| o.head.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            pairs[0]
                .1
                .iter()
                .map(|o| o.head.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut heads = serde_json::Map::new();
    for name in &names {
        let outputs: Vec<(&HeadOutput, &HeadOutput)> = pairs
            .iter()
            .filter_map(|(t, s)| {
                let t = t.iter().find(|o| &o.head == name)?;
                let s = s.iter().find(|o| &o.head == name)?;
                Some((&t.output, &s.output))
            })
            .collect();
        heads.insert(
            name.clone(),
            agreement(name, &outputs, args.teacher_threshold)?,
        );
    }
    let metrics = json!({ "frames": pairs.len(), "heads": heads });
    publish(&metrics, &args.common, || table(&metrics))
}

/// The agreement of one head over the frames: `(teacher, student)` results.
fn agreement(name: &str, outputs: &[(&HeadOutput, &HeadOutput)], threshold: f32) -> Result<Value> {
    match outputs[0] {
        (HeadOutput::Segmentation { .. }, HeadOutput::Segmentation { .. }) => {
            let classes = outputs
                .iter()
                .flat_map(|(t, s)| [mask_of(t), mask_of(s)])
                .flat_map(|m| m.iter().copied())
                .max()
                .map_or(1, |m| usize::from(m) + 1);
            let mut matrix = ConfusionMatrix::new(classes);
            for (t, s) in outputs {
                matrix.add_masks(mask_of(t), mask_of(s), None)?;
            }
            let m = segmentation_metrics(&matrix);
            Ok(json!({
                "task": "segmentation",
                "pixel_agreement": m.pixel_accuracy,
                "mIoU": m.miou,
                "pixels": matrix.total(),
            }))
        }
        (HeadOutput::Classification { .. }, HeadOutput::Classification { .. }) => {
            let (mut top1, mut top5) = (0usize, 0usize);
            // |student logit - teacher logit| / |teacher logit| of the teacher's best
            // class, on the frames where the student reports that class too.
            let mut logit_errors = Vec::new();
            for (t, s) in outputs {
                let (
                    HeadOutput::Classification { top_k: t },
                    HeadOutput::Classification { top_k: s },
                ) = (t, s)
                else {
                    bail!("head '{name}' changes its kind of result between frames");
                };
                let (Some(best), Some(first)) = (t.first(), s.first()) else {
                    continue;
                };
                top1 += usize::from(best.class_id == first.class_id);
                top5 += usize::from(s.iter().take(5).any(|c| c.class_id == best.class_id));
                if let Some(same) = s.iter().find(|c| c.class_id == best.class_id) {
                    logit_errors.push(
                        f64::from((same.logit - best.logit).abs())
                            / f64::from(best.logit.abs()).max(f64::MIN_POSITIVE),
                    );
                }
            }
            let n = outputs.len() as f64;
            logit_errors.sort_by(f64::total_cmp);
            let mean = logit_errors.iter().sum::<f64>() / logit_errors.len().max(1) as f64;
            Ok(json!({
                "task": "classification",
                "top1_agreement": top1 as f64 / n,
                "teacher_top1_in_student_top5": top5 as f64 / n,
                "top1_logit_rel_error_mean": mean,
                "top1_logit_rel_error_max": logit_errors.last().copied().unwrap_or(0.0),
            }))
        }
        (HeadOutput::Detection { .. }, HeadOutput::Detection { .. }) => {
            detection_agreement(name, outputs, threshold)
        }
        _ => bail!("head '{name}' gives results of different kinds in the two pipelines"),
    }
}

/// A segmentation result's mask (empty for other kinds).
fn mask_of(o: &HeadOutput) -> &[u8] {
    match o {
        HeadOutput::Segmentation { mask, .. } => mask,
        _ => &[],
    }
}

/// COCO mAP of the student's detections against the teacher's confident ones.
fn detection_agreement(
    name: &str,
    outputs: &[(&HeadOutput, &HeadOutput)],
    threshold: f32,
) -> Result<Value> {
    let mut gt = CocoDataset {
        path: PathBuf::from(format!("teacher's '{name}' detections")),
        images: Vec::new(),
        annotations: Vec::new(),
        categories: Vec::new(),
        report: DatasetReport::default(),
    };
    let mut detections = Vec::new();
    let mut categories = std::collections::BTreeMap::new();
    for (frame, (t, s)) in outputs.iter().enumerate() {
        let (HeadOutput::Detection { detections: t }, HeadOutput::Detection { detections: s }) =
            (t, s)
        else {
            bail!("head '{name}' changes its kind of result between frames");
        };
        // Ids from 1: pycocotools treats an annotation id of 0 as unmatched.
        let image_id = frame as i64 + 1;
        gt.images.push(CocoImage {
            id: image_id,
            file_name: format!("frame {frame}"),
            width: 0,
            height: 0,
        });
        for d in t.iter().filter(|d| d.score >= threshold) {
            let [x1, y1, x2, y2] = d.bbox.map(f64::from);
            categories.insert(d.class_id, d.label.clone());
            gt.annotations.push(Annotation {
                id: gt.annotations.len() as i64 + 1,
                image_id,
                category_id: d.class_id as i64,
                bbox: [x1, y1, x2 - x1, y2 - y1],
                area: (x2 - x1) * (y2 - y1),
                iscrowd: false,
                segmentation: None,
            });
        }
        for d in s {
            let [x1, y1, x2, y2] = d.bbox.map(f64::from);
            detections.push(Detection {
                image_id,
                category_id: d.class_id as i64,
                bbox: [x1, y1, x2 - x1, y2 - y1],
                score: f64::from(d.score),
            });
        }
    }
    gt.categories = categories
        .into_iter()
        .map(|(id, name)| Category {
            id: id as i64,
            name,
            supercategory: None,
        })
        .collect();
    let objects = gt.annotations.len();
    if objects == 0 {
        return Ok(json!({
            "task": "detection",
            "teacher_objects": 0,
            "note": format!("the teacher found no object scoring at least {threshold}"),
        }));
    }
    // Student detections of classes the teacher never found are false positives
    // that COCO's per-class evaluation leaves out; count them apart.
    let known: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
    let other = detections
        .iter()
        .filter(|d| !known.contains(&d.category_id))
        .count();
    detections.retain(|d| known.contains(&d.category_id));
    let r = coco_eval::evaluate_bbox(&gt, &detections)?;
    let mut v = serde_json::Map::new();
    v.insert("task".into(), json!("detection"));
    for (n, s) in STAT_NAMES.iter().zip(r.stats) {
        v.insert((*n).to_string(), json!(s));
    }
    v.insert("teacher_objects".into(), json!(objects));
    v.insert("student_detections".into(), json!(detections.len() + other));
    v.insert("student_detections_of_other_classes".into(), json!(other));
    Ok(Value::Object(v))
}

/// The metrics as a table.
fn table(metrics: &Value) -> String {
    let mut s = format!("frames compared: {}\n", metrics["frames"]);
    if let Some(heads) = metrics["heads"].as_object() {
        for (name, m) in heads {
            s += &format!("head '{name}' ({}):", m["task"].as_str().unwrap_or("?"));
            if let Some(o) = m.as_object() {
                for (k, v) in o.iter().filter(|(k, _)| *k != "task") {
                    match v.as_f64() {
                        Some(x) if v.is_f64() => s += &format!(" {k} {x:.4}"),
                        _ => s += &format!(" {k} {v}"),
                    }
                }
            }
            s.push('\n');
        }
    }
    s
}
