//! A head of your own on vpipe's shared backbone, registered by name without
//! editing vpipe.
//!
//! The head is a few-shot *prototype classifier*: layer-5 features are averaged over
//! the image and L2-normalised, and compared by cosine similarity with one prototype
//! vector per class. Its weights are the prototypes (`prototype.weight`, `[classes,
//! channels]`), handed to it through the same shape-checked parameter store as
//! vpipe's own heads; its post-processing produces vpipe's common classification
//! result. The example enrols one class per image given, registers the head as
//! `prototype`, builds it through the registry and classifies the images again, each
//! also mirrored left-right.
//!
//! `cargo run --release --example custom_head -- weights/reference/cvnets_mobilevit_xxs.pt assets/squirrel_cls.jpg tests/fixtures/image.png`

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use serde_json::{Map, Value};
use vpipe::backbone::layout::{CanonicalTensors, SourceLayout};
use vpipe::backbone::{BackboneError, Features, Params, Result};
use vpipe::core::HostTensor;
use vpipe::core::geometry::InputTransform;
use vpipe::core::result::{HeadOutput, top_k};
use vpipe::heads::model::{RawTensor, to_raw};
use vpipe::heads::{Head, HeadContext, HeadRegistry, LoadedModel, output, row};
use vpipe::media::{Frame, PreprocessPreset, PresetRecipe, load_image};

/// Nearest-prototype classification over pooled layer-5 features.
#[derive(Debug)]
struct PrototypeHead {
    /// `[channels, classes]`, unit columns.
    prototypes: Tensor<2>,
    classes: Vec<String>,
}

/// Average-pools layer 5 and normalises to unit length: `[batch, channels]`.
fn embed(features: &Features) -> Tensor<2> {
    let x = features.last().clone();
    let [b, c, _, _] = x.dims();
    let v = x.mean_dim(3).mean_dim(2).reshape([b, c]);
    let norm = v
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    v / norm
}

impl Head for PrototypeHead {
    fn kind(&self) -> &str {
        "prototype"
    }

    fn levels(&self) -> &[usize] {
        &[5]
    }

    fn forward(&self, features: &Features, _input_size: [usize; 2]) -> Result<Vec<RawTensor>> {
        let similarity = embed(features).matmul(self.prototypes.clone());
        Ok(vec![to_raw("similarity", similarity)?])
    }

    fn postprocess(
        &self,
        raw: &[RawTensor],
        index: usize,
        _g: &InputTransform,
    ) -> Result<HeadOutput> {
        let k = self.classes.len();
        let row = row(output(raw, "similarity")?, index)?;
        // Cosine similarities as logits, sharpened by a temperature of 0.05.
        let logits: Vec<f32> = row.iter().map(|s| s / 0.05).collect();
        Ok(HeadOutput::Classification {
            top_k: top_k(&logits, k.min(3), &self.classes),
        })
    }
}

/// The factory: takes the prototypes (with a shape check) and the class names option.
fn build_prototype(ctx: &mut HeadContext<'_>) -> Result<Box<dyn Head>> {
    let classes: Vec<String> = ctx
        .option("classes")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            BackboneError::Input("prototype head: option 'classes' (a list) is required".into())
        })?
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    let channels = ctx.backbone.vit_stages[2].out_channels;
    let w = ctx
        .params
        .take("prototype.weight", &[classes.len(), channels])?;
    let prototypes: Tensor<2> = ctx.params.upload(w);
    Ok(Box::new(PrototypeHead {
        prototypes: prototypes.transpose(),
        classes,
    }))
}

fn mirrored(f: &Frame) -> Frame {
    let mut data = f.data.clone();
    for row in data.chunks_exact_mut(f.width * 3) {
        let px: Vec<[u8; 3]> = row
            .chunks_exact(3)
            .rev()
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        row.copy_from_slice(&px.concat());
    }
    Frame { data, ..f.clone() }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: custom_head BACKBONE_CHECKPOINT IMAGE IMAGE [IMAGE...]".into());
    }
    let device = vpipe::core::device::default_device();
    let loaded = LoadedModel::load(args[0].as_ref(), &device)?;
    let backbone = loaded.model.backbone();
    let preset = PreprocessPreset::CvnetsCls.recipe();

    // Enrol: one prototype per image, named after the file.
    let frames: Vec<Frame> = args[1..]
        .iter()
        .map(|p| load_image(p.as_ref()))
        .collect::<std::result::Result<_, _>>()?;
    let classes: Vec<String> = args[1..]
        .iter()
        .map(|p| {
            std::path::Path::new(p)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let (batch, _) = preset.batch(&frames.iter().collect::<Vec<_>>(), &device)?;
    let emb = embed(&backbone.forward(batch)?);
    let [k, c] = emb.dims();
    let data = emb
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "prototype.weight".to_string(),
        HostTensor::new(vec![k, c], data),
    );
    let canonical = CanonicalTensors {
        tensors,
        source_names: BTreeMap::new(),
        source: SourceLayout::Cvnets,
    };
    let mut params = Params::new("<enrolled prototypes>", canonical, &device);

    // Register the head type and build it by name, as a pipeline would.
    let mut registry = HeadRegistry::with_builtins();
    registry.register("prototype", build_prototype)?;
    let mut options = Map::new();
    options.insert("classes".into(), Value::from(classes.clone()));
    let head = registry.build(
        "prototype",
        &mut HeadContext::new(&mut params, backbone.config(), &options),
    )?;
    params.finish()?;
    println!("registered heads: {}", registry.names().join(", "));

    // Classify each image and its mirror image.
    for (frame, name) in frames.iter().zip(&classes) {
        for (variant, f) in [("original", frame.clone()), ("mirrored", mirrored(frame))] {
            let (input, geometry) = preset.batch(&[&f], &device)?;
            let [_, _, h, w] = input.dims();
            let raw = head.forward(&backbone.forward(input)?, [h, w])?;
            let out = head.postprocess(&raw, 0, &geometry[0])?;
            println!("{name} ({variant}): {}", serde_json::to_string(&out)?);
        }
    }
    Ok(())
}
