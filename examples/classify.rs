//! Library use: classify an image with any MobileViT classification checkpoint.
//!
//! `cargo run --release --example classify -- weights/reference/cvnets_mobilevit_xxs.pt assets/squirrel_cls.jpg`

use vpipe::backbone::layout::CheckpointTask;
use vpipe::core::device::default_device;
use vpipe::heads::{LoadOptions, LoadedModel};
use vpipe::media::load_image;
use vpipe::preprocess::{PreprocessPreset, PresetRecipe};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(weights), Some(image)) = (args.next(), args.next()) else {
        return Err("usage: classify WEIGHTS IMAGE".into());
    };
    let device = default_device();
    let options = LoadOptions {
        task: Some(CheckpointTask::Classification),
        ..LoadOptions::default()
    };
    let loaded = LoadedModel::load_with(weights.as_ref(), &device, &options)?;
    let frame = load_image(image.as_ref())?;
    let (input, geometry) = PreprocessPreset::CvnetsCls
        .recipe()
        .batch(&[&frame], &device)?;
    // The backbone (feature maps at strides 2, 4, 8, 16, 32), then the head: `logits`.
    let raw = loaded.model.forward_raw(input)?;
    // The head's post-processing: the top 5 classes of image 0.
    let top5 = loaded
        .model
        .head()
        .postprocess(&raw.tensors, 0, &geometry[0])?;
    println!("{}", serde_json::to_string(&top5)?);
    Ok(())
}
