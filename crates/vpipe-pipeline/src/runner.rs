//! Running a compiled pipeline over images, folders, globs, video files, streams
//! and cameras.
//!
//! Six stages run concurrently, joined by bounded queues so that memory stays flat
//! however long the input: decode → preprocess → model → post-process and annotate
//! → write (annotated images or video, `results.jsonl`, masks, COCO detections).
//! Each stage's CPU time and wall-clock busy time are measured ([`StageTimes`]). A
//! stop flag (set on Ctrl-C by the command line) ends decoding; the frames already
//! read are finished and every output is closed properly, so the video stays
//! playable.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;
use serde_json::json;
use vpipe_annotate::{Annotator, Style};
use vpipe_core::output::PartialFile;
use vpipe_core::result::HeadOutput;
use vpipe_media::{
    ChannelOrder, Frame, FramePool, VideoInput, VideoReader, VideoWriter, load_image,
};

use crate::cpu_time;
use crate::error::{PipelineError, Result};
use crate::graph::{NamedOutput, Pipeline, Prepared, RawOutputs};
use crate::queue::BoundedQueue;
use crate::spec::LivePolicy;

/// File extensions read as still images.
pub const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff"];
/// File extensions read as videos.
pub const VIDEO_EXTENSIONS: [&str; 12] = [
    "mp4", "avi", "mkv", "mov", "webm", "m4v", "mpg", "mpeg", "wmv", "flv", "ts", "3gp",
];

/// What a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Still images, in this order.
    Images(Vec<PathBuf>),
    /// A video file, stream or camera.
    Video(VideoInput),
}

fn extension(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Interprets a command-line input: a camera index, a URL, a folder, a glob, a
/// video file or an image file. A folder gives its images (with `recursive`, those
/// of its subfolders too); the videos, other files and subfolders it leaves out are
/// named in a warning.
pub fn resolve_input(arg: &str, recursive: bool) -> Result<Input> {
    let bad = |message: String| PipelineError::Input {
        input: arg.to_string(),
        message,
    };
    if let Ok(index) = arg.parse::<i32>() {
        return Ok(Input::Video(VideoInput::Camera(index)));
    }
    if arg.contains("://") {
        return Ok(Input::Video(VideoInput::Url(arg.to_string())));
    }
    let path = Path::new(arg);
    if path.is_dir() {
        let mut listing = FolderListing::default();
        listing
            .walk(path, recursive)
            .map_err(|e| bad(format!("cannot list the folder: {e}")))?;
        listing.report(path);
        let mut files = listing.images;
        files.sort();
        if files.is_empty() {
            return Err(bad(format!(
                "the folder holds no images ({})",
                IMAGE_EXTENSIONS.join(", ")
            )));
        }
        return Ok(Input::Images(files));
    }
    if path.is_file() {
        return Ok(if VIDEO_EXTENSIONS.contains(&extension(path).as_str()) {
            Input::Video(VideoInput::File(path.to_path_buf()))
        } else {
            Input::Images(vec![path.to_path_buf()])
        });
    }
    if arg.contains(['*', '?', '[', '{']) {
        let files =
            glob_files(arg).map_err(|e| bad(format!("not a valid pattern: {}", e.kind())))?;
        if files.is_empty() {
            return Err(bad("the pattern matches no files".into()));
        }
        return Ok(Input::Images(files));
    }
    Err(bad("no such file or folder".into()))
}

/// What a folder given as input holds: its images (the input), and what is skipped.
#[derive(Debug, Default)]
struct FolderListing {
    images: Vec<PathBuf>,
    videos: Vec<PathBuf>,
    others: Vec<PathBuf>,
    folders: Vec<PathBuf>,
}

impl FolderListing {
    /// Sorts the entries of `dir` (and, when `recursive`, of its subfolders).
    fn walk(&mut self, dir: &Path, recursive: bool) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                if recursive {
                    self.walk(&path, true)?;
                } else {
                    self.folders.push(path);
                }
            } else if IMAGE_EXTENSIONS.contains(&extension(&path).as_str()) {
                self.images.push(path);
            } else if VIDEO_EXTENSIONS.contains(&extension(&path).as_str()) {
                self.videos.push(path);
            } else {
                self.others.push(path);
            }
        }
        Ok(())
    }

    /// Warns about what a run of folder `dir` leaves out.
    fn report(&self, dir: &Path) {
        let some = |paths: &[PathBuf]| some_names(paths.iter().map(|p| p.as_path()));
        let dir = dir.display();
        if !self.videos.is_empty() {
            tracing::warn!(
                "{dir}: skipping {} video file(s) ({}): a folder input runs its images; give each video as --input",
                self.videos.len(),
                some(&self.videos)
            );
        }
        if !self.others.is_empty() {
            tracing::warn!(
                "{dir}: skipping {} file(s) that are not images ({})",
                self.others.len(),
                some(&self.others)
            );
        }
        if !self.folders.is_empty() {
            tracing::warn!(
                "{dir}: not searching {} subfolder(s) ({}); add --recursive to include their images",
                self.folders.len(),
                some(&self.folders)
            );
        }
    }
}

/// The file names of `paths`, sorted: the first three, then `+N more`.
fn some_names<'a>(paths: impl Iterator<Item = &'a Path>) -> String {
    let mut names: Vec<String> = paths
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    let more = names.len().saturating_sub(3);
    names.truncate(3);
    if more > 0 {
        names.push(format!("+{more} more"));
    }
    names.join(", ")
}

/// The files `pattern` selects, sorted: `*`, `?` and `[...]` within a path
/// component, `**` across folders and `{a,b}` alternatives (nested or empty ones too),
/// all of globset's syntax. The folder before the first wildcard is searched, as
/// deep as the pattern reaches.
fn glob_files(pattern: &str) -> std::result::Result<Vec<PathBuf>, globset::Error> {
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .empty_alternates(true)
        .build()?
        .compile_matcher();
    let wildcard = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    let (root, rest) = pattern.split_at(pattern[..wildcard].rfind('/').map_or(0, |i| i + 1));
    // Each `/` of the rest (alternatives included) is at most one folder further down.
    let depth = if rest.contains("**") {
        usize::MAX
    } else {
        rest.matches('/').count() + 1
    };
    let mut files = BTreeSet::new();
    let mut folders = vec![(PathBuf::from(root), depth)];
    while let Some((folder, depth)) = folders.pop() {
        let listed = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &folder
        };
        for entry in std::fs::read_dir(listed).into_iter().flatten().flatten() {
            let path = folder.join(entry.file_name());
            if path.is_dir() {
                if depth > 1 {
                    folders.push((path, depth - 1));
                }
            } else if path.is_file() && glob.is_match(&path) {
                files.insert(path);
            }
        }
    }
    Ok(files.into_iter().collect())
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Folder for all outputs (created if missing).
    pub out_dir: PathBuf,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Set to stop reading input; frames already read are finished.
    pub stop: Arc<AtomicBool>,
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
    /// Write into an output folder that holds files vpipe did not write (they are
    /// kept). Without it such a folder is refused. Either way, the outputs an earlier
    /// run recorded there are removed first, so that none is left stale.
    pub overwrite: bool,
}

/// Time of each stage, summed over the run: CPU time in [`RunSummary::stages`],
/// wall-clock time in [`RunSummary::busy`].
///
/// Each stage's thread measures its own time; opening the input counts as decoding,
/// and opening and finishing the outputs as encoding. The model stage's CPU time also
/// includes the backend's worker threads, and decoding's whatever other threads used
/// (the video decoder's own threads).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimes {
    /// Reading and decoding frames.
    pub decode: Duration,
    /// Resizing and normalising into network inputs.
    pub preprocess: Duration,
    /// Backbones and head layers.
    pub model: Duration,
    /// Head post-processing (decoding boxes, NMS, masks, top-k).
    pub postprocess: Duration,
    /// Drawing results on frames.
    pub annotate: Duration,
    /// Encoding and writing images, video, masks and results.
    pub encode: Duration,
}

impl StageTimes {
    /// `(name, time)` of each stage.
    pub fn named(&self) -> [(&'static str, Duration); 6] {
        [
            ("decode", self.decode),
            ("preprocess", self.preprocess),
            ("model", self.model),
            ("postprocess", self.postprocess),
            ("annotate", self.annotate),
            ("encode", self.encode),
        ]
    }

    /// Sum of all stages.
    pub fn total(&self) -> Duration {
        self.named().iter().map(|(_, d)| *d).sum()
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Frames processed and written.
    pub frames: u64,
    /// Inputs (files or frames) that failed, with why.
    pub failed: Vec<(String, String)>,
    /// Video frames that failed to decode and were skipped.
    pub skipped_frames: u64,
    /// Live frames dropped to keep latency bounded.
    pub dropped_frames: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// CPU time per stage (see [`StageTimes`]); the shares of the run's CPU time.
    pub stages: StageTimes,
    /// Wall-clock time each stage spent in its work, from its own thread (the model's
    /// includes waiting for the backend's workers). The stages overlap, so these add
    /// up to more than `elapsed`; the model's, against `elapsed`, says how much of the
    /// run the network kept the pipeline waiting.
    pub busy: StageTimes,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// Whether the run was stopped before the input ended.
    pub interrupted: bool,
    /// Backbone forward passes.
    pub backbone_runs: usize,
}

/// A decoded frame and where it came from.
struct Decoded {
    index: u64,
    source: Option<PathBuf>,
    timestamp_ms: Option<f64>,
    frame: Frame,
}

enum Msg<T> {
    Item(T),
    Failed { input: String, error: String },
}

struct Batch {
    items: Vec<Decoded>,
    prepared: Prepared,
}

struct Inferred {
    items: Vec<Decoded>,
    raw: RawOutputs,
}

struct Finished {
    /// The decoded frame; its pixels have moved into `annotated` when there is one.
    item: Decoded,
    outputs: Vec<NamedOutput>,
    annotated: Option<Frame>,
}

/// Starts a pipeline stage on its own named thread (the name shows in `top -H`,
/// `perf` and `/proc`, and threads the stage starts inherit it; the video
/// decoder's threads start with the reader, before the stages, and do not).
fn spawn_stage<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    name: &str,
    f: impl FnOnce() + Send + 'scope,
) {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn_scoped(scope, f)
        .unwrap_or_else(|e| panic!("cannot start the {name} thread: {e}"));
}

/// One stage's running totals, in nanoseconds.
#[derive(Default)]
struct StageClock {
    /// CPU time of the stage's thread.
    cpu: AtomicU64,
    /// Wall-clock time.
    wall: AtomicU64,
}

/// Adds the CPU time and the wall-clock time the calling thread spends in `f` to
/// `clock`.
fn timed<R>(clock: &StageClock, f: impl FnOnce() -> R) -> R {
    let (cpu, wall) = (cpu_time::thread(), Instant::now());
    let r = f();
    let nanos = |d: Duration| d.as_nanos() as u64;
    clock.cpu.fetch_add(
        nanos(cpu_time::thread().saturating_sub(cpu)),
        Ordering::Relaxed,
    );
    clock
        .wall
        .fetch_add(nanos(wall.elapsed()), Ordering::Relaxed);
    r
}

#[derive(Default)]
struct Clocks {
    decode: StageClock,
    preprocess: StageClock,
    model: StageClock,
    postprocess: StageClock,
    annotate: StageClock,
    encode: StageClock,
}

impl Clocks {
    /// Each stage's total of the counter `pick` chooses.
    fn times(&self, pick: impl Fn(&StageClock) -> &AtomicU64) -> StageTimes {
        let d = |c: &StageClock| Duration::from_nanos(pick(c).load(Ordering::Relaxed));
        StageTimes {
            decode: d(&self.decode),
            preprocess: d(&self.preprocess),
            model: d(&self.model),
            postprocess: d(&self.postprocess),
            annotate: d(&self.annotate),
            encode: d(&self.encode),
        }
    }
}

/// Runs `pipeline` over `input`, writing into `options.out_dir`.
///
/// Inputs that fail (an unreadable image) are reported in the summary while the
/// rest continue; a failure to write an output ends the run with an error, after
/// removing that output's partial file.
pub fn run(pipeline: &Pipeline, input: &Input, options: &RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let process_cpu0 = cpu_time::process();
    let workers_cpu0 = cpu_time::threads_named(vpipe_core::device::CPU_THREAD_PREFIX);
    let spec = &pipeline.file.spec;
    warn_about_outputs(pipeline, input);
    clear_earlier_outputs(&options.out_dir, options.overwrite)?;
    std::fs::create_dir_all(&options.out_dir).map_err(|cause| PipelineError::Io {
        path: options.out_dir.clone(),
        cause,
    })?;
    let inputs_on_disk: BTreeSet<PathBuf> = match input {
        Input::Images(files) => files.iter().filter_map(|p| p.canonicalize().ok()).collect(),
        Input::Video(VideoInput::File(p)) => p.canonicalize().into_iter().collect(),
        Input::Video(_) => BTreeSet::new(),
    };
    let clocks = Clocks::default();
    let mut reader = match input {
        Input::Video(v) => Some(timed(&clocks.decode, || VideoReader::open(v))?),
        Input::Images(_) => None,
    };
    let total = match input {
        Input::Images(files) => Some(files.len() as u64),
        Input::Video(_) => reader.as_ref().and_then(VideoReader::frame_count),
    }
    .map(|n| options.max_frames.map_or(n, |m| m.min(n)));
    let live = matches!(input, Input::Video(v) if v.is_live());
    let fps = reader.as_ref().map_or(0.0, VideoReader::fps);

    let mut writer = timed(&clocks.encode, || {
        Writer::new(pipeline, input, options, inputs_on_disk, reader.as_ref())
    })?;
    tracing::debug!(
        frames = ?total,
        fps,
        live,
        batch = spec.runner.batch,
        queue = spec.runner.queue,
        backbones = pipeline.branches.len(),
        out = %options.out_dir.display(),
        "run starting"
    );
    let progress = progress_bar(total, options.progress);
    let _active_bar = ActiveBar::set(&progress);
    let abort = AtomicBool::new(false);
    let dropped = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let depth = spec.runner.queue;
    let q_decoded: BoundedQueue<Msg<Decoded>> = BoundedQueue::new(depth);
    let q_prepared: BoundedQueue<Msg<Batch>> = BoundedQueue::new(depth);
    let q_inferred: BoundedQueue<Msg<Inferred>> = BoundedQueue::new(depth);
    let q_finished: BoundedQueue<Msg<Finished>> = BoundedQueue::new(depth);
    // Draw in the order the frames come in: BGR for video, RGB for stills.
    let annotator = Annotator::new(Style {
        mask_alpha: spec.output.mask_alpha,
        legend: true,
        order: match input {
            Input::Video(_) => ChannelOrder::Bgr,
            Input::Images(_) => ChannelOrder::Rgb,
        },
    });
    let stopped = || options.stop.load(Ordering::Relaxed) || abort.load(Ordering::Relaxed);

    let write_result: Result<()> = std::thread::scope(|scope| {
        // Stage 1: decode.
        spawn_stage(scope, "vpipe-decode", || {
            let send = |m: Msg<Decoded>| {
                if live && spec.runner.live == LivePolicy::DropOldest {
                    if q_decoded.push_drop_oldest(m).is_some() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            "live source ahead of the model: dropped the oldest waiting frame"
                        );
                    }
                } else {
                    q_decoded.push(m);
                }
            };
            let limit = options.max_frames.unwrap_or(u64::MAX);
            match input {
                Input::Images(files) => {
                    for (i, path) in files.iter().enumerate().take(limit as usize) {
                        if stopped() {
                            break;
                        }
                        match timed(&clocks.decode, || load_image(path)) {
                            Ok(frame) => send(Msg::Item(Decoded {
                                index: i as u64,
                                source: Some(path.clone()),
                                timestamp_ms: None,
                                frame,
                            })),
                            Err(e) => send(Msg::Failed {
                                input: path.display().to_string(),
                                error: e.to_string(),
                            }),
                        }
                    }
                }
                Input::Video(v) => {
                    let reader = reader
                        .as_mut()
                        .unwrap_or_else(|| unreachable!("opened above"));
                    let mut index = 0u64;
                    while index < limit && !stopped() {
                        match timed(&clocks.decode, || reader.next_frame()) {
                            Ok(Some(frame)) => {
                                send(Msg::Item(Decoded {
                                    index,
                                    source: None,
                                    timestamp_ms: Some(index as f64 * 1000.0 / fps),
                                    frame,
                                }));
                                index += 1;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                send(Msg::Failed {
                                    input: v.to_string(),
                                    error: e.to_string(),
                                });
                                break;
                            }
                        }
                    }
                    skipped.store(reader.skipped(), Ordering::Relaxed);
                }
            }
            tracing::debug!("decode stage done");
            q_decoded.close();
        });

        // Stage 2: preprocess, in batches of frames of one size.
        spawn_stage(scope, "vpipe-prepare", || {
            let batch_size = spec.runner.batch;
            let mut pending: Vec<Decoded> = Vec::new();
            let flush = |items: Vec<Decoded>| {
                if items.is_empty() {
                    return;
                }
                let frames: Vec<&Frame> = items.iter().map(|d| &d.frame).collect();
                match timed(&clocks.preprocess, || pipeline.prepare(&frames)) {
                    Ok(prepared) => {
                        q_prepared.push(Msg::Item(Batch { items, prepared }));
                    }
                    Err(e) => {
                        for d in items {
                            q_prepared.push(Msg::Failed {
                                input: describe(&d),
                                error: e.to_string(),
                            });
                        }
                    }
                }
            };
            loop {
                match q_decoded.pop() {
                    Some(Msg::Item(d)) => {
                        let same_size = pending.first().is_none_or(|p| {
                            (p.frame.width, p.frame.height) == (d.frame.width, d.frame.height)
                        });
                        if !same_size {
                            flush(std::mem::take(&mut pending));
                        }
                        pending.push(d);
                        if pending.len() >= batch_size {
                            flush(std::mem::take(&mut pending));
                        }
                    }
                    Some(Msg::Failed { input, error }) => {
                        flush(std::mem::take(&mut pending));
                        q_prepared.push(Msg::Failed { input, error });
                    }
                    None => {
                        flush(std::mem::take(&mut pending));
                        break;
                    }
                }
            }
            tracing::debug!("preprocess stage done");
            q_prepared.close();
        });

        // Stage 3: the model.
        spawn_stage(scope, "vpipe-model", || {
            while let Some(m) = q_prepared.pop() {
                let out = match m {
                    Msg::Item(b) => match timed(&clocks.model, || {
                        let started = Instant::now();
                        let out = pipeline.infer(b.prepared);
                        tracing::trace!(
                            first_frame = b.items[0].index,
                            frames = b.items.len(),
                            ms = started.elapsed().as_secs_f64() * 1e3,
                            waiting_decoded = q_decoded.len(),
                            waiting_prepared = q_prepared.len(),
                            "model"
                        );
                        out
                    }) {
                        Ok(raw) => Msg::Item(Inferred {
                            items: b.items,
                            raw,
                        }),
                        Err(e) => {
                            for d in &b.items[1..] {
                                q_inferred.push(Msg::Failed {
                                    input: describe(d),
                                    error: e.to_string(),
                                });
                            }
                            Msg::Failed {
                                input: describe(&b.items[0]),
                                error: e.to_string(),
                            }
                        }
                    },
                    Msg::Failed { input, error } => Msg::Failed { input, error },
                };
                q_inferred.push(out);
            }
            tracing::debug!("model stage done");
            q_inferred.close();
        });

        // Stage 4: post-process and annotate.
        spawn_stage(scope, "vpipe-post", || {
            while let Some(m) = q_inferred.pop() {
                match m {
                    Msg::Item(inf) => {
                        match timed(&clocks.postprocess, || pipeline.postprocess(&inf.raw)) {
                            Ok(per_frame) => {
                                for (mut item, outputs) in inf.items.into_iter().zip(per_frame) {
                                    // The writer needs only the frame's size: its pixels
                                    // become the annotated image.
                                    let annotated = spec.output.annotated.then(|| {
                                        timed(&clocks.annotate, || {
                                            draw(pipeline, &annotator, &mut item.frame, &outputs)
                                        })
                                    });
                                    q_finished.push(Msg::Item(Finished {
                                        item,
                                        outputs,
                                        annotated,
                                    }));
                                }
                            }
                            Err(e) => {
                                for d in &inf.items {
                                    q_finished.push(Msg::Failed {
                                        input: describe(d),
                                        error: e.to_string(),
                                    });
                                }
                            }
                        }
                    }
                    Msg::Failed { input, error } => {
                        q_finished.push(Msg::Failed { input, error });
                    }
                }
            }
            tracing::debug!("post-process stage done");
            q_finished.close();
        });

        // Stage 5: write, on this thread.
        let result = (|| {
            while let Some(m) = q_finished.pop() {
                match m {
                    Msg::Item(f) => {
                        let (frame, started) = (f.item.index, Instant::now());
                        timed(&clocks.encode, || writer.write(f))?;
                        tracing::trace!(
                            frame,
                            ms = started.elapsed().as_secs_f64() * 1e3,
                            waiting_inferred = q_inferred.len(),
                            waiting_finished = q_finished.len(),
                            "written"
                        );
                        progress.inc(1);
                    }
                    Msg::Failed { input, error } => {
                        // Once as it happens (the summary names it again).
                        let message = if error.contains(&input) {
                            error.clone()
                        } else {
                            format!("{input}: {error}")
                        };
                        progress.suspend(|| eprintln!("error: {message}"));
                        writer.failed.push((input, error));
                        progress.inc(1);
                    }
                }
            }
            Ok(())
        })();
        if result.is_err() {
            abort.store(true, Ordering::Relaxed);
            for q in [
                &q_decoded as &dyn Closable,
                &q_prepared,
                &q_inferred,
                &q_finished,
            ] {
                q.close_queue();
            }
            // Drain so that blocked producers finish.
            while q_finished.pop().is_some() {}
        }
        result
    });
    progress.finish_and_clear();
    write_result?;
    let interrupted = options.stop.load(Ordering::Relaxed);
    let mut summary = timed(&clocks.encode, || writer.finish())?;
    summary.elapsed = started.elapsed();
    let mut stages = clocks.times(|c| &c.cpu);
    stages.model +=
        cpu_time::threads_named(vpipe_core::device::CPU_THREAD_PREFIX).saturating_sub(workers_cpu0);
    let unattributed = cpu_time::process()
        .saturating_sub(process_cpu0)
        .saturating_sub(stages.total());
    stages.decode += unattributed;
    summary.stages = stages;
    summary.busy = clocks.times(|c| &c.wall);
    summary.skipped_frames = skipped.load(Ordering::Relaxed);
    summary.dropped_frames = dropped.load(Ordering::Relaxed);
    summary.interrupted = interrupted;
    summary.backbone_runs = pipeline.backbone_runs();
    Ok(summary)
}

/// Lets the runner close queues of different item types alike.
trait Closable {
    fn close_queue(&self);
}

impl<T> Closable for BoundedQueue<T> {
    fn close_queue(&self) {
        self.close();
    }
}

fn describe(d: &Decoded) -> String {
    match &d.source {
        Some(p) => p.display().to_string(),
        None => format!("frame {}", d.index),
    }
}

/// The frame with every head's results drawn on it, in the annotator's channel
/// order; the frame's pixels move into it (`frame.data` is left empty). Results of
/// a head's own kind are drawn last, by the head ([`Pipeline::annotate_custom`]).
fn draw(
    pipeline: &Pipeline,
    annotator: &Annotator,
    frame: &mut Frame,
    outputs: &[NamedOutput],
) -> Frame {
    let order = annotator.style().order;
    let taken = Frame {
        width: frame.width,
        height: frame.height,
        data: std::mem::take(&mut frame.data),
        order: frame.order,
    }
    .into_order(order);
    let mut img = RgbImage::from_raw(taken.width as u32, taken.height as u32, taken.data)
        .unwrap_or_else(|| unreachable!("Frame::new checks the buffer size"));
    let builtin: Vec<&HeadOutput> = outputs.iter().map(|o| &o.output).collect();
    annotator.draw_all(&mut img, &builtin);
    let custom = outputs
        .iter()
        .any(|o| matches!(o.output, HeadOutput::Custom(_)));
    if custom {
        // The heads draw in RGB order.
        let rgb = Frame {
            data: img.into_raw(),
            ..taken
        }
        .into_order(ChannelOrder::Rgb);
        let mut img = RgbImage::from_raw(rgb.width as u32, rgb.height as u32, rgb.data)
            .unwrap_or_else(|| unreachable!("the same size as above"));
        pipeline.annotate_custom(&mut img, outputs);
        return Frame {
            data: img.into_raw(),
            ..rgb
        }
        .into_order(order);
    }
    Frame {
        data: img.into_raw(),
        ..taken
    }
}

/// The progress bar of the run in progress, if one is drawn.
static ACTIVE_BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Runs `f` (a write to the terminal: a log line) with the progress bar of the run
/// in progress, if any, cleared, and draws the bar again after it, so that the two
/// never share a line. The command line's log writer goes through it.
pub fn suspend_progress<R>(f: impl FnOnce() -> R) -> R {
    let bar = ACTIVE_BAR
        .lock()
        .map(|b| b.clone())
        .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// While it lives, its bar is the one [`suspend_progress`] clears.
struct ActiveBar;

impl ActiveBar {
    fn set(bar: &indicatif::ProgressBar) -> Self {
        Self::replace(Some(bar.clone()));
        ActiveBar
    }

    fn replace(bar: Option<indicatif::ProgressBar>) {
        match ACTIVE_BAR.lock() {
            Ok(mut active) => *active = bar,
            Err(poisoned) => *poisoned.into_inner() = bar,
        }
    }
}

impl Drop for ActiveBar {
    fn drop(&mut self) {
        Self::replace(None);
    }
}

fn progress_bar(total: Option<u64>, wanted: bool) -> indicatif::ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let template = if total.is_some() {
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames, {per_sec}, ETA {eta}"
    } else {
        "{spinner} [{elapsed_precise}] {pos} frames, {per_sec}"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// One line of `results.jsonl`.
#[derive(Serialize)]
struct ResultLine {
    frame: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// The annotated image's file name in the output folder (it differs from the
    /// source's when two inputs share a name: `a-1.jpg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    annotated: Option<String>,
    width: usize,
    height: usize,
    heads: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weights_note: Option<&'static str>,
}

/// The standard COCO category id of each of the 80 contiguous detection classes.
const COCO_CATEGORY_IDS: [u32; 80] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
];

/// Writes every output of a run; all files appear under their final names only
/// when complete.
struct Writer {
    out_dir: PathBuf,
    inputs_on_disk: BTreeSet<PathBuf>,
    masks: bool,
    results: Option<(BufWriter<std::fs::File>, PartialFile)>,
    video: Option<VideoWriter>,
    video_target: Option<PathBuf>,
    codec: String,
    fps: f64,
    coco: Option<Coco>,
    used_names: HashMap<String, usize>,
    frames: u64,
    failed: Vec<(String, String)>,
    outputs: Vec<PathBuf>,
    weights_note: Option<&'static str>,
    /// Where written frames' buffers go for reuse (a video's reader).
    recycle: Option<FramePool>,
    /// Whether the record of the outputs has been written.
    recorded: bool,
    /// Whether the pipeline file asked for COCO output (`output.coco: true`).
    coco_asked: bool,
}

/// The COCO detections of an image run (see [`Coco::image_ids`] for the ids).
#[derive(Default)]
struct Coco {
    detection_heads: bool,
    images: Vec<serde_json::Value>,
    annotations: Vec<serde_json::Value>,
    /// The folder `file_name`s are relative to: the inputs' common folder.
    root: PathBuf,
    /// The image id of each input, by index.
    ids: Vec<u64>,
}

impl Coco {
    /// The COCO output of a run over `files`.
    fn new(files: &[PathBuf]) -> Self {
        Self {
            root: common_folder(files),
            ids: Self::image_ids(files),
            ..Self::default()
        }
    }

    /// COCO image ids: the number in each file's name when every name is a number
    /// and no two are equal (`000000000139.jpg` is image 139, as in the COCO
    /// datasets, so that results match their annotations), else 1, 2, 3, ... in
    /// input order.
    fn image_ids(files: &[PathBuf]) -> Vec<u64> {
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

impl Writer {
    /// The writer of one run's outputs; `reader` is the video being read, if any
    /// (its frame rate, and the pool written frames' buffers go back to).
    fn new(
        pipeline: &Pipeline,
        input: &Input,
        options: &RunOptions,
        inputs_on_disk: BTreeSet<PathBuf>,
        reader: Option<&VideoReader>,
    ) -> Result<Self> {
        let out = &pipeline.file.spec.output;
        let results = if out.results {
            let target = options.out_dir.join("results.jsonl");
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
            Some((BufWriter::new(f), partial))
        } else {
            None
        };
        let video_target = match input {
            Input::Video(v) if out.annotated => {
                let stem = match v {
                    VideoInput::File(p) => p
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "video".into()),
                    VideoInput::Url(_) => "stream".into(),
                    VideoInput::Camera(i) => format!("camera{i}"),
                };
                Some(options.out_dir.join(format!("{stem}_annotated.mp4")))
            }
            _ => None,
        };
        let coco = match input {
            Input::Images(files) if out.coco != Some(false) => Some(Coco::new(files)),
            _ => None,
        };
        Ok(Self {
            out_dir: options.out_dir.clone(),
            inputs_on_disk,
            masks: out.masks,
            results,
            video: None,
            video_target,
            codec: out.video_codec.clone(),
            fps: reader.map_or(0.0, VideoReader::fps),
            coco,
            used_names: HashMap::new(),
            frames: 0,
            failed: Vec::new(),
            outputs: Vec::new(),
            weights_note: pipeline.weights_note,
            // Written frames' buffers go back to the reader.
            recycle: reader.map(VideoReader::frame_pool),
            recorded: false,
            coco_asked: out.coco == Some(true),
        })
    }

    /// Refuses to write over an input file.
    fn check_not_input(&self, target: &Path) -> Result<()> {
        let resolved = target
            .parent()
            .and_then(|d| d.canonicalize().ok())
            .and_then(|d| target.file_name().map(|n| d.join(n)));
        if let Some(r) = resolved
            && self.inputs_on_disk.contains(&r)
        {
            return Err(PipelineError::Output {
                output: target.to_path_buf(),
                message: "refusing to overwrite an input; choose another output folder".into(),
            });
        }
        Ok(())
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

    fn write(&mut self, f: Finished) -> Result<()> {
        let Finished {
            item,
            outputs,
            annotated,
        } = f;
        let (w, h) = (item.frame.width, item.frame.height);
        let mut annotated_name = None;
        // Annotated image or video frame.
        if let Some(img) = annotated {
            if let Some(target) = self.video_target.clone() {
                if self.video.is_none() {
                    self.check_not_input(&target)?;
                    let fps = if self.fps > 0.0 { self.fps } else { 25.0 };
                    self.video = Some(VideoWriter::create(&target, &self.codec, fps, w, h)?);
                }
                if let Some(v) = self.video.as_mut() {
                    v.write(&img)?;
                }
                if let Some(pool) = &self.recycle {
                    pool.give(img.data);
                }
            } else if let Some(src) = &item.source {
                let name = src
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("{:06}.png", item.index));
                let name = self.unique_name(&name);
                let target = self.out_dir.join(&name);
                annotated_name = Some(name);
                self.check_not_input(&target)?;
                let rgb = img.into_order(ChannelOrder::Rgb);
                let img = RgbImage::from_raw(w as u32, h as u32, rgb.data)
                    .unwrap_or_else(|| unreachable!("Frame::new checks the buffer size"));
                write_image(image::DynamicImage::ImageRgb8(img), &target)?;
                self.outputs.push(target);
            }
        }
        // Masks and result lines.
        let mut heads = Vec::with_capacity(outputs.len());
        for o in &outputs {
            let mut value = serde_json::to_value(o).unwrap_or_else(|_| json!({}));
            if let HeadOutput::Segmentation {
                width,
                height,
                mask,
                ..
            } = &o.output
                && self.masks
            {
                let rel = format!("masks/{:06}_{}.png", item.index, sanitize(&o.head));
                let target = self.out_dir.join(&rel);
                let dir = self.out_dir.join("masks");
                std::fs::create_dir_all(&dir).map_err(|cause| PipelineError::Io {
                    path: dir.clone(),
                    cause,
                })?;
                let img = image::GrayImage::from_raw(*width as u32, *height as u32, mask.clone())
                    .ok_or_else(|| PipelineError::Output {
                    output: target.clone(),
                    message: "mask does not match its size".into(),
                })?;
                write_image(image::DynamicImage::ImageLuma8(img), &target)?;
                self.outputs.push(target);
                value["mask"] = json!(rel);
            }
            if let (Some(coco), HeadOutput::Detection { detections }) =
                (self.coco.as_mut(), &o.output)
            {
                coco.detection_heads = true;
                let image_id = coco.ids.get(item.index as usize).copied();
                for d in detections {
                    let [x1, y1, x2, y2] = d.bbox;
                    let id = coco.annotations.len() + 1;
                    coco.annotations.push(json!({
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
            heads.push(value);
        }
        if let (Some(coco), Some(src)) = (self.coco.as_mut(), &item.source) {
            let file_name = src.strip_prefix(&coco.root).unwrap_or(src);
            coco.images.push(json!({
                "id": coco.ids.get(item.index as usize),
                "file_name": file_name.display().to_string(),
                "width": w,
                "height": h,
            }));
        }
        if let Some((out, partial)) = self.results.as_mut() {
            let line = ResultLine {
                frame: item.index,
                timestamp_ms: item.timestamp_ms,
                source: item.source.as_ref().map(|p| p.display().to_string()),
                annotated: annotated_name,
                width: w,
                height: h,
                heads,
                weights_note: self.weights_note,
            };
            serde_json::to_writer(&mut *out, &line)
                .map_err(std::io::Error::other)
                .and_then(|_| out.write_all(b"\n"))
                .map_err(|cause| PipelineError::Io {
                    path: partial.target().to_path_buf(),
                    cause,
                })?;
        }
        // Without annotation the frame still holds its pixels.
        if let Some(pool) = &self.recycle {
            pool.give(item.frame.data);
        }
        self.frames += 1;
        Ok(())
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
            .filter_map(|p| p.strip_prefix(&self.out_dir).ok())
            .map(|p| p.display().to_string())
            .collect();
        files.sort();
        files.dedup();
        let target = self.out_dir.join(OUTPUTS_RECORD);
        write_output(
            &target,
            &serde_json::to_vec_pretty(&json!({ "outputs": files })).unwrap_or_default(),
        )
    }

    /// Closes the video and results, moving them to their final names.
    fn finish(mut self) -> Result<RunSummary> {
        if let Some(v) = self.video.take() {
            self.outputs.push(v.finish()?);
        }
        if let Some((out, partial)) = self.results.take() {
            let target = partial.target().to_path_buf();
            out.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .map_err(|cause| PipelineError::Io {
                    path: target.clone(),
                    cause,
                })?;
            let target = partial.finish().map_err(|e| PipelineError::Output {
                output: target,
                message: e.to_string(),
            })?;
            self.outputs.push(target);
        }
        match self.coco.take() {
            Some(coco) if coco.detection_heads => {
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
                let results: Vec<serde_json::Value> = coco
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
                    "images": coco.images,
                    "annotations": coco.annotations,
                    "categories": categories,
                });
                for (name, value) in [
                    ("detections_coco.json", doc),
                    ("detections_coco_results.json", json!(results)),
                ] {
                    let target = self.out_dir.join(name);
                    write_output(
                        &target,
                        &serde_json::to_vec_pretty(&value).unwrap_or_default(),
                    )?;
                    self.outputs.push(target);
                }
            }
            Some(_) if self.coco_asked => tracing::warn!(
                "output.coco is on, but no head gave detections: no detections_coco.json written"
            ),
            _ => {}
        }
        self.record_outputs()?;
        Ok(RunSummary {
            frames: self.frames,
            failed: std::mem::take(&mut self.failed),
            outputs: std::mem::take(&mut self.outputs),
            ..RunSummary::default()
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A run that ended in an error leaves a record of what it did write (its
        // partial results file goes with `self.results`).
        if !self.recorded {
            let _ = self.record_outputs();
        }
    }
}

/// The file in an output folder that lists what the last run wrote there.
const OUTPUTS_RECORD: &str = ".vpipe-outputs.json";

/// Makes `dir` ready for a run: the outputs an earlier run recorded there are
/// removed; any other file refuses the folder, unless `overwrite`.
fn clear_earlier_outputs(dir: &Path, overwrite: bool) -> Result<()> {
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

/// Warns about outputs a run of `input` will not write although asked for, or
/// about a run that writes nothing at all.
fn warn_about_outputs(pipeline: &Pipeline, input: &Input) {
    let out = &pipeline.file.spec.output;
    let video = matches!(input, Input::Video(_));
    if out.coco == Some(true) && video {
        tracing::warn!(
            "output.coco: COCO detections are written for image inputs only; for this video they are in results.jsonl"
        );
    }
    if !out.annotated && !out.results && !out.masks && (out.coco == Some(false) || video) {
        tracing::warn!(
            "every output is off (output.annotated, results, coco, masks): this run writes nothing"
        );
    }
}

/// COCO's category id for a contiguous class id (1 to 80); other ids are kept.
fn coco_category(class_id: usize) -> u32 {
    class_id
        .checked_sub(1)
        .and_then(|i| COCO_CATEGORY_IDS.get(i))
        .copied()
        .unwrap_or(class_id as u32)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `bytes` to `target` atomically.
fn write_output(target: &Path, bytes: &[u8]) -> Result<()> {
    vpipe_core::output::write_atomic(target, bytes).map_err(|e| PipelineError::Output {
        output: target.to_path_buf(),
        message: e.to_string(),
    })
}

/// Encodes an image in the format its target's extension names (PNG otherwise)
/// and writes it atomically.
fn write_image(img: image::DynamicImage, target: &Path) -> Result<()> {
    write_output(target, &encode_like(img, target)?)
}

/// Encodes an image in the format its target's extension names (PNG otherwise).
fn encode_like(img: image::DynamicImage, target: &Path) -> Result<Vec<u8>> {
    let format = image::ImageFormat::from_path(target).unwrap_or(image::ImageFormat::Png);
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format)
        .map_err(|e| PipelineError::Output {
            output: target.to_path_buf(),
            message: format!("cannot encode: {e}"),
        })?;
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::{Coco, common_folder, glob_files};
    use std::path::{Path, PathBuf};

    #[test]
    fn coco_ids_follow_numeric_names_and_names_are_relative_to_the_common_folder() {
        let numbered: Vec<PathBuf> = ["d/000000000139.jpg", "d/x/000000000009.jpg"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(Coco::image_ids(&numbered), [139, 9]);
        assert_eq!(common_folder(&numbered), Path::new("d"));
        let named: Vec<PathBuf> = ["d/a.jpg", "e/7.jpg"].iter().map(PathBuf::from).collect();
        assert_eq!(Coco::image_ids(&named), [1, 2]);
        assert_eq!(common_folder(&named), Path::new(""));
        let twice: Vec<PathBuf> = ["a/1.jpg", "b/1.png"].iter().map(PathBuf::from).collect();
        assert_eq!(Coco::image_ids(&twice), [1, 2]);
        assert_eq!(
            common_folder(&[PathBuf::from("p/q/r.png")]),
            Path::new("p/q")
        );
    }

    #[test]
    fn globs_select_files_with_brace_alternatives() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for name in [
            "a/1.jpg",
            "a/2.png",
            "a/3.gif",
            "x/1.jpg",
            "y/2.jpg",
            "y/z/2.jpg",
            "p.jpg",
            "p.jpeg",
            "p.png",
            "q",
            "qb",
            "n/{b}.jpg",
        ] {
            std::fs::create_dir_all(d.join(name).parent().unwrap()).unwrap();
            std::fs::write(d.join(name), b"").unwrap();
        }
        let select = |pattern: &str| -> Vec<String> {
            let files = glob_files(&format!("{}/{pattern}", d.display())).unwrap();
            let names = files
                .iter()
                .map(|f| f.strip_prefix(d).unwrap().display().to_string());
            names.collect()
        };
        assert_eq!(select("a/*.{jpg,png}"), ["a/1.jpg", "a/2.png"]);
        assert_eq!(select("{x,y}/{1,2}.jpg"), ["x/1.jpg", "y/2.jpg"]);
        assert_eq!(select("p.{jp{g,eg},png}"), ["p.jpeg", "p.jpg", "p.png"]);
        assert_eq!(select("q{,b}"), ["q", "qb"]);
        // `*` stays within a folder; `**` goes down any number of them; folders are
        // not files.
        assert_eq!(select("*/2.*"), ["a/2.png", "y/2.jpg"]);
        assert_eq!(select("**/2.jpg"), ["y/2.jpg", "y/z/2.jpg"]);
        assert_eq!(select("[ay]"), Vec::<String>::new());
        // A brace group is always an alternation: `\{` is a literal brace.
        assert_eq!(select("n/\\{b\\}.*"), ["n/{b}.jpg"]);
        assert_eq!(select("n/{b}.*"), Vec::<String>::new());
        assert!(glob_files("a{b,c*").is_err());
        // A pattern without a folder before its first wildcard is relative to the
        // working folder (the package's, under cargo test), and its paths stay so.
        assert_eq!(
            glob_files("{src,no-such-folder}/l?b.rs").unwrap(),
            [PathBuf::from("src/lib.rs")]
        );
    }
}
