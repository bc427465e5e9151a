//! Bad checkpoints give a clear error naming the problem, never a panic.

mod common;

use std::collections::BTreeMap;

use common::*;
use vpipe::core::HostTensor;
use vpipe::heads::LoadedModel;
use vpipe::io::TensorFile;

fn load_err(path: &std::path::Path) -> String {
    let device = vpipe::core::device::default_device();
    match LoadedModel::load(path, &device) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

fn timm_tensors() -> BTreeMap<String, HostTensor> {
    TensorFile::read(&weights("timm_mobilevit_xxs.safetensors"))
        .expect("read")
        .tensors
}

#[test]
fn truncated_files_are_reported() {
    let dir_tmp = temp_dir("truncated");
    let dir = dir_tmp.path();
    for name in ["cvnets_mobilevit_xxs.pt", "timm_mobilevit_xxs.safetensors"] {
        let bytes = std::fs::read(weights(name)).expect("read");
        for keep in [bytes.len() / 2, bytes.len() - 100, 20] {
            let p = dir.join(format!("{keep}-{name}"));
            std::fs::write(&p, &bytes[..keep]).expect("write");
            let e = load_err(&p);
            assert!(e.contains(&p.display().to_string()), "{e}");
        }
    }
}

#[test]
fn files_that_are_not_checkpoints_are_reported() {
    let e = load_err(&fixture("image.png"));
    assert!(e.contains("not a checkpoint"), "{e}");
    let dir_tmp = temp_dir("zero-bytes");
    let dir = dir_tmp.path();
    let p = dir.join("nothing.pt");
    std::fs::write(&p, b"").expect("write");
    let e = load_err(&p);
    assert!(e.ends_with("nothing.pt: the file is empty"), "{e}");
    let e = load_err(&dir.join("missing.pt"));
    assert!(e.contains("missing.pt"), "{e}");
}

#[test]
fn another_architecture_is_reported() {
    let dir_tmp = temp_dir("resnet");
    let dir = dir_tmp.path();
    let mut t = BTreeMap::new();
    t.insert(
        "conv1.weight".to_string(),
        HostTensor::new(vec![64, 3, 7, 7], vec![0.0; 64 * 147]),
    );
    t.insert(
        "fc.weight".to_string(),
        HostTensor::new(vec![10, 64], vec![0.0; 640]),
    );
    let p = dir.join("resnet.safetensors");
    write_safetensors(&p, &t);
    let e = load_err(&p);
    assert!(e.contains("not a MobileViT v1 checkpoint"), "{e}");
}

#[test]
fn wrong_missing_and_unexpected_tensors_are_named() {
    let dir_tmp = temp_dir("tensors");
    let dir = dir_tmp.path();
    let key = "stages.2.1.transformer.0.attn.qkv.weight";

    let mut wrong = timm_tensors();
    wrong.insert(
        key.to_string(),
        HostTensor::new(vec![191, 64], vec![0.0; 191 * 64]),
    );
    let p = dir.join("wrong.safetensors");
    write_safetensors(&p, &wrong);
    let e = load_err(&p);
    assert!(
        e.contains(key) && e.contains("[191, 64]") && e.contains("[192, 64]"),
        "{e}"
    );

    let mut missing = timm_tensors();
    missing.remove(key);
    let p = dir.join("missing.safetensors");
    write_safetensors(&p, &missing);
    let e = load_err(&p);
    assert!(e.contains("missing tensor") && e.contains(key), "{e}");

    let mut extra = timm_tensors();
    extra.insert(
        "stages.9.0.surprise.weight".into(),
        HostTensor::new(vec![2], vec![0.0; 2]),
    );
    let p = dir.join("extra.safetensors");
    write_safetensors(&p, &extra);
    let e = load_err(&p);
    assert!(
        e.contains("unexpected") && e.contains("stages.9.0.surprise.weight"),
        "{e}"
    );

    // The same holds in a pipeline, located at the key naming the file; a
    // checkpoint whose own head is left unattached is fine.
    let pipeline = |backbone: &std::path::Path| {
        let yaml = dir.join("p.yaml");
        std::fs::write(
            &yaml,
            format!(
                "backbones:\n  main:\n    weights: {}\n    output_stride: 16\nheads:\n  - name: s\n    type: deeplabv3\n    weights: {}\n    allow_backbone_mismatch: true\n",
                backbone.display(),
                weights("cvnets_deeplabv3_mobilevit_xxs.pt").display()
            ),
        )
        .expect("write");
        let file = vpipe::pipeline::PipelineFile::read(&yaml).expect("read");
        vpipe::pipeline::Pipeline::compile(
            file,
            &vpipe::heads::HeadRegistry::with_builtins(),
            &vpipe::core::device::default_device(),
        )
    };
    match pipeline(&p) {
        Err(vpipe::pipeline::PipelineError::Config(c)) => {
            assert_eq!(c.path, "backbones.main.weights", "{c}");
            assert!(
                c.message.contains("unexpected")
                    && c.message.contains("stages.9.0.surprise.weight"),
                "{c}"
            );
        }
        other => panic!("not refused: {other:?}"),
    }
    pipeline(&weights("timm_mobilevit_xxs.safetensors")).expect("an unattached classifier is fine");
}
