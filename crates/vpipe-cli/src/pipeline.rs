//! `vpipe run`, `vpipe validate` and `vpipe inspect`: YAML pipelines.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use vpipe_backbone::{Precision, cpu_precision, set_cpu_precision};
use vpipe_core::device::{self, DeviceSpec};
use vpipe_heads::HeadRegistry;
use vpipe_pipeline::{Pipeline, PipelineFile, RunOptions, resolve_input};

/// Arguments of `vpipe run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline file (YAML).
    pipeline: PathBuf,
    /// Image, folder, glob, video file, URL (rtsp://, http(s)://) or camera index.
    #[arg(short, long)]
    input: String,
    /// Output folder (default: `out/<pipeline name>`).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Write into an output folder that holds files vpipe did not write (they are
    /// kept; the outputs of an earlier run there are always replaced).
    #[arg(long)]
    overwrite: bool,
    /// With a folder as input, include the images of its subfolders too.
    #[arg(long)]
    recursive: bool,
    /// Stop after this many frames.
    #[arg(long)]
    max_frames: Option<u64>,
    /// CPU threads (default: the pipeline's `threads`, else one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Device: cpu, vulkan, vulkan:N, wgpu, cuda or cuda:N (default: the pipeline's
    /// `device`; GPU devices need vpipe built with their cargo feature).
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// Number format of the CPU's matrix products: fp32, bf16 or int8 (default: the
    /// pipeline's `precision`, else fp32; bf16 needs AVX512_BF16, int8 AVX512_VNNI as
    /// well, else the next one that runs, with a warning).
    #[arg(long)]
    precision: Option<Precision>,
    /// Do not draw the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print the run's figures (frames, fps, time per stage) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `vpipe validate` and `vpipe inspect`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Pipeline file (YAML).
    pipeline: PathBuf,
}

/// Reads and compiles a pipeline; `device` (the `--device` flag) replaces the
/// file's `device:` key, `threads` its `threads:` key and `precision` its
/// `precision:` key.
pub(crate) fn compile(
    path: &Path,
    threads: Option<usize>,
    device: Option<DeviceSpec>,
    precision: Option<Precision>,
    registry: &HeadRegistry,
) -> Result<Pipeline> {
    build(
        PipelineFile::read_with_device(path, device)?,
        threads,
        precision,
        registry,
    )
}

/// Compiles a pipeline file read before.
fn build(
    file: PipelineFile,
    threads: Option<usize>,
    precision: Option<Precision>,
    registry: &HeadRegistry,
) -> Result<Pipeline> {
    let path = file.path.clone();
    let precision = precision.unwrap_or(file.precision());
    if precision != Precision::Fp32 && file.device() != DeviceSpec::Cpu {
        bail!(
            "--precision {precision} runs on the CPU only, and {} runs on {}",
            path.display(),
            file.device()
        );
    }
    // Before any tensor exists: the CPU backend's thread pool starts with the first.
    device::set_cpu_threads(threads.unwrap_or(file.spec.threads));
    // Before the layers are built: they pack their weights for it.
    set_cpu_precision(precision);
    let device = file.device().device()?;
    let pipeline = Pipeline::compile(file, registry, &device)?;
    if let Some(note) = pipeline.weights_note {
        eprintln!(
            "warning: {}: {note}; its outputs carry no meaning",
            path.display()
        );
    }
    Ok(pipeline)
}

/// `vpipe validate`: reads the file, loads every weight file and builds every head,
/// without running anything and without downloading: registry weights not in the
/// cache yet are listed as what a run would fetch, and the checks that need them
/// are left for that run.
pub fn validate(args: CheckArgs, registry: &HeadRegistry) -> Result<()> {
    let file = PipelineFile::read_without_fetching(&args.pipeline)?;
    if !file.pending_weights().is_empty() {
        println!(
            "{}: valid as far as it can be checked without downloading; a run would first fetch:",
            args.pipeline.display()
        );
        for w in file.pending_weights() {
            println!(
                "  {} ({}): {} -> {}",
                w.name,
                w.key,
                w.url,
                w.path.display()
            );
        }
        println!(
            "the heads and backbones on those weights are checked once they are cached (`vpipe weights fetch NAME`)"
        );
        return Ok(());
    }
    let p = build(file, Some(0), None, registry)?;
    println!(
        "{}: valid ({} backbone(s), {} head(s): {})",
        args.pipeline.display(),
        p.branches.len(),
        p.head_names().len(),
        p.head_names().join(", ")
    );
    Ok(())
}

/// `vpipe inspect`: prints the compiled graph.
pub fn inspect(args: CheckArgs, registry: &HeadRegistry) -> Result<()> {
    let p = compile(&args.pipeline, Some(0), None, None, registry)?;
    print!("{}", p.describe());
    Ok(())
}

/// `vpipe run`.
pub fn run(args: RunArgs, registry: &HeadRegistry) -> Result<()> {
    let pipeline = compile(
        &args.pipeline,
        args.threads,
        args.device,
        args.precision,
        registry,
    )?;
    let device_name = pipeline.file.device().to_string();
    let input = resolve_input(&args.input, args.recursive)?;
    let out_dir = args
        .out
        .unwrap_or_else(|| PathBuf::from("out").join(&pipeline.name));
    let stop = crate::stop_on_ctrl_c("finishing the frames already read")?;
    let options = RunOptions {
        out_dir: out_dir.clone(),
        progress: !args.no_progress,
        stop,
        max_frames: args.max_frames,
        overwrite: args.overwrite,
    };
    let summary = vpipe_pipeline::run(&pipeline, &input, &options)?;
    let secs = summary.elapsed.as_secs_f64();
    let fps = summary.frames as f64 / secs.max(1e-9);
    let cpu = summary.stages.total().as_secs_f64().max(1e-9);
    let wall = secs.max(1e-9);
    if args.json {
        let stages: serde_json::Map<String, serde_json::Value> = summary
            .stages
            .named()
            .iter()
            .zip(summary.busy.named())
            .map(|((n, d), (_, b))| {
                let (d, b) = (d.as_secs_f64(), b.as_secs_f64());
                (
                    n.to_string(),
                    serde_json::json!({
                        "seconds": d,
                        "share": d / cpu,
                        "busy_seconds": b,
                        "busy_share": b / wall,
                    }),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "pipeline": pipeline.name,
                "device": device_name,
                "frames": summary.frames,
                "seconds": secs,
                "fps": fps,
                "threads": device::cpu_threads(),
                "precision": cpu_precision().to_string(),
                "backbone_runs": summary.backbone_runs,
                "failed": summary.failed.len(),
                "skipped_frames": summary.skipped_frames,
                "dropped_frames": summary.dropped_frames,
                "interrupted": summary.interrupted,
                "stages": stages,
            })
        );
    } else {
        eprintln!(
            "{} frame(s) in {secs:.1} s ({fps:.1} fps, {device_name}, {} thread(s)); outputs in {}",
            summary.frames,
            device::cpu_threads(),
            out_dir.display()
        );
        let shares = |times: &vpipe_pipeline::StageTimes, of: f64| {
            times
                .named()
                .iter()
                .map(|(n, d)| format!("{n} {:.0}%", 100.0 * d.as_secs_f64() / of))
                .collect::<Vec<String>>()
                .join(", ")
        };
        eprintln!("CPU time per stage: {}", shares(&summary.stages, cpu));
        eprintln!(
            "busy (of the wall-clock time): {}",
            shares(&summary.busy, wall)
        );
        if summary.skipped_frames > 0 {
            eprintln!(
                "warning: {} corrupt frame(s) skipped",
                summary.skipped_frames
            );
        }
        if summary.dropped_frames > 0 {
            eprintln!(
                "{} live frame(s) dropped to keep up",
                summary.dropped_frames
            );
        }
        if summary.interrupted {
            eprintln!("stopped early: outputs hold the frames processed so far");
        }
    }
    if summary.interrupted {
        return Err(crate::Interrupted.into());
    }
    if !summary.failed.is_empty() {
        let mut names: Vec<&str> = summary.failed.iter().map(|(i, _)| i.as_str()).collect();
        let more = names.len().saturating_sub(5);
        names.truncate(5);
        bail!(
            "{} of the inputs failed (reported above): {}{}",
            summary.failed.len(),
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
