//! The preprocessing presets reproduce each reference pipeline bit for bit on the
//! fixture photo (`image.png`, 512x512).

mod common;

use common::*;
use vpipe::media::{PreprocessPreset, load_image};

fn check(preset: PreprocessPreset, expected: &str) {
    let frame = load_image(&fixture("image.png")).expect("decode");
    let (planar, t) = preset.recipe().apply(&frame).expect("preprocess");
    let (shape, want) = read_f32(&fixture(expected));
    assert_eq!(vec![1, 3, t.input_size.1, t.input_size.0], shape);
    let differing = planar
        .iter()
        .zip(&want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differing, 0,
        "{preset}: {differing} values differ from {expected}"
    );
}

#[test]
fn timm_preset_is_exact() {
    check(PreprocessPreset::Timm, "timm_xxs_input.npy");
}

#[test]
fn cvnets_classification_preset_is_exact() {
    check(PreprocessPreset::CvnetsCls, "cvnets_xxs_cls_input.npy");
}

#[test]
fn huggingface_classification_preset_is_exact() {
    check(PreprocessPreset::HfCls, "hf_xxs_cls_input.npy");
}
