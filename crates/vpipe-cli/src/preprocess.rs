//! `vpipe preprocess`: writes the network input a preset makes of each image, so
//! that vpipe's preprocessing can be compared with a user's own Python pipeline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use vpipe_io::{npy, output};
use vpipe_media::load_image;
use vpipe_preprocess::{PreprocessPreset, PresetRecipe};

use crate::infer::refuse_overwriting_input;

/// Arguments of `vpipe preprocess`.
#[derive(Debug, Args)]
pub struct PreprocessArgs {
    /// Preprocessing preset: cvnets-cls, cvnets-ssd, cvnets-seg, timm, hf-cls or hf-seg.
    #[arg(long)]
    preset: PreprocessPreset,
    /// Folder to write `<stem>.npy` into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Images to preprocess.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Where each image's tensor goes: `out/<stem>.npy`. Two images with the same stem
/// would write the same file, which is refused before anything is written.
fn targets(out: &Path, images: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut seen: HashMap<PathBuf, &Path> = HashMap::new();
    images
        .iter()
        .map(|image| {
            let stem = image
                .file_stem()
                .with_context(|| format!("{} has no file name", image.display()))?;
            let mut name = stem.to_os_string();
            name.push(".npy");
            let target = out.join(name);
            if let Some(first) = seen.insert(target.clone(), image) {
                bail!(
                    "{} and {} would both be written to {}; preprocess them into separate folders",
                    first.display(),
                    image.display(),
                    target.display()
                );
            }
            Ok(target)
        })
        .collect()
}

/// Runs the command: each image in turn, its `(1, 3, H, W)` float32 input written
/// atomically. Stops at the first image that cannot be read or preprocessed.
pub fn run(args: PreprocessArgs) -> Result<()> {
    let targets = targets(&args.out, &args.images)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let recipe = args.preset.recipe();
    let inputs: Vec<&PathBuf> = args.images.iter().collect();
    for (image, target) in args.images.iter().zip(&targets) {
        let frame = load_image(image)?;
        let (planar, t) = recipe
            .apply(&frame)
            .with_context(|| format!("cannot preprocess {}", image.display()))?;
        let (w, h) = t.input_size;
        refuse_overwriting_input(target, &inputs)?;
        output::write_atomic(target, &npy::encode_f32(&[1, 3, h, w], &planar))?;
        println!(
            "{} -> {} (1x3x{h}x{w}, {})",
            image.display(),
            target.display(),
            args.preset
        );
    }
    Ok(())
}
