//! `vpipe infer`: raw forward on a preprocessed tensor.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use vpipe_backbone::layout::CheckpointTask;
use vpipe_core::device::{self, DeviceSpec};
use vpipe_core::geometry::InputTransform;
use vpipe_heads::model::ModelOutput;
use vpipe_heads::{Head, LoadOptions, LoadedModel};
use vpipe_io::{npy, output};

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
    /// Output stride of a segmentation model: 16 (default, as released) or 8.
    #[arg(long)]
    output_stride: Option<usize>,
    /// CPU threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Device: cpu (default), vulkan, vulkan:N, wgpu, cuda or cuda:N (GPU devices need
    /// vpipe built with their cargo feature).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
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
    let device = args.device.device()?;
    let (shape, data) = read_input(&args.tensor)?;
    let options = LoadOptions {
        output_stride: args.output_stride,
        ..LoadOptions::default()
    };
    let loaded = LoadedModel::load_with(&args.weights, &device, &options)?;
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
    let write = |name: &str, bytes: Vec<u8>| -> Result<()> {
        let path = args.out.join(name);
        refuse_overwriting_input(&path, &inputs)?;
        output::write_atomic(&path, &bytes)?;
        println!("wrote {}", path.display());
        Ok(())
    };
    for t in &output.tensors {
        if t.name == "mask" {
            // Class indices: uint8 (N, H, W).
            let shape = [t.shape[0], t.shape[2], t.shape[3]];
            let data: Vec<u8> = t.data.iter().map(|&v| v as u8).collect();
            write("mask.npy", npy::encode_u8(&shape, &data))?;
        } else {
            write(
                &format!("{}.npy", t.name),
                npy::encode_f32(&t.shape, &t.data),
            )?;
        }
    }
    if l.task == CheckpointTask::Detection {
        let dets = detections_json(loaded.model.head(), &output, (shape[3], shape[2]))?;
        write("detections.json", serde_json::to_vec_pretty(&dets)?)?;
    }
    Ok(())
}

/// Post-processed detections of every image of the batch, boxes in input pixels
/// (the head's own post-processing with the identity geometry).
fn detections_json(
    head: &dyn Head,
    output: &ModelOutput,
    input_size: (usize, usize),
) -> Result<serde_json::Value> {
    let n = output
        .get("conf_logits")
        .context("the detector produced no 'conf_logits'")?
        .shape[0];
    let geometry = InputTransform::identity(input_size.0, input_size.1);
    let images = (0..n)
        .map(|i| {
            let out = head.postprocess(&output.tensors, i, &geometry)?;
            Ok(serde_json::json!({ "image": i, "boxes": "input_pixels_x1y1x2y2", "result": out }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(serde_json::Value::Array(images))
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
