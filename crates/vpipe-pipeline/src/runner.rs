//! Running a compiled pipeline from a source ([`crate::source::Input`]) into sinks
//! ([`crate::sink::Sink`]).
//!
//! Five stages run concurrently, joined by bounded queues so that memory stays flat
//! however long the input: decode → preprocess → model → post-process and annotate
//! → write (every sink, in turn: annotated images or video, `results.jsonl`, masks,
//! COCO detections, the caller's own).
//! Each stage's CPU time and wall-clock busy time are measured ([`StageTimes`]). A
//! stop flag (set on Ctrl-C by the command line) ends decoding; the frames already
//! read are finished and every output is closed properly, so the video stays
//! playable.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;
use vpipe_annotate::{Annotator, Style};
use vpipe_core::result::{HeadOutput, RegionCount};
use vpipe_media::{ChannelOrder, Frame, VideoInput, VideoReader, load_image};

use crate::analytics::{Analytics, FrameAnalytics};
use crate::cpu_time;
use crate::error::{PipelineError, Result};
use crate::graph::{NamedOutput, Pipeline, Prepared, RawOutputs};
use crate::queue::BoundedQueue;
use crate::sink::{
    AnnotatedImages, AnnotatedVideo, CocoJson, MaskPngs, NatsResults, OutputFolder, ResultsJsonl,
    Sink, Sinks, clear_earlier_outputs,
};
use crate::source::Input;
use crate::spec::LivePolicy;

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
    /// The counts of the heads' zones and lines.
    regions: Vec<RegionCount>,
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

/// Runs `pipeline` over `input`, writing the outputs its file asks for into
/// `options.out_dir`.
///
/// Inputs that fail (an unreadable image) are reported in the summary while the
/// rest continue. An output that fails to write (disk full, permission denied) is
/// dropped with its unfinished file, the run stops reading input, the other outputs
/// are completed with the frames read so far, and the run ends with an error naming
/// the output.
pub fn run(pipeline: &Pipeline, input: &Input, options: &RunOptions) -> Result<RunSummary> {
    run_with_sinks(pipeline, input, options, Vec::new())
}

/// [`run`], with `extra_sinks` of the caller's own (a writer into a database, say)
/// next to the outputs the pipeline file asks for.
pub fn run_with_sinks(
    pipeline: &Pipeline,
    input: &Input,
    options: &RunOptions,
    extra_sinks: Vec<Box<dyn Sink>>,
) -> Result<RunSummary> {
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

    let mut sinks = timed(&clocks.encode, || {
        sinks_of_run(
            pipeline,
            input,
            options,
            inputs_on_disk,
            reader.as_ref(),
            extra_sinks,
        )
    })?;
    let mut failed: Vec<(String, String)> = Vec::new();
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
    let depth = spec.runner.queue;
    let run = Stages {
        pipeline,
        clocks: &clocks,
        stop: &options.stop,
        abort: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        decoded: BoundedQueue::new(depth),
        prepared: BoundedQueue::new(depth),
        inferred: BoundedQueue::new(depth),
        finished: BoundedQueue::new(depth),
    };
    // Draw in the order the frames come in: BGR for video, RGB for stills.
    let annotator = Annotator::new(Style {
        mask_alpha: spec.output.mask_alpha,
        legend: true,
        order: match input {
            Input::Video(_) => ChannelOrder::Bgr,
            Input::Images(_) => ChannelOrder::Rgb,
        },
    });
    let limit = options.max_frames.unwrap_or(u64::MAX);
    let drop_oldest = live && spec.runner.live == LivePolicy::DropOldest;
    std::thread::scope(|scope| {
        let run = &run;
        spawn_stage(scope, "vpipe-decode", || {
            run.decode(input, reader.as_mut(), limit, fps, drop_oldest)
        });
        spawn_stage(scope, "vpipe-prepare", || run.prepare(spec.runner.batch));
        spawn_stage(scope, "vpipe-model", || run.infer());
        let analytics = Analytics::new(spec, fps);
        spawn_stage(scope, "vpipe-post", || {
            run.postprocess(&annotator, spec.output.annotated, analytics)
        });
        // The write stage runs on this thread.
        run.write(&mut sinks, &progress, &mut failed);
    });
    progress.finish_and_clear();
    let interrupted = options.stop.load(Ordering::Relaxed);
    let frames = sinks.frames;
    let outputs = timed(&clocks.encode, || sinks.finish())?;
    let mut summary = RunSummary {
        frames,
        failed,
        outputs,
        ..RunSummary::default()
    };
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
    summary.skipped_frames = run.skipped.load(Ordering::Relaxed);
    summary.dropped_frames = run.dropped.load(Ordering::Relaxed);
    summary.interrupted = interrupted;
    summary.backbone_runs = pipeline.backbone_runs();
    Ok(summary)
}

/// What the stages of one run share: the pipeline, the clocks, the stop flags and
/// counters, and the queues between them (decode → prepare → model → post-process
/// and annotate → write).
struct Stages<'a> {
    pipeline: &'a Pipeline,
    clocks: &'a Clocks,
    /// Set by the caller (Ctrl-C): stop reading input.
    stop: &'a AtomicBool,
    /// Set when a sink failed: stop reading input.
    abort: AtomicBool,
    /// Live frames dropped to keep up.
    dropped: AtomicU64,
    /// Video frames skipped as undecodable.
    skipped: AtomicU64,
    decoded: BoundedQueue<Msg<Decoded>>,
    prepared: BoundedQueue<Msg<Batch>>,
    inferred: BoundedQueue<Msg<Inferred>>,
    finished: BoundedQueue<Msg<Finished>>,
}

impl Stages<'_> {
    /// Whether reading should stop.
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.abort.load(Ordering::Relaxed)
    }

    /// Stage 1: reads and decodes at most `limit` frames of `input` (`reader` for a
    /// video at `fps`); a live source ahead of the model drops its oldest waiting
    /// frame when `drop_oldest`.
    fn decode(
        &self,
        input: &Input,
        reader: Option<&mut VideoReader>,
        limit: u64,
        fps: f64,
        drop_oldest: bool,
    ) {
        let send = |m: Msg<Decoded>| {
            if drop_oldest {
                if self.decoded.push_drop_oldest(m).is_some() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        "live source ahead of the model: dropped the oldest waiting frame"
                    );
                }
            } else {
                self.decoded.push(m);
            }
        };
        match (input, reader) {
            (Input::Images(files), _) => {
                for (i, path) in files.iter().enumerate().take(limit as usize) {
                    if self.stopped() {
                        break;
                    }
                    match timed(&self.clocks.decode, || load_image(path)) {
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
            (Input::Video(v), Some(reader)) => {
                let mut index = 0u64;
                // A live source's frames are timed by its own clock, from its first frame
                // (frames it dropped or that came late leave gaps); a file's by its frame
                // rate. A frame without a later time than the one before (the decoder's
                // last frames at the end of a stream) comes one frame after it.
                let (mut start_ms, mut last_ms) = (None, None::<f64>);
                while index < limit && !self.stopped() {
                    match timed(&self.clocks.decode, || reader.next_frame()) {
                        Ok(Some(frame)) => {
                            let timestamp_ms = match reader.position_ms().filter(|_| v.is_live()) {
                                Some(t) => {
                                    let t = t - *start_ms.get_or_insert(t);
                                    match last_ms {
                                        Some(last) if t <= last => last + 1000.0 / fps,
                                        _ => t,
                                    }
                                }
                                None => index as f64 * 1000.0 / fps,
                            };
                            last_ms = Some(timestamp_ms);
                            send(Msg::Item(Decoded {
                                index,
                                source: None,
                                timestamp_ms: Some(timestamp_ms),
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
                self.skipped.store(reader.skipped(), Ordering::Relaxed);
            }
            (Input::Video(_), None) => unreachable!("a video input is opened before the run"),
        }
        tracing::debug!("decode stage done");
        self.decoded.close();
    }

    /// Stage 2: preprocesses frames in batches of up to `batch_size` frames of one
    /// size.
    fn prepare(&self, batch_size: usize) {
        let mut pending: Vec<Decoded> = Vec::new();
        let flush = |items: Vec<Decoded>| {
            if items.is_empty() {
                return;
            }
            let frames: Vec<&Frame> = items.iter().map(|d| &d.frame).collect();
            match timed(&self.clocks.preprocess, || self.pipeline.prepare(&frames)) {
                Ok(prepared) => {
                    self.prepared.push(Msg::Item(Batch { items, prepared }));
                }
                Err(e) => {
                    for d in items {
                        self.prepared.push(Msg::Failed {
                            input: describe(&d),
                            error: e.to_string(),
                        });
                    }
                }
            }
        };
        loop {
            match self.decoded.pop() {
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
                    self.prepared.push(Msg::Failed { input, error });
                }
                None => {
                    flush(std::mem::take(&mut pending));
                    break;
                }
            }
        }
        tracing::debug!("preprocess stage done");
        self.prepared.close();
    }

    /// Stage 3: each backbone once per batch, then its heads' layers.
    fn infer(&self) {
        while let Some(m) = self.prepared.pop() {
            let out = match m {
                Msg::Item(b) => match timed(&self.clocks.model, || {
                    let started = Instant::now();
                    let out = self.pipeline.infer(b.prepared);
                    tracing::trace!(
                        first_frame = b.items[0].index,
                        frames = b.items.len(),
                        ms = started.elapsed().as_secs_f64() * 1e3,
                        waiting_decoded = self.decoded.len(),
                        waiting_prepared = self.prepared.len(),
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
                            self.inferred.push(Msg::Failed {
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
            self.inferred.push(out);
        }
        tracing::debug!("model stage done");
        self.inferred.close();
    }

    /// Stage 4: the heads' post-processing, the trackers, zones and lines (in frame
    /// order), and the drawing of every frame's results when `annotated`.
    fn postprocess(&self, annotator: &Annotator, annotated: bool, mut analytics: Analytics) {
        while let Some(m) = self.inferred.pop() {
            match m {
                Msg::Item(inf) => {
                    match timed(&self.clocks.postprocess, || {
                        self.pipeline.postprocess(&inf.raw)
                    }) {
                        Ok(per_frame) => {
                            for (mut item, mut outputs) in inf.items.into_iter().zip(per_frame) {
                                let extra = if analytics.is_empty() {
                                    FrameAnalytics::default()
                                } else {
                                    let worked = timed(&self.clocks.postprocess, || {
                                        analytics.update(&mut outputs)
                                    });
                                    match worked {
                                        Ok(extra) => extra,
                                        Err(e) => {
                                            self.finished.push(Msg::Failed {
                                                input: describe(&item),
                                                error: e.to_string(),
                                            });
                                            continue;
                                        }
                                    }
                                };
                                // The sinks need only the frame's size: its pixels
                                // become the annotated image.
                                let annotated = annotated.then(|| {
                                    timed(&self.clocks.annotate, || {
                                        draw(
                                            self.pipeline,
                                            annotator,
                                            &mut item.frame,
                                            &outputs,
                                            &extra,
                                        )
                                    })
                                });
                                self.finished.push(Msg::Item(Finished {
                                    item,
                                    outputs,
                                    annotated,
                                    regions: extra.counts,
                                }));
                            }
                        }
                        Err(e) => {
                            for d in &inf.items {
                                self.finished.push(Msg::Failed {
                                    input: describe(d),
                                    error: e.to_string(),
                                });
                            }
                        }
                    }
                }
                Msg::Failed { input, error } => {
                    self.finished.push(Msg::Failed { input, error });
                }
            }
        }
        tracing::debug!("post-process stage done");
        self.finished.close();
    }

    /// Stage 5: hands every frame to the sinks, and records the inputs that failed.
    /// A sink that fails stops the reading; the frames already read still go to the
    /// other sinks.
    fn write(
        &self,
        sinks: &mut Sinks,
        progress: &indicatif::ProgressBar,
        failed: &mut Vec<(String, String)>,
    ) {
        while let Some(m) = self.finished.pop() {
            match m {
                Msg::Item(f) => {
                    let (frame, started) = (f.item.index, Instant::now());
                    let sink_failed = timed(&self.clocks.encode, || {
                        sinks.write(
                            f.item.index,
                            f.item.timestamp_ms,
                            f.item.source.as_deref(),
                            f.item.frame,
                            (&f.outputs, &f.regions),
                            f.annotated,
                        )
                    });
                    if sink_failed {
                        self.abort.store(true, Ordering::Relaxed);
                    }
                    tracing::trace!(
                        frame,
                        ms = started.elapsed().as_secs_f64() * 1e3,
                        waiting_inferred = self.inferred.len(),
                        waiting_finished = self.finished.len(),
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
                    failed.push((input, error));
                    progress.inc(1);
                }
            }
        }
    }
}

fn describe(d: &Decoded) -> String {
    match &d.source {
        Some(p) => p.display().to_string(),
        None => format!("frame {}", d.index),
    }
}

/// The frame with every head's results, and the tracks' trails and the zones and
/// lines of `extra`, drawn on it, in the annotator's channel order; the frame's pixels
/// move into it (`frame.data` is left empty). Results of a head's own kind are drawn
/// last, by the head ([`Pipeline::annotate_custom`]).
fn draw(
    pipeline: &Pipeline,
    annotator: &Annotator,
    frame: &mut Frame,
    outputs: &[NamedOutput],
    extra: &FrameAnalytics,
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
    annotator.draw_trails(&mut img, &extra.trails);
    let builtin: Vec<&HeadOutput> = outputs.iter().map(|o| &o.output).collect();
    annotator.draw_all(&mut img, &builtin);
    annotator.draw_regions(&mut img, &extra.regions);
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

/// The outputs `pipeline`'s file asks for, then `extra` (the caller's own), for a
/// run of `input` whose video `reader` (if any) gives the frame rate and takes the
/// written frames' buffers back.
fn sinks_of_run(
    pipeline: &Pipeline,
    input: &Input,
    options: &RunOptions,
    inputs_on_disk: BTreeSet<PathBuf>,
    reader: Option<&VideoReader>,
    extra: Vec<Box<dyn Sink>>,
) -> Result<Sinks> {
    let out = &pipeline.file.spec.output;
    let folder = Arc::new(OutputFolder::new(options.out_dir.clone(), inputs_on_disk));
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if out.annotated {
        match input {
            Input::Video(v) => {
                let stem = match v {
                    VideoInput::File(p) => p
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "video".into()),
                    VideoInput::Url(_) => "stream".into(),
                    VideoInput::Camera(i) => format!("camera{i}"),
                };
                sinks.push(Box::new(AnnotatedVideo::new(
                    Arc::clone(&folder),
                    format!("{stem}_annotated.mp4"),
                    out.video_codec.clone(),
                    reader.map_or(0.0, VideoReader::fps),
                    v.is_live(),
                )));
            }
            Input::Images(_) => sinks.push(Box::new(AnnotatedImages::new(Arc::clone(&folder)))),
        }
    }
    if out.masks {
        sinks.push(Box::new(MaskPngs::new(Arc::clone(&folder))));
    }
    if let Some(nats) = &out.nats {
        let source = match input {
            Input::Video(v) => Some(v.to_string()),
            Input::Images(_) => None,
        };
        sinks.push(Box::new(NatsResults::new(
            nats,
            &pipeline.name,
            source,
            out.masks,
            pipeline.weights_note,
        )?));
    }
    if out.results {
        sinks.push(Box::new(ResultsJsonl::new(
            &folder,
            out.masks,
            pipeline.weights_note,
        )?));
    }
    if let Input::Images(files) = input
        && out.coco != Some(false)
    {
        sinks.push(Box::new(CocoJson::new(
            Arc::clone(&folder),
            files,
            out.coco == Some(true),
        )));
    }
    sinks.extend(extra);
    Ok(Sinks::new(
        folder,
        sinks,
        matches!(input, Input::Images(_)),
        reader.map(VideoReader::frame_pool),
    ))
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
