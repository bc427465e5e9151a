//! The trainer's bookkeeping: resuming from a saved state continues bit for bit, the
//! saved heads load back with the normal (folding) loader, and bad input is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Map;
use vpipe_backbone::layout::CheckpointTask;
use vpipe_backbone::{Features, MobileVitConfig, MobileVitSize, Params};
use vpipe_core::HostTensor;
use vpipe_heads::{
    Dropout, Head, HeadContext, HeadRegistry, LoadOptions, LoadedModel, TrainOutput,
};
use vpipe_train::{
    AdamWSettings, CosineSchedule, LossSettings, Targets, TrainError, Trainer, TrainerSettings,
    training_features,
};

fn settings() -> TrainerSettings {
    settings_with_dropout(None)
}

fn settings_with_dropout(dropout_seed: Option<u64>) -> TrainerSettings {
    TrainerSettings {
        schedule: CosineSchedule::iteration_based(2, 1e-4, 1e-3, 1e-5, 20),
        adamw: AdamWSettings::default(),
        loss: LossSettings::default(),
        dropout_seed,
    }
}

fn features(device: &Device) -> Features {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cls_features.npy");
    let a = vpipe_io::npy::read(&path).expect("features");
    let shape: [usize; 4] = a.shape.clone().try_into().expect("4-d");
    let l5 = Tensor::from_data(
        TensorData::new(a.to_f32("features").expect("f32"), shape),
        device,
    );
    let empty = || Tensor::<4>::zeros([2, 1, 1, 1], device);
    Features {
        levels: [empty(), empty(), empty(), empty(), l5],
    }
}

fn checkpoint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../weights/reference/cvnets_mobilevit_xxs.pt")
}

fn trainable_head(device: &Device) -> Box<dyn Head> {
    let options = LoadOptions {
        trainable_head: true,
        ..LoadOptions::default()
    };
    let loaded = LoadedModel::load_with(&checkpoint(), device, &options).expect("load");
    loaded.model.into_parts().1
}

/// A classification head from canonical tensors, in trainable form or not.
fn head_from(
    tensors: &BTreeMap<String, HostTensor>,
    trainable: bool,
    device: &Device,
) -> Box<dyn Head> {
    let mut params = Params::from_named("trained", tensors.clone(), device);
    if trainable {
        params.set_trainable();
    }
    classification_head(params)
}

/// The classification head of MobileViT-XXS built from `params`.
fn classification_head(mut params: Params) -> Box<dyn Head> {
    let config =
        MobileVitConfig::for_task(MobileVitSize::Xxs, CheckpointTask::Classification, None);
    let options = Map::new();
    let mut ctx = HeadContext::new(&mut params, &config, &options);
    let head = HeadRegistry::with_builtins()
        .build("classification", &mut ctx)
        .expect("head");
    params.finish().expect("every tensor used");
    head
}

fn targets() -> Vec<Targets> {
    vec![Targets::Classes(vec![3, 417])]
}

#[test]
fn resuming_from_a_saved_state_continues_bit_for_bit() {
    let device = vpipe_core::device::default_device();
    let feats = training_features(&features(&device));
    // With dropout, so that its generator's state must be resumed too.
    let settings = || settings_with_dropout(Some(7));
    let mut straight = Trainer::new(vec![trainable_head(&device)], settings()).expect("trainer");
    for _ in 0..3 {
        straight.step(&feats, [128, 128], &targets()).expect("step");
    }
    let mut first = Trainer::new(vec![trainable_head(&device)], settings()).expect("trainer");
    first.step(&feats, [128, 128], &targets()).expect("step");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.safetensors");
    first.save_state(&state).expect("save state");
    let saved = first.save_heads().expect("save heads").remove(0);
    let mut resumed =
        Trainer::new(vec![head_from(&saved, true, &device)], settings()).expect("trainer");
    resumed.load_state(&state).expect("load state");
    assert_eq!(resumed.iteration(), 1);
    assert_eq!(resumed.optimizer(), first.optimizer());
    for _ in 0..2 {
        resumed.step(&feats, [128, 128], &targets()).expect("step");
    }
    assert_eq!(
        resumed.save_heads().expect("heads"),
        straight.save_heads().expect("heads")
    );
}

#[test]
fn a_new_head_is_initialised_as_ml_cvnets_does() {
    let device = vpipe_core::device::default_device();
    let mut params = Params::initialised(11, &device);
    params.set_trainable();
    let mut head = classification_head(params);
    let trainable = head.trainable().expect("trainable");
    let stats = |name: &str| {
        let p = trainable
            .params()
            .into_iter()
            .find(|p| p.name() == name)
            .expect(name)
            .to_host()
            .expect("host");
        let n = p.data.len() as f64;
        let mean = p.data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = p
            .data
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt(), p.data)
    };
    // Kaiming normal over fan_out = 320 output channels x 1 x 1.
    let (mean, std, _) = stats("conv_1x1_exp.block.conv.weight");
    let want = (2.0f64 / 320.0).sqrt();
    assert!(
        mean.abs() < 0.01 * want && (std / want - 1.0).abs() < 0.02,
        "{mean} {std}"
    );
    let (mean, std, _) = stats("classifier.fc.weight");
    assert!(
        mean.abs() < 1e-4 && (std / 0.01 - 1.0).abs() < 0.02,
        "{mean} {std}"
    );
    for (name, value) in [
        ("conv_1x1_exp.block.norm.weight", 1.0),
        ("conv_1x1_exp.block.norm.bias", 0.0),
        ("conv_1x1_exp.block.norm.running_mean", 0.0),
        ("conv_1x1_exp.block.norm.running_var", 1.0),
        ("classifier.fc.bias", 0.0),
    ] {
        assert!(stats(name).2.iter().all(|&v| v == value), "{name}");
    }
    // With logits near 0, the label-smoothed loss is about ln(classes).
    let mut trainer = Trainer::new(vec![head], settings()).expect("trainer");
    let feats = training_features(&features(&device));
    let report = trainer.step(&feats, [128, 128], &targets()).expect("step");
    assert!((report.loss - 1000f64.ln()).abs() < 0.05, "{}", report.loss);
}

#[test]
fn heads_train_side_by_side() {
    let device = vpipe_core::device::default_device();
    let feats = training_features(&features(&device));
    let mut one = Trainer::new(vec![trainable_head(&device)], settings()).expect("trainer");
    let single = one.step(&feats, [128, 128], &targets()).expect("step");
    let mut two = Trainer::new(
        vec![trainable_head(&device), trainable_head(&device)],
        settings(),
    )
    .expect("trainer");
    let both = two
        .step(&feats, [128, 128], &[targets(), targets()].concat())
        .expect("step");
    assert_eq!(both.head_losses, vec![single.loss, single.loss]);
    assert_eq!(both.loss, 2.0 * single.loss);
    // Each head is updated from its own loss, with its own optimiser state.
    let heads = two.save_heads().expect("heads");
    let alone = one.save_heads().expect("heads").remove(0);
    assert_eq!(heads, vec![alone.clone(), alone]);
    assert!(two.optimizer().moments("1/classifier.fc.weight").is_some());
}

#[test]
fn dropout_is_seeded() {
    let device = vpipe_core::device::default_device();
    let feats = training_features(&features(&device));
    let run = |seed: Option<u64>| {
        let mut t = Trainer::new(vec![trainable_head(&device)], settings_with_dropout(seed))
            .expect("trainer");
        let report = t.step(&feats, [128, 128], &targets()).expect("step");
        (report.loss, t.save_heads().expect("heads"))
    };
    let (plain, plain_heads) = run(None);
    let (a, a_heads) = run(Some(1));
    let (b, b_heads) = run(Some(1));
    let (c, _) = run(Some(2));
    assert_eq!((a, &a_heads), (b, &b_heads), "same seed, same step");
    assert_ne!(a, plain, "dropout changes the loss");
    assert_ne!(a, c, "another seed, other masks");
    assert_ne!(a_heads, plain_heads);
}

#[test]
fn saved_heads_load_with_the_folding_loader() {
    let device = vpipe_core::device::default_device();
    let feats = features(&device);
    let mut trainer = Trainer::new(vec![trainable_head(&device)], settings()).expect("trainer");
    trainer
        .step(&training_features(&feats), [128, 128], &targets())
        .expect("step");
    let saved = trainer.save_heads().expect("save").remove(0);
    // The trained head's own training forward ...
    let mut trained = head_from(&saved, true, &device);
    let TrainOutput::Classification { logits } = trained
        .trainable()
        .expect("trainable")
        .train_forward(
            &training_features(&feats),
            [128, 128],
            &mut Dropout::disabled(),
        )
        .expect("forward")
    else {
        panic!("not a classification output");
    };
    let want: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .expect("logits");
    // ... and the same tensors folded for inference, on the fused kernels.
    let folded = head_from(&saved, false, &device);
    let raw = folded.forward(&feats, [128, 128]).expect("inference");
    let worst = raw[0]
        .data
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 1e-4,
        "folded and trainable forms differ by {worst:e}"
    );
}

#[test]
fn bad_input_is_an_error() {
    let device = vpipe_core::device::default_device();
    assert!(matches!(
        Trainer::new(Vec::new(), settings()),
        Err(TrainError::NoHeads)
    ));
    // A head in inference form cannot be trained.
    let loaded = LoadedModel::load(&checkpoint(), &device).expect("load");
    let err = Trainer::new(vec![loaded.model.into_parts().1], settings()).expect_err("frozen");
    assert!(
        matches!(err, TrainError::NotTrainable { index: 0, .. }),
        "{err}"
    );
    let feats = training_features(&features(&device));
    let mut trainer = Trainer::new(vec![trainable_head(&device)], settings()).expect("trainer");
    for (targets, want) in [
        (vec![Targets::Classes(vec![3])], "1 labels for a batch of 2"),
        (
            vec![Targets::Classes(vec![3, 1000])],
            "class 1000 out of range",
        ),
        (
            vec![Targets::Boxes(Vec::new())],
            "box targets for a classification output",
        ),
        (Vec::new(), "0 target sets for 1 heads"),
        (
            vec![Targets::Classes(vec![3, 4]), Targets::Classes(vec![3, 4])],
            "2 target sets for 1 heads",
        ),
    ] {
        let err = trainer
            .step(&feats, [128, 128], &targets)
            .expect_err("bad targets");
        assert!(err.to_string().contains(want), "{err}");
    }
    assert_eq!(trainer.iteration(), 0);
}
