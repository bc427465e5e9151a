//! `vpipe infer`: raw forward on a preprocessed tensor.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use vpipe_core::{device, npy};
use vpipe_heads::LoadedModel;

/// Arguments of `vpipe infer`.
#[derive(Debug, Args)]
pub struct InferArgs {
    /// Checkpoint file (ml-cvnets .pt, timm or Hugging Face .safetensors / .bin).
    #[arg(long)]
    weights: PathBuf,
    /// Preprocessed input: float32 .npy of shape (N, 3, H, W).
    #[arg(long)]
    tensor: PathBuf,
    /// Folder for the outputs (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// CPU threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Reads an NCHW float32 tensor from an .npy file, checking its shape.
pub fn read_input(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let arr = npy::read(path)?;
    let what = path.display().to_string();
    let data = arr.to_f32(&what)?;
    if arr.shape.len() != 4 || arr.shape[1] != 3 || arr.shape[0] == 0 {
        bail!(
            "{what}: shape {:?} is not a batch of 3-channel images (N, 3, H, W)",
            arr.shape
        );
    }
    Ok((arr.shape, data))
}

/// Runs the command.
pub fn run(args: InferArgs) -> Result<()> {
    device::set_cpu_threads(args.threads);
    let device = device::default_device();
    let (shape, data) = read_input(&args.tensor)?;
    let loaded = LoadedModel::load(&args.weights, &device)?;
    let l = loaded.layout;
    println!("checkpoint: {} layout, {} {}", l.source, l.size, l.task);
    let input = Tensor::<4>::from_data(
        TensorData::new(data, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let output = loaded.model.forward_raw(input)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    let inputs = [&args.weights, &args.tensor];
    for t in &output.tensors {
        let path = args.out.join(format!("{}.npy", t.name));
        refuse_overwriting_input(&path, &inputs)?;
        npy::write_atomic(&path, &npy::encode_f32(&t.shape, &t.data))?;
        println!("wrote {} {:?}", path.display(), t.shape);
    }
    Ok(())
}

/// Fails if `out` is one of `inputs`.
pub fn refuse_overwriting_input(out: &Path, inputs: &[&PathBuf]) -> Result<()> {
    let Ok(out_c) = out.canonicalize() else {
        return Ok(()); // does not exist yet
    };
    for i in inputs {
        if i.canonicalize().is_ok_and(|c| c == out_c) {
            bail!("refusing to overwrite the input file {}", i.display());
        }
    }
    Ok(())
}
