//! The preprocessing presets against their sources.
//!
//! - Every preset on every image of `tests/fixtures/preprocess/inputs` (odd sizes,
//!   up- and downscaling, a 300x7 strip, one pixel, grey, RGBA, 16-bit colour and
//!   grey PNGs) equals the reference that `scripts/make_reference.py preprocess`
//!   made with the source's own code: opencv-python for ml-cvnets v0.1, timm's
//!   evaluation transform, transformers' `MobileViTImageProcessor` with the Hub
//!   configs. The references are stored as 8-bit PNG planes in network channel
//!   order with the scaling back to floats (`MANIFEST.json`), which the script
//!   checked to give its float tensors exactly. One case is left out on purpose,
//!   with its reason in the manifest: 16-bit grey through the Pillow-based presets
//!   (Pillow clamps such samples at 255; vpipe keeps their high byte, as OpenCV).
//! - The fixture photo's inputs of the parity tests, bit for bit.

mod common;

use common::*;
use vpipe::media::load_image;
use vpipe::preprocess::{Preprocess, PreprocessPreset, PresetRecipe};

/// Largest absolute difference between `recipe`'s input for `image` and the
/// reference planes, after checking the shapes.
fn diff_from_reference(
    recipe: &Preprocess,
    image: &std::path::Path,
    reference: &std::path::Path,
    shape: &[usize],
    scaling: &str,
) -> f32 {
    let frame = load_image(image).expect("decode input");
    let (planar, t) = recipe.apply(&frame).expect("preprocess");
    assert_eq!(shape, [1, 3, t.input_size.1, t.input_size.0]);
    let planes = image::open(reference).expect("reference").into_rgb8();
    assert_eq!(
        (planes.width() as usize, planes.height() as usize),
        t.input_size
    );
    let n = t.input_size.0 * t.input_size.1;
    let mut want = vec![0f32; 3 * n];
    for (i, p) in planes.pixels().enumerate() {
        for c in 0..3 {
            let v = f32::from(p[c]);
            want[c * n + i] = match scaling {
                "divide" => v / 255.0,
                "multiply" => v * (1.0 / 255.0),
                other => panic!("unknown scaling {other}"),
            };
        }
    }
    max_abs_diff(&planar, &want)
}

#[test]
fn every_preset_equals_its_source_on_varied_images() {
    let dir = fixture("preprocess");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("MANIFEST.json")).expect("manifest"))
            .expect("manifest JSON");
    let inputs = manifest["inputs"].as_object().expect("inputs");
    let expected = manifest["expected"].as_object().expect("expected");
    let not_compared = manifest["not_compared"].as_object().expect("not_compared");
    assert_eq!(
        expected.len() + not_compared.len(),
        PreprocessPreset::ALL.len() * inputs.len()
    );
    let mut worst = 0f32;
    let mut failures = Vec::new();
    for preset in PreprocessPreset::ALL {
        for (name, input) in inputs {
            let key = format!("{preset}/{name}");
            if not_compared.contains_key(&key) {
                continue;
            }
            let case = &expected[&key];
            let shape: Vec<usize> = case["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|v| v.as_u64().expect("dimension") as usize)
                .collect();
            let d = diff_from_reference(
                &preset.recipe(),
                &dir.join(input["file"].as_str().expect("file")),
                &dir.join(case["file"].as_str().expect("file")),
                &shape,
                case["scaling"].as_str().expect("scaling"),
            );
            if d > 1e-6 {
                failures.push(format!("{preset} on {name}: max |diff| {d:e} > 1e-6"));
            }
            worst = worst.max(d);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("worst max |diff| over every preset and image: {worst:e}");
}

fn check_fixture(recipe: Preprocess, expected: &str) {
    let frame = load_image(&fixture("image.png")).expect("decode");
    let (planar, t) = recipe.apply(&frame).expect("preprocess");
    let (shape, want) = read_f32(&fixture(expected));
    assert_eq!(vec![1, 3, t.input_size.1, t.input_size.0], shape);
    assert_eq!(planar.len(), want.len());
    let differing = planar
        .iter()
        .zip(&want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differing, 0, "{differing} values differ from {expected}");
}

#[test]
fn timm_preset_gives_the_fixture_input() {
    check_fixture(PreprocessPreset::Timm.recipe(), "timm_xxs_input.npy");
}

#[test]
fn huggingface_classification_preset_gives_the_fixture_input() {
    check_fixture(PreprocessPreset::HfCls.recipe(), "hf_xxs_cls_input.npy");
}

#[test]
fn pillow_bilinear_gives_the_cvnets_fixture_input() {
    check_fixture(
        cvnets_fixture_recipe(PreprocessPreset::CvnetsCls),
        "cvnets_xxs_cls_input.npy",
    );
}
