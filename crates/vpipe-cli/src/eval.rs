//! `vpipe eval`: detection (COCO bbox, as pycocotools), segmentation (mIoU) and
//! classification (top-1, top-5) metrics of prediction files, or of a pipeline run over a
//! dataset (see `eval_run.rs`), with their plots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use vpipe_data::DatasetReport;
use vpipe_data::classification::ClassificationDataset;
use vpipe_data::coco::CocoDataset;
use vpipe_data::mask_folder::{ClassMask, pair_by_stem, read_class_mask};
use vpipe_eval::classification::ClassificationEval;
use vpipe_eval::coco_eval::{self, Detection, STAT_NAMES};
use vpipe_eval::confusion::ConfusionMatrix;
use vpipe_eval::plots;
use vpipe_eval::segmentation::segmentation_metrics;
use vpipe_heads::HeadRegistry;

use crate::eval_run;

/// Arguments of `vpipe eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    task: EvalTask,
}

#[derive(Debug, Subcommand)]
enum EvalTask {
    /// COCO bbox evaluation, as pycocotools' COCOeval: AP, AP50, AP75, APs/m/l, AR1/10/100,
    /// ARs/m/l and per-class AP.
    Detection(DetectionArgs),
    /// Semantic segmentation: per-class IoU, mIoU, pixel accuracy, from one confusion
    /// matrix over the whole dataset.
    Segmentation(SegmentationArgs),
    /// Classification: top-1 and top-5 accuracy over an ImageFolder tree or a CSV file.
    Classification(ClassificationArgs),
    /// Teacher-student agreement: two pipelines on the same frames, the teacher's results
    /// as the ground truth (pixel agreement and mIoU, detection mAP, top-1 agreement).
    Agreement(crate::eval_agreement::AgreementArgs),
}

/// Options every task has.
#[derive(Debug, Args)]
pub(crate) struct Common {
    /// Print the metrics as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write metrics.json and the plots (PNG) into this folder; with --pipeline, also the
    /// predictions.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Running a pipeline over the dataset instead of reading predictions.
#[derive(Debug, Args)]
pub(crate) struct PipelineMode {
    /// Run this pipeline over the dataset's images and evaluate its predictions (written
    /// under --out, which it needs).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// With --pipeline: the head whose results are evaluated (default: the only head of
    /// the task).
    #[arg(long, requires = "pipeline")]
    pub head: Option<String>,
}

#[derive(Debug, Args)]
struct DetectionArgs {
    /// Ground truth: COCO instances JSON.
    #[arg(long)]
    annotations: PathBuf,
    /// Detections: COCO results JSON (a list of image_id, category_id, bbox, score).
    #[arg(
        long,
        required_unless_present = "pipeline",
        conflicts_with = "pipeline"
    )]
    detections: Option<PathBuf>,
    /// With --pipeline: the folder of the annotations' images (file_name is relative to it).
    #[arg(long, requires = "pipeline")]
    images: Option<PathBuf>,
    #[command(flatten)]
    run: PipelineMode,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct SegmentationArgs {
    /// Ground truth: a folder of class-index PNG masks (8-bit grayscale or palette).
    #[arg(long, required_unless_present = "pipeline")]
    ground_truth: Option<PathBuf>,
    /// Predictions: a folder of class-index PNG masks, matched to the ground truth by file
    /// name.
    #[arg(
        long,
        required_unless_present = "pipeline",
        conflicts_with = "pipeline"
    )]
    predictions: Option<PathBuf>,
    /// With --pipeline: the images (paired with --ground-truth masks by file stem, or the
    /// images of --annotations).
    #[arg(long, requires = "pipeline")]
    images: Option<PathBuf>,
    /// With --pipeline: COCO instances JSON whose regions become the ground truth as
    /// 21-class PASCAL VOC masks (ml-cvnets' mapping), instead of --ground-truth.
    #[arg(long, requires = "pipeline", conflicts_with = "ground_truth")]
    annotations: Option<PathBuf>,
    /// Number of classes.
    #[arg(long)]
    classes: usize,
    /// Ground truth value of pixels left out.
    #[arg(long, default_value_t = 255)]
    ignore_index: u8,
    #[command(flatten)]
    run: PipelineMode,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct ClassificationArgs {
    /// The dataset: an ImageFolder root (a folder a class, in sorted order) or a CSV file of
    /// `path,label` rows.
    #[arg(long)]
    dataset: PathBuf,
    /// Class names, one a line (for a CSV whose labels are names, and for the plots).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Predictions: a CSV file of `path,pred,top5` rows (top5: up to five class indices
    /// separated by spaces, best first), as `--pipeline` writes it.
    #[arg(
        long,
        required_unless_present = "pipeline",
        conflicts_with = "pipeline"
    )]
    predictions: Option<PathBuf>,
    #[command(flatten)]
    run: PipelineMode,
    #[command(flatten)]
    common: Common,
}

/// Runs the command.
pub fn run(args: EvalArgs, registry: &HeadRegistry) -> Result<()> {
    match args.task {
        EvalTask::Detection(a) => detection(a, registry),
        EvalTask::Segmentation(a) => segmentation(a, registry),
        EvalTask::Classification(a) => classification(a, registry),
        EvalTask::Agreement(a) => crate::eval_agreement::run(a, registry),
    }
}

/// Prints each line of `report` as a warning about `what`.
pub(crate) fn warn_report(what: &Path, report: &DatasetReport) {
    if report.is_empty() {
        return;
    }
    for line in report.to_string().lines() {
        eprintln!("warning: {}: {line}", what.display());
    }
}

/// Prints `metrics` (JSON or the table `table` makes) and writes metrics.json into `out`.
pub(crate) fn publish(
    metrics: &Value,
    common: &Common,
    table: impl FnOnce() -> String,
) -> Result<()> {
    if let Some(out) = &common.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let text = serde_json::to_string_pretty(metrics)? + "\n";
        vpipe_io::output::write_atomic(&out.join("metrics.json"), text.as_bytes())?;
    }
    if common.json {
        println!("{metrics}");
    } else {
        print!("{}", table());
    }
    Ok(())
}

fn detection(args: DetectionArgs, registry: &HeadRegistry) -> Result<()> {
    let gt = CocoDataset::load(&args.annotations)?;
    warn_report(&args.annotations, &gt.report);
    let detections = match (&args.detections, &args.run.pipeline) {
        (Some(path), _) => coco_eval::read_detections(path)?,
        (None, Some(pipeline)) => {
            let images = args
                .images
                .as_deref()
                .context("--pipeline needs --images, the folder of the annotations' images")?;
            let out = required_out(&args.common)?;
            eval_run::detections(
                pipeline,
                args.run.head.as_deref(),
                &gt,
                images,
                out,
                registry,
            )?
        }
        (None, None) => bail!("give --detections or --pipeline"),
    };
    let origin = args.detections.as_deref().unwrap_or(&args.annotations);
    evaluate_detections(&gt, &detections, origin, &args.common)
}

/// The --out folder, which a pipeline run needs for its predictions.
fn required_out(common: &Common) -> Result<&Path> {
    common
        .out
        .as_deref()
        .context("--pipeline needs --out, the folder for the predictions")
}

/// Evaluates `detections` (read from `origin`) against `gt` and publishes the metrics and
/// PR curves.
fn evaluate_detections(
    gt: &CocoDataset,
    detections: &[Detection],
    origin: &Path,
    common: &Common,
) -> Result<()> {
    let result = coco_eval::evaluate_bbox(gt, detections)
        .with_context(|| format!("evaluating {}", origin.display()))?;
    warn_report(origin, &result.report);
    let mut metrics = serde_json::Map::new();
    for (name, value) in STAT_NAMES.iter().zip(result.stats) {
        metrics.insert((*name).to_string(), json!(value));
    }
    let per_class: serde_json::Map<String, Value> = result
        .classes
        .iter()
        .map(|c| (c.name.clone(), json!(c.ap)))
        .collect();
    metrics.insert("per_class_AP".into(), Value::Object(per_class));
    metrics.insert("images".into(), json!(gt.images.len()));
    metrics.insert("detections".into(), json!(detections.len()));
    let metrics = Value::Object(metrics);
    if let Some(out) = &common.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        plots::pr_curves(&result, &out.join("pr_curves.png"))?;
    }
    publish(&metrics, common, || {
        let mut s = String::new();
        let rows = [
            ("Precision", "0.50:0.95", "all", 100),
            ("Precision", "0.50", "all", 100),
            ("Precision", "0.75", "all", 100),
            ("Precision", "0.50:0.95", "small", 100),
            ("Precision", "0.50:0.95", "medium", 100),
            ("Precision", "0.50:0.95", "large", 100),
            ("Recall", "0.50:0.95", "all", 1),
            ("Recall", "0.50:0.95", "all", 10),
            ("Recall", "0.50:0.95", "all", 100),
            ("Recall", "0.50:0.95", "small", 100),
            ("Recall", "0.50:0.95", "medium", 100),
            ("Recall", "0.50:0.95", "large", 100),
        ];
        for ((what, iou, area, max), value) in rows.iter().zip(result.stats) {
            let kind = if *what == "Precision" { "(AP)" } else { "(AR)" };
            s += &format!(
                " Average {what:<9} {kind} @[ IoU={iou:<9} | area={area:>6} | maxDets={max:>3} ] = {value:.3}\n"
            );
        }
        s += "\nper-class AP@[.50:.95]:\n";
        for c in &result.classes {
            let ap = if c.ap < 0.0 {
                "  -  ".to_string()
            } else {
                format!("{:.3}", c.ap)
            };
            s += &format!("  {:>4}  {:<20} {ap}\n", c.category_id, c.name);
        }
        s
    })
}

fn segmentation(args: SegmentationArgs, registry: &HeadRegistry) -> Result<()> {
    if args.classes == 0 || args.classes > 255 {
        bail!("--classes must be between 1 and 255 (masks hold one byte a pixel)");
    }
    let mut matrix = ConfusionMatrix::new(args.classes);
    let mut report = DatasetReport::default();
    let origin;
    match &args.run.pipeline {
        None => {
            let (Some(gt_dir), Some(pred_dir)) = (&args.ground_truth, &args.predictions) else {
                bail!("give --ground-truth and --predictions, or --pipeline");
            };
            origin = pred_dir.clone();
            let pairing = pair_by_stem(gt_dir, &["png"], pred_dir, &["png"])?;
            for p in &pairing.only_first {
                report.add(
                    "ground truth masks without a prediction skipped",
                    p.display(),
                );
            }
            for p in &pairing.only_second {
                report.add(
                    "predictions without a ground truth mask skipped",
                    p.display(),
                );
            }
            if pairing.pairs.is_empty() {
                bail!(
                    "no prediction in {} has the name of a mask in {}",
                    pred_dir.display(),
                    gt_dir.display()
                );
            }
            for pair in &pairing.pairs {
                let gt = read_class_mask(&pair.first)?;
                let pred = read_class_mask(&pair.second)?;
                add_mask_pair(
                    &mut matrix,
                    &gt,
                    &pred,
                    args.ignore_index,
                    &pair.second,
                    &mut report,
                )?;
            }
        }
        Some(pipeline) => {
            let out = required_out(&args.common)?;
            let images = args
                .images
                .as_deref()
                .context("--pipeline needs --images, the dataset's images")?;
            let ground_truth = match (&args.ground_truth, &args.annotations) {
                (Some(masks), None) => eval_run::SegmentationTruth::Masks(masks),
                (None, Some(annotations)) => {
                    let ds = CocoDataset::load(annotations)?;
                    warn_report(annotations, &ds.report);
                    eval_run::SegmentationTruth::Coco(Box::new(ds))
                }
                _ => bail!(
                    "--pipeline needs --ground-truth (mask folder) or --annotations (COCO JSON)"
                ),
            };
            origin = out.to_path_buf();
            for (gt, pred, path) in eval_run::segmentations(
                pipeline,
                args.run.head.as_deref(),
                images,
                &ground_truth,
                out,
                registry,
                &mut report,
            )? {
                add_mask_pair(
                    &mut matrix,
                    &gt,
                    &pred,
                    args.ignore_index,
                    &path,
                    &mut report,
                )?;
            }
        }
    }
    warn_report(&origin, &report);
    let m = segmentation_metrics(&matrix);
    let metrics = json!({
        "mIoU": m.miou,
        "pixel_accuracy": m.pixel_accuracy,
        "per_class_IoU": m.iou,
        "pixels": matrix.total(),
    });
    if let Some(out) = &args.common.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        // COCO regions become VOC classes, whose names are known; mask folders give indices.
        let names: Vec<String> = if args.annotations.is_some() && args.classes == 21 {
            vpipe_core::labels::LabelSet::Voc21.names()
        } else {
            (0..args.classes).map(|c| c.to_string()).collect()
        };
        plots::confusion_matrix(&matrix, &names, &out.join("confusion_matrix.png"))?;
    }
    publish(&metrics, &args.common, || {
        let mut s = format!(
            "mIoU            {:.4}\npixel accuracy  {:.4}\n\nper-class IoU:\n",
            m.miou, m.pixel_accuracy
        );
        for (c, iou) in m.iou.iter().enumerate() {
            let v = iou.map_or("  -   ".to_string(), |v| format!("{v:.4}"));
            s += &format!("  {c:>3}  {v}\n");
        }
        s
    })
}

/// Adds one mask pair to `matrix`; a pair of different sizes is skipped and counted, a
/// class index out of range is an error naming `path`.
fn add_mask_pair(
    matrix: &mut ConfusionMatrix,
    gt: &ClassMask,
    pred: &ClassMask,
    ignore: u8,
    path: &Path,
    report: &mut DatasetReport,
) -> Result<()> {
    if (gt.width, gt.height) != (pred.width, pred.height) {
        report.add(
            "predictions of another size than their ground truth skipped",
            format!(
                "{} ({}x{}, ground truth {}x{})",
                path.display(),
                pred.width,
                pred.height,
                gt.width,
                gt.height
            ),
        );
        return Ok(());
    }
    matrix
        .add_masks(&gt.data, &pred.data, Some(ignore))
        .with_context(|| format!("{} (or its ground truth)", path.display()))?;
    Ok(())
}

/// Reads a class names file: one name a line, blank lines left out.
fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        bail!("{}: no class names", path.display());
    }
    Ok(names)
}

/// Reads a predictions CSV (`path,pred,top5`): for each image path (resolved against the
/// file's folder), its classes best first.
fn read_class_predictions(path: &Path) -> Result<HashMap<PathBuf, Vec<usize>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with("path,")) {
            continue;
        }
        let fields: Vec<&str> = line.rsplitn(3, ',').collect();
        let [top5, pred, file] = fields[..] else {
            bail!(
                "{}: line {}: expected `path,pred,top5`, found {line:?}",
                path.display(),
                i + 1
            );
        };
        let parse = |v: &str| {
            v.trim().parse::<usize>().with_context(|| {
                format!(
                    "{}: line {}: {v:?} is not a class index",
                    path.display(),
                    i + 1
                )
            })
        };
        let mut ranked = vec![parse(pred)?];
        for v in top5.split_whitespace() {
            let c = parse(v)?;
            if !ranked.contains(&c) {
                ranked.push(c);
            }
        }
        out.insert(canonical(&base.join(file.trim())), ranked);
    }
    Ok(out)
}

/// `path` canonicalised when it exists, else as given.
pub(crate) fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

fn classification(args: ClassificationArgs, registry: &HeadRegistry) -> Result<()> {
    let labels = args.labels.as_deref().map(read_labels).transpose()?;
    let dataset = if args.dataset.is_dir() {
        ClassificationDataset::image_folder(&args.dataset)?
    } else {
        ClassificationDataset::csv(&args.dataset, labels.as_deref())?
    };
    warn_report(&args.dataset, &dataset.report);
    let predictions = match (&args.predictions, &args.run.pipeline) {
        (Some(p), _) => read_class_predictions(p)?,
        (None, Some(pipeline)) => {
            let out = required_out(&args.common)?;
            eval_run::classifications(pipeline, args.run.head.as_deref(), &dataset, out, registry)?
        }
        (None, None) => bail!("give --predictions or --pipeline"),
    };
    let classes = labels
        .as_ref()
        .map_or(dataset.classes.len(), Vec::len)
        .max(dataset.classes.len());
    let mut eval = ClassificationEval::new(classes);
    let mut report = DatasetReport::default();
    for s in &dataset.samples {
        let Some(ranked) = predictions.get(&canonical(&s.path)) else {
            report.add("images without a prediction skipped", s.path.display());
            continue;
        };
        eval.add(s.label, ranked)
            .with_context(|| format!("the prediction of {}", s.path.display()))?;
    }
    warn_report(
        args.predictions.as_deref().unwrap_or(&args.dataset),
        &report,
    );
    if eval.count() == 0 {
        bail!("no image of {} has a prediction", args.dataset.display());
    }
    let names: Vec<String> = match &labels {
        Some(l) if l.len() >= classes => l.clone(),
        _ if dataset.classes.len() == classes => dataset.classes.clone(),
        _ => (0..classes).map(|c| c.to_string()).collect(),
    };
    let metrics = json!({
        "top1": eval.top1(),
        "top5": eval.top5(),
        "images": eval.count(),
        "predictions_outside_classes": eval.outside(),
    });
    if let Some(out) = &args.common.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        plots::confusion_matrix(eval.confusion(), &names, &out.join("confusion_matrix.png"))?;
    }
    publish(&metrics, &args.common, || {
        let mut s = format!(
            "top-1  {:.4}\ntop-5  {:.4}\nimages {}\n",
            eval.top1(),
            eval.top5(),
            eval.count()
        );
        if eval.outside() > 0 {
            s += &format!(
                "{} best prediction(s) of a class beyond the dataset's {classes}\n",
                eval.outside()
            );
        }
        s
    })
}
