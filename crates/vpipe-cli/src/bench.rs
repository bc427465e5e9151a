//! `vpipe bench`: latency and throughput of the networks.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use serde::Serialize;
use vpipe_backbone::MobileVitSize;
use vpipe_backbone::kernels::{Kernels, set_cpu_kernels};
use vpipe_backbone::layout::CheckpointTask;
use vpipe_backbone::{Precision, set_cpu_precision};
use vpipe_core::device::{self, DeviceSpec};
use vpipe_heads::{LoadedModel, Model};

/// Arguments of `vpipe bench`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// What else to measure (without one: inference).
    #[command(subcommand)]
    command: Option<BenchCommand>,
    /// Architecture: mobilevit_xxs, mobilevit_xs or mobilevit_s (ignored with --weights).
    #[arg(long, default_value = "mobilevit_s")]
    arch: MobileVitSize,
    /// Network: classification, detection (SSDLite) or segmentation (DeepLabv3, output
    /// stride 16). Ignored with --weights.
    #[arg(long, value_enum, default_value = "classification")]
    task: BenchTask,
    /// Input height and width.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Device: cpu (default), vulkan, vulkan:N, wgpu, cuda or cuda:N (GPU devices need
    /// vpipe built with their cargo feature).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Kernels on the CPU: fused (vpipe's, the default) or generic (burn's tensor ops,
    /// the path GPU backends take). Other devices always run burn's ops.
    #[arg(long, default_value = "fused")]
    kernels: Kernels,
    /// Number format of the fused kernels' matrix products: fp32 (the default), bf16
    /// (needs AVX512_BF16) or int8 (needs AVX512_VNNI as well); else the next one
    /// that runs, with a warning.
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    /// Untimed runs first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 30)]
    iters: usize,
    /// Use this checkpoint instead of synthetic weights of --arch.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Measurements other than inference.
#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Training speed of one head on its frozen backbone (images/s).
    Train(crate::bench_train::TrainBenchArgs),
}

/// The network `vpipe bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchTask {
    /// Backbone and classification head.
    Classification,
    /// Backbone and SSDLite head.
    Detection,
    /// Backbone at output stride 16 and DeepLabv3 head.
    Segmentation,
}

impl BenchTask {
    fn task(self) -> CheckpointTask {
        match self {
            BenchTask::Classification => CheckpointTask::Classification,
            BenchTask::Detection => CheckpointTask::Detection,
            BenchTask::Segmentation => CheckpointTask::Segmentation,
        }
    }
}

/// What `vpipe bench` measured.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Architecture measured.
    pub arch: String,
    /// Task.
    pub task: String,
    /// Input `[batch, 3, size, size]`.
    pub input: [usize; 4],
    /// Device the network ran on (`cpu`, `vulkan`, `cuda:0`, ...).
    pub device: String,
    /// Kernels the layers ran on (`fused` or `generic`).
    pub kernels: String,
    /// Number format of the matrix products (`fp32`, `bf16` or `int8`): the one that ran,
    /// after any fallback.
    pub precision: String,
    /// The instructions that ran the matrix products on the CPU (`fma` for fp32;
    /// `amx` or `avx512_bf16` for bf16; `avx512_vnni` for int8); empty on a GPU.
    pub products: String,
    /// Threads the CPU backend used.
    pub threads: usize,
    /// Timed runs.
    pub iters: usize,
    /// Median latency of one batch, ms.
    pub median_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// Images per second at the median latency.
    pub images_per_s: f64,
}

/// Runs the command.
pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(BenchCommand::Train(train)) = args.command {
        return crate::bench_train::run(train);
    }
    if args.iters == 0 || args.batch == 0 {
        bail!("--iters and --batch must be at least 1");
    }
    if args.size < 32 {
        bail!("--size must be at least 32");
    }
    device::set_cpu_threads(args.threads);
    let device = args.device.device()?;
    set_cpu_kernels(args.kernels);
    let kernels = Kernels::for_device(&device);
    if args.precision != Precision::Fp32 && kernels != Kernels::Fused {
        bail!(
            "--precision {} runs on the CPU's fused kernels only (--device cpu --kernels fused)",
            args.precision
        );
    }
    let precision = set_cpu_precision(args.precision);
    let (model, arch, task) = match &args.weights {
        Some(path) => {
            let l = LoadedModel::load(path, &device)?;
            (l.model, l.layout.size, l.layout.task.to_string())
        }
        None => (
            Model::synthetic(args.task.task(), args.arch, &device)?,
            args.arch,
            format!("{:?}", args.task).to_lowercase(),
        ),
    };
    let shape = [args.batch, 3, args.size, args.size];
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let input = Tensor::<4>::from_data(TensorData::new(data, shape), &device);
    // The input is uploaded once, outside the timed runs.
    device.sync()?;
    let run_once = || -> Result<f64> {
        let t0 = Instant::now();
        // Reading the outputs back waits for the whole computation; the sync makes
        // sure nothing queued on an asynchronous (GPU) device is left running.
        let out = model.forward_raw(input.clone())?;
        device.sync()?;
        std::hint::black_box(&out);
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..args.warmup {
        run_once()?;
    }
    let mut times = (0..args.iters)
        .map(|_| run_once())
        .collect::<Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let median = pct(0.5);
    let report = BenchReport {
        arch: arch.arch_name().to_string(),
        task,
        input: shape,
        device: args.device.to_string(),
        kernels: kernels.to_string(),
        precision: precision.to_string(),
        products: match kernels {
            Kernels::Fused => precision.product_unit().to_string(),
            Kernels::Generic => String::new(),
        },
        threads: device::cpu_threads(),
        iters: args.iters,
        median_ms: median,
        p90_ms: pct(0.9),
        mean_ms: times.iter().sum::<f64>() / times.len() as f64,
        images_per_s: args.batch as f64 * 1e3 / median,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} {} {:?} device={} kernels={} precision={} products={} threads={}: median {:.2} ms, p90 {:.2} ms, mean {:.2} ms, {:.1} images/s ({} runs)",
            report.arch,
            report.task,
            report.input,
            report.device,
            report.kernels,
            report.precision,
            report.products,
            report.threads,
            report.median_ms,
            report.p90_ms,
            report.mean_ms,
            report.images_per_s,
            report.iters
        );
    }
    Ok(())
}
