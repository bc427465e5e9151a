//! Where a run's results go. Each output is a [`Sink`]: it is handed every frame's
//! results in order ([`FrameResults`]) and completes its files at the end. vpipe's
//! outputs are five small sinks ([`AnnotatedVideo`], [`AnnotatedImages`],
//! [`ResultsJsonl`], [`CocoJson`], [`MaskPngs`]); a library user adds their own
//! (a writer into their own database, say) with [`crate::run_with_sinks`].
//!
//! Every file is written through [`vpipe_io::output::PartialFile`] (or
//! [`vpipe_io::output::write_atomic`], which uses it): under a temporary name until
//! complete, so no reader ever sees half of one. A sink that fails mid-run is
//! dropped (its unfinished file goes with it), the run stops reading input, and the
//! other sinks finish with the frames read so far.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use vpipe_core::result::{HeadOutput, RegionCount};
use vpipe_core::token::safe_token;
use vpipe_io::output::PartialFile;
use vpipe_media::{ChannelOrder, Frame, FramePool, VideoWriter};

use crate::error::{PipelineError, Result};
use crate::graph::NamedOutput;
use crate::source::some_names;
use crate::spec::NatsSpec;

/// One frame's results, as every sink sees them.
#[derive(Debug)]
pub struct FrameResults<'a> {
    /// Frame number in the run, from 0.
    pub index: u64,
    /// Time in the video, for video frames.
    pub timestamp_ms: Option<f64>,
    /// The image file, for still images.
    pub source: Option<&'a Path>,
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
    /// Every head's results, in the pipeline file's order.
    pub outputs: &'a [NamedOutput],
    /// The counts of the heads' zones and lines (`zones:` and `lines:`).
    pub regions: &'a [RegionCount],
    /// The frame with the results drawn on it, when the pipeline annotates.
    pub annotated: Option<&'a Frame>,
    /// The annotated image's file name in the output folder, for still images
    /// (it differs from the source's when two inputs share a name: `a-1.jpg`).
    pub annotated_name: Option<&'a str>,
}

/// An output of a run.
pub trait Sink: Send {
    /// What it writes, for messages (`results.jsonl`, `annotated video`).
    fn name(&self) -> String;

    /// Takes one frame's results (frames come in order). Returns the files it
    /// completed for this frame, if any (they are listed in the output folder's
    /// record).
    fn write(&mut self, frame: &FrameResults<'_>) -> Result<Vec<PathBuf>>;

    /// Completes the output after the last frame. Returns the files it completed.
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>>;
}

/// A run's output folder: where sinks put their files, never over an input.
#[derive(Debug)]
pub struct OutputFolder {
    dir: PathBuf,
    inputs: BTreeSet<PathBuf>,
}

impl OutputFolder {
    /// The folder `dir` of a run whose input files are `inputs` (canonical paths).
    pub fn new(dir: PathBuf, inputs: BTreeSet<PathBuf>) -> Self {
        Self { dir, inputs }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `relative` in the folder, its parent folders created; an error
    /// if it is one of the run's inputs.
    pub fn target(&self, relative: &str) -> Result<PathBuf> {
        let target = self.dir.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|cause| PipelineError::Io {
                path: parent.to_path_buf(),
                cause,
            })?;
        }
        let resolved = target
            .parent()
            .and_then(|d| d.canonicalize().ok())
            .and_then(|d| target.file_name().map(|n| d.join(n)));
        if resolved.is_some_and(|r| self.inputs.contains(&r)) {
            return Err(PipelineError::Output {
                output: target,
                message: "refusing to overwrite an input; choose another output folder".into(),
            });
        }
        Ok(target)
    }
}

/// Each frame's results line, published to NATS JetStream (`output.nats`) on
/// `<subject>.<pipeline>.<source>`, with the de-duplication id `<source>:<frame>`:
/// a frame published twice (a retry, a run again) is stored once.
pub struct NatsResults {
    publisher: vpipe_nats::Publisher,
    /// `<subject>.<pipeline>.` (the source's token follows).
    prefix: String,
    /// The run's input (a video file, stream or camera), for a video run; each
    /// frame's image file otherwise.
    source: Option<String>,
    masks: bool,
    weights_note: Option<&'static str>,
    sent: u64,
    undelivered: u64,
}

impl NatsResults {
    /// Connects to the server of `spec` (an error naming its URL when it cannot) and
    /// makes sure its stream exists; `pipeline` names the subjects, `source` is the
    /// run's video input (`None` for images: each frame's file names it).
    pub fn new(
        spec: &NatsSpec,
        pipeline: &str,
        source: Option<String>,
        masks: bool,
        weights_note: Option<&'static str>,
    ) -> Result<Self> {
        let publisher =
            vpipe_nats::Publisher::connect(&spec.url, &spec.stream, &format!("{}.>", spec.subject))
                .map_err(|e| PipelineError::Output {
                    output: PathBuf::from(&spec.url),
                    message: e.to_string(),
                })?;
        Ok(Self {
            publisher,
            prefix: format!("{}.{}.", spec.subject, safe_token(pipeline)),
            source,
            masks,
            weights_note,
            sent: 0,
            undelivered: 0,
        })
    }
}

impl Sink for NatsResults {
    fn name(&self) -> String {
        format!("NATS results ({})", self.publisher.url())
    }

    fn write(&mut self, frame: &FrameResults<'_>) -> Result<Vec<PathBuf>> {
        let source = match (&self.source, frame.source) {
            (Some(s), _) => s.clone(),
            (None, Some(p)) => p.display().to_string(),
            (None, None) => "input".into(),
        };
        let line = ResultLine::of(frame, self.masks, self.weights_note);
        let payload = serde_json::to_vec(&line).unwrap_or_default();
        let subject = format!("{}{}", self.prefix, safe_token(&source));
        let id = format!("{source}:{}", frame.index);
        self.sent += 1;
        if let Err(e) = self.publisher.publish(&subject, &id, payload) {
            tracing::debug!(error = %e, frame = frame.index, "result not delivered");
            self.undelivered += 1;
        }
        Ok(Vec::new())
    }

    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>> {
        if self.undelivered > 0 {
            return Err(PipelineError::Output {
                output: PathBuf::from(self.publisher.url()),
                message: format!(
                    "{} of {} frames' results could not be delivered to NATS (the server did not acknowledge them)",
                    self.undelivered, self.sent
                ),
            });
        }
        Ok(Vec::new())
    }
}

/// The annotated video: `<stem>_annotated.mp4`.
pub struct AnnotatedVideo {
    folder: Arc<OutputFolder>,
    name: String,
    codec: String,
    fps: f64,
    writer: Option<VideoWriter>,
    /// Place frames by their timestamps (a live source), repeating the frame before
    /// a gap, so that the video plays in real time.
    paced: bool,
    /// Frames written so far, repeats included.
    written: u64,
    /// The frame written last, to repeat (paced videos only).
    last: Option<Frame>,
}

impl AnnotatedVideo {
    /// A video named `name` in `folder`, with the FourCC `codec` at `fps` frames per
    /// second (25 when unknown). A `paced` video (of a live source, whose frames the
    /// run may drop) puts each frame at its timestamp: the frame before a gap is
    /// repeated until the next one's time, so the video keeps the source's time.
    pub fn new(
        folder: Arc<OutputFolder>,
        name: String,
        codec: String,
        fps: f64,
        paced: bool,
    ) -> Self {
        Self {
            folder,
            name,
            codec,
            fps: if fps > 0.0 { fps } else { 25.0 },
            writer: None,
            paced,
            written: 0,
            last: None,
        }
    }
}

impl Sink for AnnotatedVideo {
    fn name(&self) -> String {
        format!("annotated video {}", self.name)
    }

    fn write(&mut self, frame: &FrameResults<'_>) -> Result<Vec<PathBuf>> {
        let Some(img) = frame.annotated else {
            return Ok(Vec::new());
        };
        if self.writer.is_none() {
            let target = self.folder.target(&self.name)?;
            self.writer = Some(VideoWriter::create(
                &target,
                &self.codec,
                self.fps,
                frame.width,
                frame.height,
            )?);
        }
        let Some(w) = self.writer.as_mut() else {
            return Ok(Vec::new());
        };
        if self.paced {
            // The frame's place in the video; the one before fills the gap up to it.
            let slot = frame.timestamp_ms.map_or(self.written, |t| {
                (t * self.fps / 1000.0).round().max(0.0) as u64
            });
            if let Some(last) = &self.last {
                while self.written < slot {
                    w.write(last)?;
                    self.written += 1;
                }
            }
            self.last = Some(img.clone());
        }
        w.write(img)?;
        self.written += 1;
        Ok(Vec::new())
    }

    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>> {
        match self.writer {
            Some(w) => Ok(vec![w.finish()?]),
            None => Ok(Vec::new()),
        }
    }
}

/// Annotated still images, under their sources' names (PNG, JPEG, ... by extension).
pub struct AnnotatedImages {
    folder: Arc<OutputFolder>,
}

impl AnnotatedImages {
    /// Annotated images in `folder`.
    pub fn new(folder: Arc<OutputFolder>) -> Self {
        Self { folder }
    }
}

impl Sink for AnnotatedImages {
    fn name(&self) -> String {
        "annotated images".into()
    }

    fn write(&mut self, frame: &FrameResults<'_>) -> Result<Vec<PathBuf>> {
        let (Some(img), Some(name)) = (frame.annotated, frame.annotated_name) else {
            return Ok(Vec::new());
        };
        let target = self.folder.target(name)?;
        // Annotated stills are drawn in RGB; other frames are reordered first.
        let reordered;
        let rgb = if img.order == ChannelOrder::Rgb {
            img
        } else {
            reordered = img.clone().into_order(ChannelOrder::Rgb);
            &reordered
        };
        write_image(
            &rgb.data,
            [rgb.width, rgb.height],
            image::ExtendedColorType::Rgb8,
            &target,
        )?;
        Ok(vec![target])
    }

    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
}

/// One line of `results.jsonl`.
#[derive(Serialize)]
struct ResultLine<'a> {
    frame: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// The annotated image's file name in the output folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    annotated: Option<&'a str>,
    width: usize,
    height: usize,
    heads: Vec<serde_json::Value>,
    /// The zones' and lines' counts.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    regions: &'a [RegionCount],
    #[serde(skip_serializing_if = "Option::is_none")]
    weights_note: Option<&'static str>,
}

/// `results.jsonl`: one JSON line per frame with every head's results.
pub struct ResultsJsonl {
    out: BufWriter<std::fs::File>,
    partial: PartialFile,
    masks: bool,
    weights_note: Option<&'static str>,
}

impl ResultsJsonl {
    /// `results.jsonl` in `folder`; `masks` says whether [`MaskPngs`] writes the
    /// masks the lines name; `weights_note` goes into every line.
    pub fn new(
        folder: &OutputFolder,
        masks: bool,
        weights_note: Option<&'static str>,
    ) -> Result<Self> {
        let target = folder.target("results.jsonl")?;
        let partial = PartialFile::new(&target).map_err(|e| PipelineError::Output {
            output: target.clone(),
            message: e.to_string(),
        })?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(partial.path())
            .map_err(|cause| PipelineError::Io {
                path: partial.path().to_path_buf(),
                cause,
            })?;
        Ok(Self {
            out: BufWriter::new(f),
            partial,
            masks,
            weights_note,
        })
    }
}

impl<'a> ResultLine<'a> {
    /// The line of `frame`; `masks` says whether its masks are written as PNGs (the
    /// line names them then).
    fn of(frame: &FrameResults<'a>, masks: bool, weights_note: Option<&'static str>) -> Self {
        let heads = frame
            .outputs
            .iter()
            .map(|o| {
                let mut value = serde_json::to_value(o).unwrap_or_else(|_| json!({}));
                if masks && matches!(o.output, HeadOutput::Segmentation { .. }) {
                    value["mask"] = json!(mask_file(frame.index, &o.head));
                }
                value
            })
            .collect();
        ResultLine {
            frame: frame.index,
            timestamp_ms: frame.timestamp_ms,
            source: frame.source.map(|p| p.display().to_string()),
            annotated: frame.annotated_name,
            width: frame.width,
            height: frame.height,
            heads,
            regions: frame.regions,
            weights_note,
        }
    }
}

impl Sink for ResultsJsonl {
    fn name(&self) -> String {
        "results.jsonl".into()
    }

    fn write(&mut self, frame: &FrameResults<'_>) -> Result<Vec<PathBuf>> {
        let line = ResultLine::of(frame, self.masks, self.weights_note);
        serde_json::to_writer(&mut self.out, &line)
            .map_err(std::io::Error::other)
            .and_then(|_| self.out.write_all(b"\n"))
            .map_err(|cause| PipelineError::Io {
                path: self.partial.target().to_path_buf(),
                cause,
            })?;
        Ok(Vec::new())
    }

    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>> {
        let target = self.partial.target().to_path_buf();
        self.out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(|cause| PipelineError::Io {
                path: target.clone(),
                cause,
            })?;
        let target = self.partial.finish().map_err(|e| PipelineError::Output {
            output: target,
            message: e.to_string(),
        })?;
        Ok(vec![target])
    }
}

/// The path of a frame's mask in the output folder.
fn mask_file(index: u64, head: &str) -> String {
    format!("masks/{index:06}_{}.png", safe_token(head))
}

/// Each segmentation mask as a PNG of class indices, `masks/<frame>_<head>.png`.
pub struct MaskPngs {
    folder: Arc<OutputFolder>,
}

impl MaskPngs {
    /// Masks in `folder`'s `masks/`.
    pub fn new(folder: Arc<OutputFolder>) -> Self {
        Self { folder }
    }
}

impl Sink for MaskPngs {
    fn name(&self) -> String {
        "masks".into()
    }

    fn write(&mut self, frame: &FrameResults<'_>) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        for o in frame.outputs {
            if let HeadOutput::Segmentation {
                width,
                height,
                mask,
                ..
            } = &o.output
            {
                let target = self.folder.target(&mask_file(frame.index, &o.head))?;
                write_image(
                    mask,
                    [*width, *height],
                    image::ExtendedColorType::L8,
                    &target,
                )?;
                written.push(target);
            }
        }
        Ok(written)
    }

    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
}

/// The standard COCO category id of each of the 80 contiguous detection classes.
const COCO_CATEGORY_IDS: [u32; 80] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
];

/// COCO's category id for a contiguous class id (1 to 80, ml-cvnets' numbering with the
/// background at 0); other ids are kept.
pub fn coco_category(class_id: usize) -> u32 {
    class_id
        .checked_sub(1)
        .and_then(|i| COCO_CATEGORY_IDS.get(i))
        .copied()
        .unwrap_or(class_id as u32)
}

/// The detections of an image run in COCO's formats: `detections_coco.json` (images,
/// annotations, categories) and `detections_coco_results.json` (the results list
/// `COCO.loadRes` takes). See [`CocoJson::image_ids`] for the image ids.
pub struct CocoJson {
    folder: Arc<OutputFolder>,
    detection_heads: bool,
    images: Vec<serde_json::Value>,
    annotations: Vec<serde_json::Value>,
    /// The folder `file_name`s are relative to: the inputs' common folder.
    root: PathBuf,
    /// The image id of each input, by index.
    ids: Vec<u64>,
    /// Whether the pipeline file asked for it (`output.coco: true`): then a run
    /// without detections says so.
    asked: bool,
}

impl CocoJson {
    /// The COCO output of a run over `files`, into `folder`.
    pub fn new(folder: Arc<OutputFolder>, files: &[PathBuf], asked: bool) -> Self {
        Self {
            folder,
            detection_heads: false,
            images: Vec::new(),
            annotations: Vec::new(),
            root: common_folder(files),
            ids: Self::image_ids(files),
            asked,
        }
    }

    /// COCO image ids: the number in each file's name when every name is a number
    /// and no two are equal (`000000000139.jpg` is image 139, as in the COCO
    /// datasets, so that results match their annotations), else 1, 2, 3, ... in
    /// input order.
    pub fn image_ids(files: &[PathBuf]) -> Vec<u64> {
        let numbers: Option<Vec<u64>> = files
            .iter()
            .map(|f| {
                let stem = f.file_stem()?.to_str()?;
                if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                stem.parse().ok()
            })
            .collect();
        match numbers {
            Some(n) if n.iter().collect::<BTreeSet<_>>().len() == n.len() => n,
            _ => (1..=files.len() as u64).collect(),
        }
    }
}

impl Sink for CocoJson {
    fn name(&self) -> String {
        "COCO detections".into()
    }

    fn write(&mut self, frame: &FrameResults<'_>) -> Result<Vec<PathBuf>> {
        let image_id = self.ids.get(frame.index as usize).copied();
        for o in frame.outputs {
            if let HeadOutput::Detection { detections } = &o.output {
                self.detection_heads = true;
                for d in detections {
                    let [x1, y1, x2, y2] = d.bbox;
                    let id = self.annotations.len() + 1;
                    self.annotations.push(json!({
                        "id": id,
                        "image_id": image_id,
                        "category_id": coco_category(d.class_id),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "score": d.score,
                        "head": o.head,
                    }));
                }
            }
        }
        if let Some(src) = frame.source {
            let file_name = src.strip_prefix(&self.root).unwrap_or(src);
            self.images.push(json!({
                "id": image_id,
                "file_name": file_name.display().to_string(),
                "width": frame.width,
                "height": frame.height,
            }));
        }
        Ok(Vec::new())
    }

    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>> {
        if !self.detection_heads {
            if self.asked {
                tracing::warn!(
                    "output.coco is on, but no head gave detections: no detections_coco.json written"
                );
            }
            return Ok(Vec::new());
        }
        let names = vpipe_core::labels::LabelSet::Coco81.names();
        let categories: Vec<serde_json::Value> = (1..=COCO_CATEGORY_IDS.len())
            .map(|class| {
                json!({
                    "id": coco_category(class),
                    "name": names.get(class),
                    "supercategory": "",
                })
            })
            .collect();
        // The results list alone, as `COCO.loadRes` and `vpipe eval` take it.
        let results: Vec<serde_json::Value> = self
            .annotations
            .iter()
            .map(|a| {
                json!({
                    "image_id": a["image_id"],
                    "category_id": a["category_id"],
                    "bbox": a["bbox"],
                    "score": a["score"],
                })
            })
            .collect();
        let doc = json!({
            "images": self.images,
            "annotations": self.annotations,
            "categories": categories,
        });
        let mut written = Vec::new();
        for (name, value) in [
            ("detections_coco.json", doc),
            ("detections_coco_results.json", json!(results)),
        ] {
            let target = self.folder.target(name)?;
            write_output(
                &target,
                &serde_json::to_vec_pretty(&value).unwrap_or_default(),
            )?;
            written.push(target);
        }
        Ok(written)
    }
}

/// The deepest folder holding every one of `files` (for one file, its folder).
fn common_folder(files: &[PathBuf]) -> PathBuf {
    let mut folders = files.iter().map(|f| f.parent().unwrap_or(Path::new("")));
    let Some(first) = folders.next() else {
        return PathBuf::new();
    };
    let mut common: Vec<_> = first.components().collect();
    for folder in folders {
        let shared = common
            .iter()
            .zip(folder.components())
            .take_while(|(a, b)| **a == *b)
            .count();
        common.truncate(shared);
    }
    common.iter().collect()
}

/// A run's sinks together: hands each frame to every sink, names annotated images,
/// keeps the output folder's record, and isolates a failing sink.
pub(crate) struct Sinks {
    folder: Arc<OutputFolder>,
    sinks: Vec<Box<dyn Sink>>,
    /// Whether annotated frames are still images that need a file name.
    name_images: bool,
    used_names: HashMap<String, usize>,
    outputs: Vec<PathBuf>,
    /// The first sink failure: that sink is gone, the others go on.
    failure: Option<PipelineError>,
    /// Where written frames' buffers go for reuse (a video's reader).
    recycle: Option<FramePool>,
    /// Whether the record of the outputs has been written.
    recorded: bool,
    /// Frames handed to the sinks.
    pub(crate) frames: u64,
}

impl Sinks {
    /// `sinks` writing into `folder`; `name_images` when annotated frames are still
    /// images; `recycle` takes the frames' buffers back after writing.
    pub(crate) fn new(
        folder: Arc<OutputFolder>,
        sinks: Vec<Box<dyn Sink>>,
        name_images: bool,
        recycle: Option<FramePool>,
    ) -> Self {
        Self {
            folder,
            sinks,
            name_images,
            used_names: HashMap::new(),
            outputs: Vec::new(),
            failure: None,
            recycle,
            recorded: false,
            frames: 0,
        }
    }

    /// A file name in the output folder not used yet in this run.
    fn unique_name(&mut self, name: &str) -> String {
        let n = self.used_names.entry(name.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            return name.to_string();
        }
        let p = Path::new(name);
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default();
        match p.extension() {
            Some(e) => format!("{stem}-{}.{}", *n - 1, e.to_string_lossy()),
            None => format!("{stem}-{}", *n - 1),
        }
    }

    /// Hands one frame to every sink. A sink that fails is dropped (with its
    /// unfinished file) and reported; returns whether that happened now.
    pub(crate) fn write(
        &mut self,
        index: u64,
        timestamp_ms: Option<f64>,
        source: Option<&Path>,
        frame: Frame,
        (outputs, regions): (&[NamedOutput], &[RegionCount]),
        annotated: Option<Frame>,
    ) -> bool {
        let annotated_name = match (&annotated, source, self.name_images) {
            (Some(_), Some(src), true) => Some(
                self.unique_name(
                    &src.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| format!("{index:06}.png")),
                ),
            ),
            _ => None,
        };
        let results = FrameResults {
            index,
            timestamp_ms,
            source,
            width: frame.width,
            height: frame.height,
            outputs,
            regions,
            annotated: annotated.as_ref(),
            annotated_name: annotated_name.as_deref(),
        };
        let mut failed_now = false;
        let mut i = 0;
        while i < self.sinks.len() {
            match self.sinks[i].write(&results) {
                Ok(files) => {
                    self.outputs.extend(files);
                    i += 1;
                }
                Err(e) => {
                    let sink = self.sinks.remove(i);
                    failed_now |= self.fail(sink.name(), e);
                }
            }
        }
        if let Some(pool) = &self.recycle {
            pool.give(frame.data);
            if let Some(a) = annotated {
                pool.give(a.data);
            }
        }
        self.frames += 1;
        failed_now
    }

    /// Records a sink's failure (the first one is the run's error); returns true.
    fn fail(&mut self, sink: String, error: PipelineError) -> bool {
        let error = PipelineError::Output {
            output: self.folder.dir().to_path_buf(),
            message: format!(
                "output '{sink}' failed: {error}; it was removed, and the other outputs were completed with the frames read so far"
            ),
        };
        tracing::error!("{error}");
        self.failure.get_or_insert(error);
        true
    }

    /// Lists the files written so far in the output folder's record, so that the
    /// next run into the folder can tell them from files vpipe did not write (no
    /// record when nothing was written).
    fn record_outputs(&mut self) -> Result<()> {
        self.recorded = true;
        if self.outputs.is_empty() {
            return Ok(());
        }
        let mut files: Vec<String> = self
            .outputs
            .iter()
            .filter_map(|p| p.strip_prefix(self.folder.dir()).ok())
            .map(|p| p.display().to_string())
            .collect();
        files.sort();
        files.dedup();
        let target = self.folder.dir().join(OUTPUTS_RECORD);
        write_output(
            &target,
            &serde_json::to_vec_pretty(&json!({ "outputs": files })).unwrap_or_default(),
        )
    }

    /// Completes every sink and the record; returns the files written, or the
    /// first sink failure (after the other sinks completed).
    pub(crate) fn finish(mut self) -> Result<Vec<PathBuf>> {
        for sink in std::mem::take(&mut self.sinks) {
            let name = sink.name();
            match sink.finish() {
                Ok(files) => self.outputs.extend(files),
                Err(e) => {
                    self.fail(name, e);
                }
            }
        }
        self.record_outputs()?;
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut self.outputs)),
        }
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        // A run that ended in an error leaves a record of what it did write (the
        // sinks' unfinished files go with them).
        if !self.recorded {
            let _ = self.record_outputs();
        }
    }
}

/// The file in an output folder that lists what the last run wrote there.
const OUTPUTS_RECORD: &str = ".vpipe-outputs.json";

/// Makes `dir` ready for a run: the outputs an earlier run recorded there are
/// removed; any other file refuses the folder, unless `overwrite`.
pub(crate) fn clear_earlier_outputs(dir: &Path, overwrite: bool) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| PipelineError::Io { path, cause }
    };
    let entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(list) => list
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(io(dir))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    let record = dir.join(OUTPUTS_RECORD);
    let recorded: BTreeSet<PathBuf> = std::fs::read(&record)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| {
            v["outputs"].as_array().map(|files| {
                files
                    .iter()
                    .filter_map(|f| f.as_str())
                    .map(|f| dir.join(f))
                    .collect()
            })
        })
        .unwrap_or_default();
    // A folder is vpipe's when it holds recorded outputs and nothing else (masks/).
    let ours = |p: &Path| {
        *p == record
            || recorded.contains(p)
            || (p.is_dir()
                && std::fs::read_dir(p).is_ok_and(|d| {
                    let files: Vec<_> = d.collect();
                    !files.is_empty()
                        && files
                            .iter()
                            .all(|e| e.as_ref().is_ok_and(|e| recorded.contains(&e.path())))
                }))
    };
    let (ours_now, foreign): (Vec<&PathBuf>, Vec<&PathBuf>) = entries.iter().partition(|p| ours(p));
    if !foreign.is_empty() && !overwrite {
        return Err(PipelineError::Output {
            output: dir.to_path_buf(),
            message: format!(
                "the output folder holds {} file(s) vpipe did not write ({}); choose a new or empty folder with --out, or add --overwrite to write beside them",
                foreign.len(),
                some_names(foreign.iter().map(|p| p.as_path())),
            ),
        });
    }
    for p in &recorded {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(p)(e)),
            _ => {}
        }
    }
    // Folders that held only outputs (masks/) go too; others stay.
    for p in ours_now.into_iter().filter(|p| p.is_dir()) {
        let _ = std::fs::remove_dir(p);
    }
    match std::fs::remove_file(&record) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&record)(e)),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `target` atomically.
fn write_output(target: &Path, bytes: &[u8]) -> Result<()> {
    vpipe_io::output::write_atomic(target, bytes).map_err(|e| PipelineError::Output {
        output: target.to_path_buf(),
        message: e.to_string(),
    })
}

/// Encodes `pixels` (`width x height`, row-major, of `color`) in the format the
/// target's extension names (PNG otherwise), from the caller's buffer without a
/// copy, and writes the file atomically.
fn write_image(
    pixels: &[u8],
    [width, height]: [usize; 2],
    color: image::ExtendedColorType,
    target: &Path,
) -> Result<()> {
    let failed = |message: String| PipelineError::Output {
        output: target.to_path_buf(),
        message,
    };
    if pixels.len() != width * height * usize::from(color.bits_per_pixel() / 8) {
        return Err(failed(format!(
            "{} bytes do not make a {width}x{height} {color:?} image",
            pixels.len()
        )));
    }
    let (w, h) = (
        u32::try_from(width).map_err(|_| failed(format!("width {width} is too large")))?,
        u32::try_from(height).map_err(|_| failed(format!("height {height} is too large")))?,
    );
    let format = image::ImageFormat::from_path(target).unwrap_or(image::ImageFormat::Png);
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::write_buffer_with_format(&mut bytes, pixels, w, h, color, format)
        .map_err(|e| failed(format!("cannot encode: {e}")))?;
    write_output(target, &bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::{CocoJson, common_folder};
    use std::path::{Path, PathBuf};

    #[test]
    fn coco_ids_follow_numeric_names_and_names_are_relative_to_the_common_folder() {
        let numbered: Vec<PathBuf> = ["d/000000000139.jpg", "d/x/000000000009.jpg"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(CocoJson::image_ids(&numbered), [139, 9]);
        assert_eq!(common_folder(&numbered), Path::new("d"));
        let named: Vec<PathBuf> = ["d/a.jpg", "e/7.jpg"].iter().map(PathBuf::from).collect();
        assert_eq!(CocoJson::image_ids(&named), [1, 2]);
        assert_eq!(common_folder(&named), Path::new(""));
        let twice: Vec<PathBuf> = ["a/1.jpg", "b/1.png"].iter().map(PathBuf::from).collect();
        assert_eq!(CocoJson::image_ids(&twice), [1, 2]);
        assert_eq!(
            common_folder(&[PathBuf::from("p/q/r.png")]),
            Path::new("p/q")
        );
    }
}
