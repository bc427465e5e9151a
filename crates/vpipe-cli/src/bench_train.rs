//! `vpipe bench train`: training speed of one head on its frozen backbone
//! ([`vpipe_train::benchmark`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use vpipe_core::device;

/// Arguments of `vpipe bench train`.
#[derive(Debug, Args)]
pub struct TrainBenchArgs {
    /// The head to train, on its reference checkpoint in weights/reference/ (its own
    /// backbone and input size: ssd 320×320, deeplabv3 512×512, classification 256×256).
    #[arg(long, value_enum)]
    head: BenchHead,
    /// Images per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Compute the backbone's features once and time the head's step alone (as
    /// `cache_features: true` in a training file).
    #[arg(long)]
    cache: bool,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Use this checkpoint instead of the head's reference checkpoint.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The image the batch repeats.
    #[arg(long, default_value = "tests/fixtures/image.png")]
    image: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The heads `vpipe bench train` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchHead {
    /// SSDLite on MobileViT-XXS.
    Ssd,
    /// DeepLabv3 on MobileViT-XXS.
    Deeplabv3,
    /// The classifier of MobileViT-XXS.
    Classification,
}

impl BenchHead {
    fn checkpoint(self) -> PathBuf {
        PathBuf::from("weights/reference").join(match self {
            BenchHead::Ssd => "cvnets_ssd_mobilevit_xxs.pt",
            BenchHead::Deeplabv3 => "cvnets_deeplabv3_mobilevit_xxs.pt",
            BenchHead::Classification => "cvnets_mobilevit_xxs.pt",
        })
    }
}

/// What `vpipe bench train` measured.
#[derive(Debug, Serialize)]
struct TrainBenchReport {
    head: String,
    weights: String,
    batch: usize,
    input_size: [usize; 2],
    cache: bool,
    threads: usize,
    steps: usize,
    /// Batch × steps over the timed steps' seconds.
    images_per_s: f64,
    /// Median of the steps, ms.
    median_step_ms: f64,
    /// Median of the backbone's part of a step (without the cache), ms.
    median_backbone_ms: Option<f64>,
    /// The last step's loss.
    loss: f64,
}

/// The median (of an even count, the mean of the two middle values).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

/// Runs the command.
pub fn run(args: TrainBenchArgs) -> Result<()> {
    if args.steps == 0 || args.batch == 0 {
        bail!("--steps and --batch must be at least 1");
    }
    device::set_cpu_threads(args.threads);
    let device = device::default_device();
    let weights = args.weights.clone().unwrap_or(args.head.checkpoint());
    let image = vpipe_media::load_image(&args.image)
        .with_context(|| format!("reading {}", args.image.display()))?;
    let mut case = vpipe_train::benchmark::BenchCase::new(&weights, &image, args.batch, &device)
        .with_context(|| format!("loading {}", weights.display()))?;
    let cached = if args.cache {
        Some(case.features()?)
    } else {
        None
    };
    let mut steps = Vec::with_capacity(args.steps);
    let mut backbone = Vec::with_capacity(args.steps);
    let mut loss = f64::NAN;
    for i in 0..args.warmup + args.steps {
        let t0 = Instant::now();
        let report = match &cached {
            Some(features) => case.step(features)?,
            None => {
                let features = case.features()?;
                let t1 = Instant::now();
                let report = case.step(&features)?;
                if i >= args.warmup {
                    backbone.push((t1 - t0).as_secs_f64() * 1e3);
                }
                report
            }
        };
        if i >= args.warmup {
            steps.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        loss = report.loss;
    }
    let total_s = steps.iter().sum::<f64>() / 1e3;
    let report = TrainBenchReport {
        head: format!("{:?}", args.head).to_lowercase(),
        weights: weights.display().to_string(),
        batch: args.batch,
        input_size: case.input_size(),
        cache: args.cache,
        threads: device::cpu_threads(),
        steps: args.steps,
        images_per_s: (args.batch * args.steps) as f64 / total_s,
        median_step_ms: median(steps),
        median_backbone_ms: (!backbone.is_empty()).then(|| median(backbone)),
        loss,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "train {} {:?} batch={} cache={} threads={}: {:.2} images/s, median step {:.1} ms{}, loss {:.4} ({} steps)",
            report.head,
            report.input_size,
            report.batch,
            report.cache,
            report.threads,
            report.images_per_s,
            report.median_step_ms,
            report
                .median_backbone_ms
                .map(|b| format!(" (backbone {b:.1} ms)"))
                .unwrap_or_default(),
            report.loss,
            report.steps
        );
    }
    Ok(())
}
