//! Library use: classify an image with any MobileViT classification checkpoint.
//!
//! `cargo run --release --example classify -- weights/reference/cvnets_mobilevit_xxs.pt assets/squirrel_cls.jpg`

use vpipe::core::device::default_device;
use vpipe::heads::{LoadedModel, Model};
use vpipe::media::{PreprocessPreset, PresetRecipe, load_image};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(weights), Some(image)) = (args.next(), args.next()) else {
        return Err("usage: classify WEIGHTS IMAGE".into());
    };
    let device = default_device();
    let loaded = LoadedModel::load(weights.as_ref(), &device)?;
    let Model::Classifier { backbone, head } = &loaded.model else {
        return Err("not a classification checkpoint".into());
    };
    let frame = load_image(image.as_ref())?;
    let (input, _) = PreprocessPreset::CvnetsCls
        .recipe()
        .batch(&[&frame], &device)?;
    let features = backbone.forward(input)?; // feature maps at strides 2, 4, 8, 16, 32
    let logits = head
        .forward(&features)
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    for out in head.postprocess(&logits, 5) {
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(())
}
