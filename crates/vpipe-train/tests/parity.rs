//! One training step of each built-in head against PyTorch (ml-cvnets v0.1 losses,
//! torch.optim.AdamW): `scripts/make_train_reference.py` wrote the backbone features,
//! the targets, the loss and each head tensor's update into `tests/fixtures/`, from
//! the committed checkpoints in `weights/reference/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;
use vpipe_backbone::Features;
use vpipe_core::HostTensor;
use vpipe_heads::{Dropout, LoadOptions, LoadedModel};
use vpipe_io::TensorFile;
use vpipe_train::loss::Targets;
use vpipe_train::{
    AdamWSettings, CosineSchedule, ImageBoxes, LossSettings, Mask, Trainer, TrainerSettings,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn checkpoint(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../weights/reference")
        .join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).expect("read json"))
        .expect("parse json")
}

fn npy_tensor(name: &str, device: &Device) -> Tensor<4> {
    let a = vpipe_io::npy::read(&fixture(name)).expect("read npy");
    let shape: [usize; 4] = a.shape.clone().try_into().expect("4-d");
    Tensor::from_data(TensorData::new(a.to_f32(name).expect("f32"), shape), device)
}

/// Features with the given levels (1 to 5); the levels a head does not read are
/// empty placeholders.
fn features(levels: &[(usize, &str)], device: &Device) -> Features {
    let empty = || Tensor::<4>::zeros([2, 1, 1, 1], device);
    let mut out = Features {
        levels: [empty(), empty(), empty(), empty(), empty()],
    };
    for &(level, name) in levels {
        out.levels[level - 1] = npy_tensor(name, device);
    }
    out
}

fn settings(info: &Value) -> TrainerSettings {
    let s = &info["schedule"];
    let f = |v: &Value| v.as_f64().expect("number");
    let a = &info["adamw"];
    TrainerSettings {
        schedule: CosineSchedule {
            warmup_iterations: s["warmup_iterations"].as_u64().expect("warm-up"),
            warmup_init_lr: f(&s["warmup_init_lr"]),
            max_lr: f(&s["max_lr"]),
            min_lr: f(&s["min_lr"]),
            period: s["period"].as_u64().expect("period"),
            by_epoch: false,
        },
        adamw: AdamWSettings {
            beta1: f(&a["beta1"]),
            beta2: f(&a["beta2"]),
            eps: f(&a["eps"]),
            weight_decay: f(&a["weight_decay"]),
        },
        loss: LossSettings::default(),
        dropout_seed: None,
    }
}

/// Runs one step of the head in `weights` and compares loss, learning rate and
/// every trainable tensor's update with the reference of `task`.
fn check_step(task: &str, weights: &str, levels: &[(usize, &str)], targets: Targets) {
    let info = json(&format!("{task}.json"));
    let device = vpipe_core::device::default_device();
    let options = LoadOptions {
        trainable_head: true,
        ..LoadOptions::default()
    };
    let loaded = LoadedModel::load_with(&checkpoint(weights), &device, &options).expect("load");
    let (_, head) = loaded.model.into_parts();
    let mut trainer = Trainer::new(vec![head], settings(&info)).expect("trainer");
    trainer.set_iteration(info["iteration"].as_u64().expect("iteration"));
    let before = trainer.save_heads().expect("save").remove(0);
    let size = &info["input_size"];
    let input_size = [0, 1].map(|i| size[i].as_u64().expect("size") as usize);
    let feats = vpipe_train::training_features(&features(levels, &device));
    let report = trainer.step(&feats, input_size, &[targets]).expect("step");
    let want_loss = info["loss"].as_f64().expect("loss");
    let rel = (report.loss - want_loss).abs() / want_loss.abs();
    assert!(
        rel < 1e-5,
        "{task}: loss {} vs {want_loss} (rel {rel:e})",
        report.loss
    );
    let want_lr = info["lr"].as_f64().expect("lr");
    assert!(
        (report.lr - want_lr).abs() < 1e-12,
        "{task}: lr {} vs {want_lr}",
        report.lr
    );
    let after = trainer.save_heads().expect("save").remove(0);
    let deltas = TensorFile::read(&fixture(&format!("{task}_delta.safetensors")))
        .expect("deltas")
        .tensors;
    let trained: BTreeMap<&String, &HostTensor> = after
        .iter()
        .filter(|(name, _)| !name.contains("running_"))
        .collect();
    assert_eq!(
        trained.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        deltas.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        "{task}: trained tensors"
    );
    let mut worst = (0.0f32, String::new());
    for (name, t) in trained {
        let want = &deltas[name];
        assert_eq!(t.shape, want.shape, "{task}: {name}");
        for ((a, b), d) in t.data.iter().zip(&before[name].data).zip(&want.data) {
            let err = ((a - b) - d).abs();

            if err > worst.0 {
                worst = (err, name.clone());
            }
        }
    }
    assert!(
        worst.0 < 1e-5,
        "{task}: update differs by {:e} in '{}'",
        worst.0,
        worst.1
    );
    // The frozen statistics are saved unchanged.
    for (name, t) in after.iter().filter(|(n, _)| n.contains("running_")) {
        assert_eq!(t.data, before[name].data, "{task}: {name}");
    }
}

#[test]
fn classification_step_matches_pytorch() {
    let info = json("cls.json");
    let labels = info["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|v| v.as_u64().expect("label") as usize)
        .collect();
    check_step(
        "cls",
        "cvnets_mobilevit_xxs.pt",
        &[(5, "cls_features.npy")],
        Targets::Classes(labels),
    );
}

fn ssd_targets(info: &Value) -> Vec<ImageBoxes> {
    info["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|im| ImageBoxes {
            boxes: im["boxes"]
                .as_array()
                .expect("boxes")
                .iter()
                .map(|b| [0, 1, 2, 3].map(|i| b[i].as_f64().expect("coordinate") as f32))
                .collect(),
            labels: im["labels"]
                .as_array()
                .expect("labels")
                .iter()
                .map(|l| l.as_u64().expect("label") as usize)
                .collect(),
        })
        .collect()
}

#[test]
fn detection_step_matches_pytorch() {
    let info = json("ssd.json");
    check_step(
        "ssd",
        "cvnets_ssd_mobilevit_xxs.pt",
        &[(4, "ssd_features_l4.npy"), (5, "ssd_features_l5.npy")],
        Targets::Boxes(ssd_targets(&info)),
    );
}

#[test]
fn detection_anchors_and_matching_match_pytorch() {
    let info = json("ssd.json");
    let device = vpipe_core::device::default_device();
    let options = LoadOptions {
        trainable_head: true,
        ..LoadOptions::default()
    };
    let loaded = LoadedModel::load_with(
        &checkpoint("cvnets_ssd_mobilevit_xxs.pt"),
        &device,
        &options,
    )
    .expect("load");
    let (_, mut head) = loaded.model.into_parts();
    let feats = vpipe_train::training_features(&features(
        &[(4, "ssd_features_l4.npy"), (5, "ssd_features_l5.npy")],
        &device,
    ));
    let output = head
        .trainable()
        .expect("trainable")
        .train_forward(&feats, [128, 128], &mut Dropout::disabled())
        .expect("forward");
    let vpipe_heads::TrainOutput::Detection { anchors, .. } = output else {
        panic!("not a detection output");
    };
    let want = vpipe_io::npy::read(&fixture("ssd_anchors.npy"))
        .expect("anchors")
        .to_f32("anchors")
        .expect("f32");
    let got: Vec<f32> = anchors.iter().flatten().copied().collect();
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-6, "anchors differ by {worst:e}");
    let matched = info["matched_labels"].as_array().expect("matched labels");
    for (image, want) in ssd_targets(&info).iter().zip(matched) {
        let m = vpipe_train::matcher::match_anchors(
            &image.boxes,
            &image.labels,
            &anchors,
            &vpipe_train::MatcherSettings::default(),
        );
        let want: Vec<usize> = want
            .as_array()
            .expect("labels")
            .iter()
            .map(|v| v.as_u64().expect("label") as usize)
            .collect();
        assert_eq!(m.labels, want);
    }
}

#[test]
fn segmentation_step_matches_pytorch() {
    let a = vpipe_io::npy::read(&fixture("seg_mask.npy")).expect("mask");
    let (h, w) = (a.shape[1], a.shape[2]);
    let data = a.to_u8("mask").expect("u8");
    let masks = data
        .chunks_exact(h * w)
        .map(|c| Mask {
            height: h,
            width: w,
            classes: c.to_vec(),
        })
        .collect();
    check_step(
        "seg",
        "cvnets_deeplabv3_mobilevit_xxs.pt",
        &[(5, "seg_features.npy")],
        Targets::Masks(masks),
    );
}

#[test]
fn schedule_matches_the_reference() {
    let info = json("schedule.json");
    let s = &info["schedule"];
    let f = |v: &Value| v.as_f64().expect("number");
    let schedule = CosineSchedule {
        warmup_iterations: s["warmup_iterations"].as_u64().expect("warm-up"),
        warmup_init_lr: f(&s["warmup_init_lr"]),
        max_lr: f(&s["max_lr"]),
        min_lr: f(&s["min_lr"]),
        period: s["period"].as_u64().expect("period"),
        by_epoch: false,
    };
    let its = info["iterations"].as_array().expect("iterations");
    let lrs = info["lr"].as_array().expect("lr");
    for (it, lr) in its.iter().zip(lrs) {
        let it = it.as_u64().expect("iteration");
        let got = schedule.lr(0, it);
        assert!((got - f(lr)).abs() < 1e-15, "iteration {it}: {got} vs {lr}");
    }
}
