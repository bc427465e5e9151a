//! `vpipe train`: heads trained on a frozen backbone, from a training file.

use anyhow::Result;
use std::path::PathBuf;
use vpipe_core::device;
use vpipe_heads::HeadRegistry;
use vpipe_train::{RunOptions, TrainConfig};

use crate::Interrupted;

/// Arguments of `vpipe train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The training file (YAML: backbone, data, heads, train; see the README).
    pub config: PathBuf,
    /// Output folder: model.safetensors, pipeline.yaml, losses.csv, checkpoint/.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Continue from the checkpoint in the output folder.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Replace an earlier run's results in the output folder.
    #[arg(long)]
    pub overwrite: bool,
    /// Learn every head from its `teacher` (unlabelled images or video suffice).
    #[arg(long)]
    pub distill: bool,
    /// Steps, instead of the file's `train.steps`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// Images per step, instead of the file's `train.batch_size`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// CPU threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `vpipe train`.
pub fn run(args: TrainArgs, registry: &HeadRegistry) -> Result<()> {
    if let Some(t) = args.threads {
        device::set_cpu_threads(t);
    }
    let mut config = TrainConfig::read(&args.config)?;
    if let Some(n) = args.steps {
        config.train.steps = n;
    }
    if let Some(n) = args.batch_size {
        config.train.batch_size = n as usize;
    }
    let stop = crate::stop_on_ctrl_c("finishing this step and writing a checkpoint")?;
    let options = RunOptions {
        out_dir: args.out.clone(),
        resume: args.resume,
        overwrite: args.overwrite,
        distill: args.distill,
        progress: !args.no_progress,
        stop,
    };
    let summary = vpipe_train::train(&config, registry, &options)?;
    if !summary.report.is_empty() {
        eprintln!("data: {}", summary.report);
    }
    eprintln!(
        "{} step(s) ({} to {}), {:.1} images/s on {} thread(s), {} backbone pass(es) in images; loss {:.4} -> {:.4} (means of the first and last tenth of the steps)",
        summary.steps_done - summary.first_step,
        summary.first_step,
        summary.steps_done,
        summary.images_per_second,
        device::cpu_threads(),
        summary.backbone_images,
        summary.first_loss,
        summary.last_loss,
    );
    if summary.stopped {
        eprintln!(
            "stopped; checkpoint in {} (`vpipe train {} --out {} --resume` continues)",
            summary.model.display(),
            args.config.display(),
            args.out.display()
        );
        return Err(Interrupted.into());
    }
    eprintln!(
        "model: {}; run it with `vpipe run {} --input ...`",
        summary.model.display(),
        args.out.join("pipeline.yaml").display()
    );
    Ok(())
}
