//! Parity of MobileViT-XXS classification with the reference implementations
//! (timm, Hugging Face transformers, Apple ml-cvnets), on the reference fixtures:
//! random-initialised weights, preprocessed inputs and expected outputs made by
//! `scripts/make_reference.py` (see tests/fixtures/README.md).

mod common;

use common::*;
use vpipe::backbone::layout::CheckpointTask;
use vpipe::backbone::{MobileVitSize, SourceLayout};
use vpipe::core::geometry::InputTransform;
use vpipe::core::result::HeadOutput;
use vpipe::heads::{ClassificationHead, LoadedModel};

/// Logits must match within this absolute tolerance.
const LOGIT_TOL: f32 = 1e-4;
/// Intermediate features must match within this absolute tolerance.
const FEATURE_TOL: f32 = 1e-3;

fn check_logits(
    weights_file: &str,
    input: &str,
    expected: &str,
    source: SourceLayout,
    top5: [usize; 5],
) {
    let device = test_device();
    let loaded = LoadedModel::load(&weights(weights_file), &device).expect("load");
    assert_eq!(loaded.layout.source, source);
    assert_eq!(loaded.layout.size, MobileVitSize::Xxs);
    assert_eq!(loaded.layout.task, CheckpointTask::Classification);
    let x = input_tensor(input);
    let [_, _, h, w] = x.dims();
    let out = loaded.model.forward_raw(x).expect("forward");
    let logits = out.get("logits").expect("logits output");
    assert_eq!(logits.shape, vec![1, 1000]);
    let (shape, want) = read_f32(&fixture(expected));
    assert_eq!(shape, logits.shape);
    let diff = max_abs_diff(&logits.data, &want);
    eprintln!("{weights_file}: logits max |diff| {diff:e}");
    assert!(
        diff <= LOGIT_TOL,
        "{weights_file}: max |diff| {diff} > {LOGIT_TOL}"
    );
    // The head's post-processing (its default top_k is 5), on the network input.
    let output = loaded
        .model
        .head()
        .postprocess(&out.tensors, 0, &InputTransform::identity(w, h))
        .expect("postprocess");
    let HeadOutput::Classification { top_k } = &output else {
        panic!("not a classification output");
    };
    let ids: Vec<usize> = top_k.iter().map(|c| c.class_id).collect();
    assert_eq!(
        ids, top5,
        "{weights_file}: top-5 differs from the reference"
    );
    assert!(!top_k[0].label.is_empty() && !top_k[0].label.starts_with("class_"));
}

#[test]
fn timm_safetensors_logits_match() {
    check_logits(
        "timm_mobilevit_xxs.safetensors",
        "timm_xxs_input.npy",
        "timm_xxs_logits.npy",
        SourceLayout::Timm,
        [783, 705, 711, 110, 441],
    );
}

#[test]
fn huggingface_safetensors_logits_match() {
    check_logits(
        "hf_mobilevit_xxs_cls.safetensors",
        "hf_xxs_cls_input.npy",
        "hf_xxs_cls_logits.npy",
        SourceLayout::HuggingFace,
        [530, 332, 284, 546, 603],
    );
}

#[test]
fn huggingface_pytorch_model_bin_logits_match() {
    check_logits(
        "hf_mobilevit_xxs_cls.bin",
        "hf_xxs_cls_input.npy",
        "hf_xxs_cls_logits.npy",
        SourceLayout::HuggingFace,
        [530, 332, 284, 546, 603],
    );
}

#[test]
fn cvnets_pt_logits_match() {
    check_logits(
        "cvnets_mobilevit_xxs.pt",
        "cvnets_xxs_cls_input.npy",
        "cvnets_xxs_cls_logits.npy",
        SourceLayout::Cvnets,
        [618, 449, 929, 736, 255],
    );
}

#[test]
fn cvnets_intermediate_features_match() {
    let device = test_device();
    let path = weights("cvnets_mobilevit_xxs.pt");
    let loaded = LoadedModel::load(&path, &device).expect("load");
    let backbone = loaded.model.backbone();
    // The head's own type, for its 1x1 expansion (an intermediate feature).
    let file = vpipe::io::TensorFile::read(&path).expect("read");
    let canonical = vpipe::backbone::layout::to_canonical(&file).expect("canonical");
    let mut params = vpipe::backbone::Params::new("cvnets", canonical, &device);
    let head = ClassificationHead::load(&mut params, backbone.config()).expect("head");
    let features = backbone
        .forward(input_tensor("cvnets_xxs_cls_input.npy"))
        .expect("forward");
    let mut checks: Vec<(String, burn::tensor::Tensor<4>)> = (1..=5)
        .map(|n| {
            (
                format!("layer_{n}"),
                features.layer(n).expect("level").clone(),
            )
        })
        .collect();
    checks.push(("conv_1x1_exp".into(), head.expanded(&features)));
    for (name, t) in checks {
        let dims = t.dims().to_vec();
        let got = t.into_data().try_to_vec::<f32>().expect("f32");
        let (shape, want) = read_f32(&fixture(&format!("cvnets_xxs_cls_feat_{name}.npy")));
        assert_eq!(dims, shape, "{name}: shape");
        let diff = max_abs_diff(&got, &want);
        eprintln!("cvnets {name}: max |diff| {diff:e}");
        assert!(
            diff <= FEATURE_TOL,
            "{name}: max |diff| {diff} > {FEATURE_TOL}"
        );
    }
}

#[test]
fn cvnets_safetensors_copy_loads_like_the_pt() {
    // The same state dict as safetensors (written here from the .pt) gives the same logits.
    let file = vpipe::io::TensorFile::read(&weights("cvnets_mobilevit_xxs.pt")).expect("read");
    let dir_tmp = temp_dir("cvnets-st");
    let dir = dir_tmp.path();
    let st = dir.join("cvnets_mobilevit_xxs.safetensors");
    write_safetensors(&st, &file.tensors);
    let device = test_device();
    let a = LoadedModel::load(&st, &device).expect("load safetensors");
    let b = LoadedModel::load(&weights("cvnets_mobilevit_xxs.pt"), &device).expect("load pt");
    let x = input_tensor("cvnets_xxs_cls_input.npy");
    let la = a.model.forward_raw(x.clone()).expect("fwd");
    let lb = b.model.forward_raw(x).expect("fwd");
    assert_eq!(la, lb);
}

#[test]
fn parity_holds_through_burns_generic_ops() {
    rerun_through_generic_kernels("parity_holds_through_burns_generic_ops");
}
