//! Importing every reference checkpoint into vpipe's own format and loading the
//! result through the normal loader gives the original's outputs.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use vpipe_core::device::default_device;
use vpipe_heads::LoadedModel;
use vpipe_weights::{ImportOptions, WeightsMetadata, import, weights_note};

const REFERENCE: [&str; 7] = [
    "cvnets_mobilevit_xxs.pt",
    "cvnets_ssd_mobilevit_xxs.pt",
    "cvnets_deeplabv3_mobilevit_xxs.pt",
    "timm_mobilevit_xxs.safetensors",
    "hf_mobilevit_xxs_cls.safetensors",
    "hf_mobilevit_xxs_cls.bin",
    "hf_deeplabv3_mobilevit_xxs.safetensors",
];

/// f16 storage: max |difference| of any output, relative to the largest |value|.
const F16_RELATIVE_TOLERANCE: f32 = 2e-2;

fn reference(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../weights/reference")
        .join(name)
}

fn input() -> Tensor<4> {
    let (h, w) = (96, 128);
    let data: Vec<f32> = (0..3 * h * w)
        .map(|i| ((i * 7919) % 1013) as f32 / 1013.0)
        .collect();
    Tensor::from_data(TensorData::new(data, [1, 3, h, w]), &default_device())
}

/// Per output: (name, max |a - b|, max |a|).
fn compare(a: &Path, b: &Path) -> Vec<(String, f32, f32)> {
    let device = default_device();
    let ma = LoadedModel::load(a, &device).unwrap();
    let mb = LoadedModel::load(b, &device).unwrap();
    assert_eq!(ma.layout, mb.layout, "{}", a.display());
    let oa = ma.model.forward_raw(input()).unwrap();
    let ob = mb.model.forward_raw(input()).unwrap();
    oa.tensors
        .iter()
        .filter(|t| t.name != "mask")
        .map(|t| {
            let u = ob.get(&t.name).unwrap();
            assert_eq!(t.shape, u.shape);
            let diff = vpipe_io::compare::max_abs_diff(&u.data, &t.data)
                .unwrap_or_else(|e| panic!("{}: {e}", t.name));
            // Finite, as the comparison above checked.
            let max = t.data.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
            (t.name.clone(), diff, max)
        })
        .collect()
}

#[test]
fn imported_reference_weights_give_the_original_outputs() {
    let dir = std::env::temp_dir().join(format!("vpipe-import-{}", std::process::id()));
    for name in REFERENCE {
        let src = reference(name);
        for f16 in [false, true] {
            let out = dir.join(format!(
                "{name}.{}.safetensors",
                if f16 { "f16" } else { "f32" }
            ));
            let meta = import(&src, &out, &ImportOptions { f16, entry: None }).unwrap();
            assert_eq!(WeightsMetadata::read(&out).unwrap().as_ref(), Some(&meta));
            assert!(
                meta.random_init,
                "{name} is a random-initialised reference file"
            );
            assert!(weights_note(&out).unwrap().is_some());
            for (output, diff, max) in compare(&src, &out) {
                eprintln!("{name} f16={f16} {output}: max |diff| {diff:e} (max |value| {max:e})");
                if f16 {
                    assert!(
                        diff <= F16_RELATIVE_TOLERANCE * max.max(1.0),
                        "{name} f16 {output}: {diff} vs {max}"
                    );
                } else {
                    assert!(diff <= 1e-6, "{name} {output}: {diff}");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hugging_face_segmentation_keeps_its_upsampling_after_import() {
    let dir = std::env::temp_dir().join(format!("vpipe-import-hf-{}", std::process::id()));
    let out = dir.join("hf_seg.safetensors");
    let meta = import(
        &reference("hf_deeplabv3_mobilevit_xxs.safetensors"),
        &out,
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(meta.source, vpipe_backbone::SourceLayout::HuggingFace);
    assert_eq!(meta.preprocess.name(), "hf-seg");
    let loaded = LoadedModel::load(&out, &default_device()).unwrap();
    assert_eq!(
        loaded.layout.source,
        vpipe_backbone::SourceLayout::HuggingFace
    );
    let _ = std::fs::remove_dir_all(&dir);
}
