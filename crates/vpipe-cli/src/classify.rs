//! `vpipe classify`: top-k classes of images.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use vpipe_annotate::Annotator;
use vpipe_backbone::layout::CheckpointTask;
use vpipe_core::device::{self, DeviceSpec};
use vpipe_core::result::HeadOutput;
use vpipe_heads::{LoadOptions, LoadedModel};
use vpipe_io::output;
use vpipe_media::{Frame, load_image};
use vpipe_preprocess::{PreprocessPreset, PresetRecipe};

use crate::infer::refuse_overwriting_input;

/// Arguments of `vpipe classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Classification checkpoint (ml-cvnets .pt, timm or Hugging Face .safetensors / .bin,
    /// vpipe weights), or a weights registry name (fetched into the cache on first use).
    #[arg(long)]
    weights: String,
    /// Images to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Preprocessing preset (default: the checkpoint source's own).
    #[arg(long)]
    preset: Option<PreprocessPreset>,
    /// How many classes to report per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write each image with a top-k banner into this folder (same file name).
    #[arg(long)]
    save: Option<PathBuf>,
    /// CPU threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Device: cpu (default), vulkan, vulkan:N, wgpu, cuda or cuda:N (GPU devices need
    /// vpipe built with their cargo feature).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

/// Writes `frame` with the results drawn on it to `dir`, under the input's file name.
fn save_annotated(dir: &Path, input: &Path, frame: Frame, outputs: &[HeadOutput]) -> Result<()> {
    let name = input
        .file_name()
        .with_context(|| format!("{} has no file name", input.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let out = dir.join(name);
    refuse_overwriting_input(&out, &[&input.to_path_buf()])?;
    let mut img = image::RgbImage::from_raw(frame.width as u32, frame.height as u32, frame.data)
        .context("frame buffer does not match its size")?;
    let annotator = Annotator::default();
    annotator.draw_all(&mut img, &outputs.iter().collect::<Vec<_>>());
    let format = image::ImageFormat::from_path(&out).unwrap_or(image::ImageFormat::Png);
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format)
        .with_context(|| format!("cannot encode {}", out.display()))?;
    output::write_atomic(&out, bytes.get_ref())?;
    Ok(())
}

/// Runs the command.
pub fn run(args: ClassifyArgs) -> Result<()> {
    device::set_cpu_threads(args.threads);
    let device = args.device.device()?;
    let weights = vpipe_weights::locate(
        &args.weights,
        Path::new(""),
        &vpipe_weights::CacheConfig::from_env(),
    )?;
    let options = LoadOptions {
        task: Some(CheckpointTask::Classification),
        head_options: serde_json::Map::from_iter([("top_k".into(), args.top_k.into())]),
        ..LoadOptions::default()
    };
    let loaded = LoadedModel::load_with(&weights, &device, &options)?;
    let note = vpipe_weights::weights_note(&weights)?;
    if let Some(note) = note {
        eprintln!(
            "warning: {}: {note}; its classes carry no meaning",
            weights.display()
        );
    }
    let preset = args
        .preset
        .unwrap_or_else(|| vpipe_weights::default_preset(&loaded.layout));
    let recipe = preset.recipe();
    let mut failed = 0;
    for path in &args.images {
        let result = (|| -> Result<Vec<HeadOutput>> {
            let frame = load_image(path)?;
            let (input, geometry) = recipe.batch(&[&frame], &device)?;
            let raw = loaded.model.forward_raw(input)?;
            let outputs = vec![
                loaded
                    .model
                    .head()
                    .postprocess(&raw.tensors, 0, &geometry[0])?,
            ];
            if let Some(dir) = &args.save {
                save_annotated(dir, path, frame, &outputs)?;
            }
            Ok(outputs)
        })()
        .with_context(|| format!("{}", path.display()));
        match result {
            Ok(outputs) => {
                for out in outputs {
                    let HeadOutput::Classification { top_k } = out else {
                        continue;
                    };
                    if args.json {
                        let mut line = serde_json::json!({
                            "image": path.display().to_string(),
                            "preset": preset.name(),
                            "top_k": top_k,
                        });
                        if let Some(note) = note {
                            line["weights_note"] = note.into();
                        }
                        println!("{line}");
                    } else {
                        println!("{}", path.display());
                        for c in top_k {
                            println!(
                                "  {:>6.2}%  {:>4}  {}",
                                c.score * 100.0,
                                c.class_id,
                                c.label
                            );
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} image(s) failed", args.images.len());
    }
    Ok(())
}
