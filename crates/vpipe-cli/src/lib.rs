//! `vpipe`: the command line, as a library, so that a crate of your own gets the whole
//! `vpipe` command line with its own heads registered: build a
//! [`HeadRegistry`] (the built-ins plus yours) and call [`main_with`] from your
//! binary's `main` (see `examples/custom-head/`).
//!
//! Linking this crate also sets the process's global allocator
//! ([`alloc::LineAligned`]), so a binary using it must not set another.

pub mod alloc;
mod bench;
mod bench_train;
mod classify;
mod eval;
mod eval_agreement;
mod eval_run;
mod infer;
mod jobs;
mod pipeline;
mod preprocess;
mod train;
mod weights;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
pub use vpipe_heads::HeadRegistry;

/// OpenCV's variable for FFmpeg's log level (`-8`: quiet).
const FFMPEG_LOG_LEVEL: &str = "OPENCV_FFMPEG_LOGLEVEL";

/// Large blocks start on a cache line: among others, video frames then reach
/// OpenCV's writer without a copy (see [`alloc`]).
#[global_allocator]
static ALLOCATOR: alloc::LineAligned = alloc::LineAligned;

/// Multi-task computer vision on MobileViT.
#[derive(Debug, Parser)]
#[command(name = "vpipe", version, about)]
struct Cli {
    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline over images, a folder, a glob, a video, a stream or a camera.
    Run(pipeline::RunArgs),
    /// Check a pipeline file (keys, types, files, heads, strides) without running it.
    Validate(pipeline::CheckArgs),
    /// Print a pipeline's compiled graph: backbones, their heads and what they read.
    Inspect(pipeline::CheckArgs),
    /// Run a checkpoint on an already preprocessed NCHW float32 tensor and write its
    /// raw outputs as .npy files.
    Infer(infer::InferArgs),
    /// Classify images with a classification checkpoint.
    Classify(classify::ClassifyArgs),
    /// Write the network input a preprocessing preset makes of each image (.npy).
    Preprocess(preprocess::PreprocessArgs),
    /// Evaluate predictions against a dataset (detection: COCO AP as pycocotools;
    /// segmentation: mIoU; classification: top-1/top-5), or run a pipeline over the
    /// dataset and evaluate it; with --out, also metrics.json and plots.
    Eval(eval::EvalArgs),
    /// Measure inference latency and throughput (`bench train`: training speed).
    Bench(bench::BenchArgs),
    /// The weights registry and cache: list, fetch, import, verify.
    Weights(weights::WeightsArgs),
    /// Train heads on a frozen backbone (from labels, or distilled from teachers)
    /// into one multi-head model.
    Train(train::TrainArgs),
    /// Put jobs (one per input) on a NATS JetStream work queue for `vpipe worker`.
    Submit(jobs::SubmitArgs),
    /// Take jobs from a NATS JetStream work queue, run a pipeline on each, publish the
    /// results and acknowledge each job once its outputs are complete.
    Worker(jobs::WorkerArgs),
}

/// Log lines to stderr, with a run's progress bar cleared while they print.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        vpipe_pipeline::suspend_progress(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        // Colours only on a terminal, not in redirected logs.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A flag that the first Ctrl-C sets (saying `doing`, what the command does before
/// it stops); a second Ctrl-C ends the process at once (exit code 130).
fn stop_on_ctrl_c(
    doing: &'static str,
) -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopping now");
            std::process::exit(130);
        }
        eprintln!("\nstopping: {doing} (Ctrl-C again to quit at once)");
    })
    .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))?;
    Ok(stop)
}

/// The run was stopped by Ctrl-C after writing what it had: exit code 130, as a
/// shell reports a command ended by SIGINT.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// The `vpipe` command line with vpipe's own heads.
pub fn main() -> ExitCode {
    main_with(HeadRegistry::with_builtins())
}

/// The `vpipe` command line with the head types of `registry`: `run`, `validate`
/// and `inspect` build pipelines through it, so their YAML may use every head type
/// it holds. Parses the process's arguments, runs the command, prints any error as
/// one line, and returns the exit code (0, 1 for an error, 130 when interrupted).
pub fn main_with(registry: HeadRegistry) -> ExitCode {
    // Output into a closed pipe (`vpipe weights list | head -1`) ends the process
    // quietly, as it does for other command-line tools, instead of a failed write.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    alloc::keep_freed_memory();
    // A bug must still end in one readable line, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error{at}: {msg} (please report this)");
    }));
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if cli.verbose == 0 && std::env::var_os(FFMPEG_LOG_LEVEL).is_none() {
        // FFmpeg (inside OpenCV) logs a line per damaged packet of a corrupt video;
        // vpipe's own warnings and summary report the damage, so its messages are
        // left for `-v`. OpenCV reads the variable when it first opens a video.
        // SAFETY: no other thread has started yet, so none reads the environment
        // while it changes.
        unsafe { std::env::set_var(FFMPEG_LOG_LEVEL, "-8") };
    }
    // The registry is only read; a panic ends the process right after.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match cli.command {
        Command::Run(a) => pipeline::run(a, &registry),
        Command::Validate(a) => pipeline::validate(a, &registry),
        Command::Inspect(a) => pipeline::inspect(a, &registry),
        Command::Infer(a) => infer::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Preprocess(a) => preprocess::run(a),
        Command::Eval(a) => eval::run(a, &registry),
        Command::Bench(a) => bench::run(a),
        Command::Weights(a) => weights::run(a),
        Command::Train(a) => train::run(a, &registry),
        Command::Submit(a) => jobs::submit(a),
        Command::Worker(a) => jobs::worker(a, &registry),
    }));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) if e.is::<Interrupted>() => ExitCode::from(130),
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::from(101),
    }
}
