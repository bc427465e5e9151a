//! Reading weights files back as the checkpoint their registry description promises:
//! every shipped file passes, a checkpoint of another task or class count does not.

use std::path::{Path, PathBuf};
use std::time::Instant;

use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use vpipe_backbone::layout::CheckpointTask;
use vpipe_weights::{ReadBackError, Registry, read_back};

fn weights_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../weights")
}

#[test]
fn every_shipped_file_reads_back_as_its_description() {
    let registry = Registry::builtin();
    assert!(!registry.shipped.is_empty());
    for s in &registry.shipped {
        let path = weights_dir().join(&s.path);
        let start = Instant::now();
        let layout = read_back(&path, &s.description).unwrap_or_else(|e| panic!("{}: {e}", s.path));
        eprintln!(
            "{}: read back in {:.1} ms",
            s.path,
            start.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(layout, s.description.checkpoint_layout(), "{}", s.path);
    }
}

#[test]
fn checkpoint_of_another_task_is_told_apart() {
    let registry = Registry::builtin();
    let seg = registry
        .shipped
        .iter()
        .find(|s| s.path == "reference/cvnets_deeplabv3_mobilevit_xxs.pt")
        .unwrap();
    let cls = registry.get("cvnets/mobilevit_xxs").unwrap();
    match read_back(&weights_dir().join(&seg.path), &cls.description) {
        Err(e @ ReadBackError::OtherCheckpoint { found }) => {
            assert_eq!(found.task, CheckpointTask::Segmentation);
            assert!(
                e.to_string()
                    .contains("mobilevit_xxs segmentation (cvnets layout)"),
                "{e}"
            );
        }
        other => panic!("expected another checkpoint, got {other:?}"),
    }
}

#[test]
fn checkpoint_with_another_class_count_is_refused() {
    // The timm reference file with its classifier cut down to its first 10 classes: a
    // whole, consistent checkpoint, but not one of the ImageNet-1k entry it claims to be.
    let bytes =
        std::fs::read(weights_dir().join("reference/timm_mobilevit_xxs.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut cut = 0;
    let tensors: Vec<(String, TensorView)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            if view.shape().first() != Some(&1000) {
                return (name, view);
            }
            cut += 1;
            let mut shape = view.shape().to_vec();
            let per_class = view.data().len() / 1000;
            shape[0] = 10;
            let data = &view.data()[..10 * per_class];
            (name, TensorView::new(view.dtype(), shape, data).unwrap())
        })
        .collect();
    assert_eq!(cut, 2, "the classifier's weight and bias");
    let tmp = tempfile::Builder::new()
        .prefix("vpipe-readback-")
        .tempdir()
        .unwrap();
    let path = tmp.path().join("ten_classes.safetensors");
    std::fs::write(&path, safetensors::serialize(tensors, None).unwrap()).unwrap();
    let timm = Registry::builtin()
        .get("timm/mobilevit_xxs.cvnets_in1k")
        .unwrap();
    match read_back(&path, &timm.description) {
        Err(ReadBackError::OtherClassCount {
            found: 10,
            expected: 1000,
            labels: "imagenet1k",
        }) => {}
        other => panic!("expected a class count error, got {other:?}"),
    }
}
