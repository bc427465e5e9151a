//! `vpipe eval ... --pipeline P`: runs a pipeline over a dataset's images (the staged runner,
//! with its progress bar and the outputs the pipeline file asks for, under `OUT/run`),
//! collects one head's results with a sink of its own, and writes them in the standard
//! formats under `OUT/predictions`: COCO results JSON, class-index PNG masks, a
//! `path,pred,top5` CSV.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use vpipe_core::result::HeadOutput;
use vpipe_data::DatasetReport;
use vpipe_data::classification::ClassificationDataset;
use vpipe_data::coco::{self, Annotation, CocoDataset, CocoImage};
use vpipe_data::mask_folder::{ClassMask, SegmentationFolder, read_class_mask};
use vpipe_data::masks::voc_class_mask;
use vpipe_eval::coco_eval::Detection;
use vpipe_heads::HeadRegistry;
use vpipe_pipeline::{FrameResults, Input, NamedOutput, RunOptions, Sink, coco_category};

use crate::eval::{canonical, warn_report};

/// The kind of result an evaluation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Detection,
    Segmentation,
    Classification,
}

impl Task {
    fn of(output: &HeadOutput) -> Option<Self> {
        match output {
            HeadOutput::Detection { .. } => Some(Self::Detection),
            HeadOutput::Segmentation { .. } => Some(Self::Segmentation),
            HeadOutput::Classification { .. } => Some(Self::Classification),
            HeadOutput::Custom(_) => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Detection => "detection",
            Self::Segmentation => "segmentation",
            Self::Classification => "classification",
        }
    }
}

/// The results of one task, by input file, that a run gave.
type Collected = Arc<Mutex<HashMap<PathBuf, Vec<NamedOutput>>>>;

/// A sink that keeps each image's results of one task.
struct Collector {
    task: Task,
    results: Collected,
}

impl Sink for Collector {
    fn name(&self) -> String {
        format!("{} evaluation", self.task.name())
    }

    fn write(&mut self, frame: &FrameResults<'_>) -> vpipe_pipeline::Result<Vec<PathBuf>> {
        if let Some(source) = frame.source {
            let kept: Vec<NamedOutput> = frame
                .outputs
                .iter()
                .filter(|o| Task::of(&o.output) == Some(self.task))
                .cloned()
                .collect();
            let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
            results.insert(canonical(source), kept);
        }
        Ok(Vec::new())
    }

    fn finish(self: Box<Self>) -> vpipe_pipeline::Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
}

/// Runs the pipeline at `path` over `files` and returns each file's result of `task` from
/// head `head` (or the pipeline's only head of that task).
fn run_pipeline(
    path: &Path,
    head: Option<&str>,
    task: Task,
    files: Vec<PathBuf>,
    out: &Path,
    registry: &HeadRegistry,
) -> Result<HashMap<PathBuf, HeadOutput>> {
    let pipeline = crate::pipeline::compile(path, None, None, None, registry)?;
    let results: Collected = Arc::default();
    let collector = Collector {
        task,
        results: Arc::clone(&results),
    };
    let options = RunOptions {
        out_dir: out.join("run"),
        progress: true,
        stop: Arc::new(AtomicBool::new(false)),
        max_frames: None,
        overwrite: false,
    };
    let summary = vpipe_pipeline::run_with_sinks(
        &pipeline,
        &Input::Images(files),
        &options,
        vec![Box::new(collector)],
    )?;
    for (input, message) in &summary.failed {
        eprintln!("warning: {input}: {message} (left out of the evaluation)");
    }
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    let mut heads: Vec<String> = results.values().flatten().map(|o| o.head.clone()).collect();
    heads.sort();
    heads.dedup();
    let chosen = match head {
        Some(h) if heads.iter().any(|n| n == h) => h.to_string(),
        Some(h) => bail!(
            "{}: no {} head named {h:?} gave results (its {} heads: {})",
            path.display(),
            task.name(),
            task.name(),
            if heads.is_empty() {
                "none".into()
            } else {
                heads.join(", ")
            }
        ),
        None => match heads.as_slice() {
            [one] => one.clone(),
            [] => bail!("{}: no head gave {} results", path.display(), task.name()),
            many => bail!(
                "{}: {} heads give {} results ({}): choose one with --head",
                path.display(),
                many.len(),
                task.name(),
                many.join(", ")
            ),
        },
    };
    Ok(results
        .into_iter()
        .filter_map(|(file, outputs)| {
            let output = outputs.into_iter().find(|o| o.head == chosen)?.output;
            Some((file, output))
        })
        .collect())
}

/// Writes `bytes` at `out/predictions/name` atomically.
fn write_prediction(out: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = out.join("predictions").join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    vpipe_io::output::write_atomic(&path, bytes)?;
    Ok(path)
}

/// The detections of the pipeline at `pipeline` over the images of `gt` (in `images`), as
/// COCO results (the ground truth's image ids; category ids by COCO's numbering of the
/// 80 classes), also written to `out/predictions/detections_coco_results.json`.
pub(crate) fn detections(
    pipeline: &Path,
    head: Option<&str>,
    gt: &CocoDataset,
    images: &Path,
    out: &Path,
    registry: &HeadRegistry,
) -> Result<Vec<Detection>> {
    let mut present = gt.clone();
    present.report = DatasetReport::default();
    present.remove_missing_images(images);
    warn_report(images, &present.report);
    if present.images.is_empty() {
        bail!(
            "none of the {} images of {} is in {}",
            gt.images.len(),
            gt.path.display(),
            images.display()
        );
    }
    let files: Vec<PathBuf> = present
        .images
        .iter()
        .map(|i| images.join(&i.file_name))
        .collect();
    let ids: HashMap<PathBuf, i64> = files
        .iter()
        .zip(&present.images)
        .map(|(f, i)| (canonical(f), i.id))
        .collect();
    let results = run_pipeline(pipeline, head, Task::Detection, files, out, registry)?;
    let mut detections = Vec::new();
    let mut sorted: Vec<(&PathBuf, &HeadOutput)> = results.iter().collect();
    sorted.sort_by_key(|(f, _)| ids.get(*f).copied());
    for (file, output) in sorted {
        let (Some(&image_id), HeadOutput::Detection { detections: dets }) = (ids.get(file), output)
        else {
            continue;
        };
        for d in dets {
            let [x1, y1, x2, y2] = d.bbox.map(f64::from);
            detections.push(Detection {
                image_id,
                category_id: i64::from(coco_category(d.class_id)),
                bbox: [x1, y1, x2 - x1, y2 - y1],
                score: f64::from(d.score),
            });
        }
    }
    let json: Vec<serde_json::Value> = detections
        .iter()
        .map(|d| {
            serde_json::json!({
                "image_id": d.image_id,
                "category_id": d.category_id,
                "bbox": d.bbox,
                "score": d.score,
            })
        })
        .collect();
    let path = write_prediction(
        out,
        "detections_coco_results.json",
        serde_json::to_string(&json)?.as_bytes(),
    )?;
    eprintln!(
        "{} detection(s) written to {}",
        detections.len(),
        path.display()
    );
    Ok(detections)
}

/// Where a segmentation evaluation's ground truth comes from.
pub(crate) enum SegmentationTruth<'a> {
    /// A folder of class-index PNG masks, paired with the images by file stem.
    Masks(&'a Path),
    /// COCO instances, rasterised to VOC-21 masks.
    Coco(Box<CocoDataset>),
}

/// One image's ground truth.
enum TruthOf<'a> {
    /// A mask file.
    File(PathBuf),
    /// The VOC mask of a COCO image made from its annotations.
    Coco(&'a CocoImage, &'a [&'a Annotation]),
}

/// Runs the pipeline at `pipeline` over the images and returns, for each image with a
/// result, its ground truth mask, its predicted mask and the path the prediction was
/// written to (`out/predictions/masks/<stem>.png`).
pub(crate) fn segmentations(
    pipeline: &Path,
    head: Option<&str>,
    images: &Path,
    truth: &SegmentationTruth<'_>,
    out: &Path,
    registry: &HeadRegistry,
    report: &mut DatasetReport,
) -> Result<Vec<(ClassMask, ClassMask, PathBuf)>> {
    let by_image = match truth {
        SegmentationTruth::Coco(ds) => ds.annotations_by_image(),
        SegmentationTruth::Masks(_) => Vec::new(),
    };
    // Each image with its ground truth.
    let samples: Vec<(PathBuf, TruthOf<'_>)> = match truth {
        SegmentationTruth::Masks(masks) => {
            let folder = SegmentationFolder::load(images, masks)?;
            report.merge(&folder.report);
            folder
                .samples
                .into_iter()
                .map(|s| (s.image, TruthOf::File(s.mask)))
                .collect()
        }
        SegmentationTruth::Coco(ds) => {
            let samples: Vec<_> = ds
                .images
                .iter()
                .zip(&by_image)
                .filter_map(|(img, annotations)| {
                    let file = images.join(&img.file_name);
                    if file.is_file() {
                        Some((file, TruthOf::Coco(img, annotations)))
                    } else {
                        report.add(coco::IMAGE_MISSING, &img.file_name);
                        None
                    }
                })
                .collect();
            if samples.is_empty() {
                bail!(
                    "none of the images of {} is in {}",
                    ds.path.display(),
                    images.display()
                );
            }
            samples
        }
    };
    let files: Vec<PathBuf> = samples.iter().map(|s| s.0.clone()).collect();
    let mut results = run_pipeline(pipeline, head, Task::Segmentation, files, out, registry)?;
    let mut pairs = Vec::new();
    for (file, gt) in samples {
        let Some(HeadOutput::Segmentation {
            width,
            height,
            mask,
            ..
        }) = results.remove(&canonical(&file))
        else {
            continue;
        };
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .with_context(|| format!("{} has no UTF-8 file stem", file.display()))?;
        let pred = ClassMask {
            width: width as u32,
            height: height as u32,
            data: mask,
        };
        let png = image::GrayImage::from_raw(pred.width, pred.height, pred.data.clone())
            .context("a predicted mask does not match its size")?;
        let mut bytes = std::io::Cursor::new(Vec::new());
        png.write_to(&mut bytes, image::ImageFormat::Png)?;
        let path = write_prediction(out, &format!("masks/{stem}.png"), bytes.get_ref())?;
        let gt = match gt {
            TruthOf::File(mask_file) => read_class_mask(&mask_file)?,
            TruthOf::Coco(img, annotations) => ClassMask {
                width: img.width,
                height: img.height,
                data: voc_class_mask(img, annotations),
            },
        };
        pairs.push((gt, pred, path));
    }
    Ok(pairs)
}

/// Runs the pipeline at `pipeline` over the dataset's images and returns each image's
/// classes, best first (by canonical path); also written to
/// `out/predictions/predictions.csv` (`path,pred,top5`).
pub(crate) fn classifications(
    pipeline: &Path,
    head: Option<&str>,
    dataset: &ClassificationDataset,
    out: &Path,
    registry: &HeadRegistry,
) -> Result<HashMap<PathBuf, Vec<usize>>> {
    let files: Vec<PathBuf> = dataset.samples.iter().map(|s| s.path.clone()).collect();
    let results = run_pipeline(
        pipeline,
        head,
        Task::Classification,
        files.clone(),
        out,
        registry,
    )?;
    let mut csv = String::from("path,pred,top5\n");
    let mut ranked = HashMap::new();
    for file in files {
        let key = canonical(&file);
        let Some(HeadOutput::Classification { top_k }) = results.get(&key) else {
            continue;
        };
        let classes: Vec<usize> = top_k.iter().map(|c| c.class_id).collect();
        let Some(&best) = classes.first() else {
            continue;
        };
        let top5: Vec<String> = classes.iter().take(5).map(usize::to_string).collect();
        csv += &format!("{},{best},{}\n", key.display(), top5.join(" "));
        ranked.insert(key, classes);
    }
    let path = write_prediction(out, "predictions.csv", csv.as_bytes())?;
    eprintln!(
        "{} prediction(s) written to {}",
        ranked.len(),
        path.display()
    );
    Ok(ranked)
}
