//! Training runs end to end on a small real COCO subset (tests/fixtures/train_coco: 8
//! coco128 images scaled to 160 px, `scripts/make_train_fixture.py`): the loss falls,
//! the model runs as one backbone feeding its heads, a resumed run equals an
//! uninterrupted one, distillation reproduces a teacher, and bad runs stop clearly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use vpipe_heads::HeadRegistry;
use vpipe_io::TensorFile;
use vpipe_train::{RunOptions, TrainConfig, TrainError, train};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes a training file (`$R` is the repository root) and reads it.
fn config(dir: &Path, text: &str) -> TrainConfig {
    let p = dir.join("train.yaml");
    std::fs::write(&p, text.replace("$R", &root().display().to_string())).unwrap();
    TrainConfig::read(&p).unwrap_or_else(|e| panic!("{e}"))
}

fn options(out: &Path) -> RunOptions {
    RunOptions {
        out_dir: out.to_path_buf(),
        resume: false,
        overwrite: false,
        distill: false,
        progress: false,
        stop: Arc::new(AtomicBool::new(false)),
    }
}

/// The pipeline a run wrote beside its model, compiled.
fn written_pipeline(out: &Path) -> vpipe_pipeline::Pipeline {
    let file = vpipe_pipeline::PipelineFile::read(&out.join("pipeline.yaml")).unwrap();
    vpipe_pipeline::Pipeline::compile(
        file,
        &HeadRegistry::with_builtins(),
        &vpipe_core::device::default_device(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// SSD and DeepLabv3 heads from the reference checkpoints, moved onto the
/// classification checkpoint's backbone, learning COCO boxes and VOC masks.
const SUPERVISED: &str = "backbone:
  weights: $R/weights/reference/cvnets_mobilevit_xxs.pt
  output_stride: 32
  preprocess: cvnets-ssd
data:
  coco: $R/tests/fixtures/train_coco/instances.json
  images: $R/tests/fixtures/train_coco/images
heads:
  - name: objects
    type: ssd
    init: $R/weights/reference/cvnets_ssd_mobilevit_xxs.pt
  - name: scene
    type: deeplabv3
    init: $R/weights/reference/cvnets_deeplabv3_mobilevit_xxs.pt
    options: {stride: 32}
train:
";

#[test]
fn a_short_run_lowers_the_loss_and_gives_one_backbone_for_its_heads() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        &format!(
            "{SUPERVISED}  steps: 40\n  batch_size: 4\n  lr: 0.002\n  warmup_steps: 5\n  cache_features: true\n  checkpoint_every: 20\n"
        ),
    );
    let out = dir.path().join("out");
    let s = train(&c, &HeadRegistry::with_builtins(), &options(&out)).unwrap();
    assert_eq!(s.steps_done, 40);
    assert!(
        s.last_loss < 0.8 * s.first_loss,
        "loss {} -> {}",
        s.first_loss,
        s.last_loss
    );
    // The cache: the backbone ran once per image (8), not once per image seen (160).
    assert_eq!(s.backbone_images, 8);
    let losses = std::fs::read_to_string(out.join("losses.csv")).unwrap();
    assert_eq!(losses.lines().count(), 41);
    assert!(losses.starts_with("step,lr,loss,objects,scene\n"));
    assert!(image::open(out.join("loss.png")).is_ok());
    // The model file names the detector's classes as the data does, for pipelines too.
    let mut file = TensorFile::read(&out.join("model.safetensors")).unwrap();
    let heads = vpipe_weights::split_heads(&mut file).unwrap().unwrap();
    let labels = heads[0].entry.labels.as_ref().expect("labels");
    assert_eq!(
        (labels.len(), &labels[..2]),
        (81, &["background".to_string(), "person".to_string()][..])
    );
    assert_eq!(heads[0].entry.options["labels"][1], "person");
    assert_eq!(
        heads[1].entry.labels, None,
        "VOC masks: the head's own names"
    );
    // The model runs as one backbone feeding both heads.
    let p = written_pipeline(&out);
    assert_eq!(p.head_names(), ["objects", "scene"]);
    let frame =
        vpipe_media::load_image(&root().join("tests/fixtures/train_coco/images/000000000030.jpg"))
            .unwrap();
    let results = p.run(&[&frame, &frame]).unwrap();
    assert_eq!(p.backbone_runs(), 1);
    assert_eq!(results[0].len(), 2);
}

#[test]
fn a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    // Augmentation and dropout on: their generators must resume too.
    let c = config(
        dir.path(),
        &format!("{SUPERVISED}  steps: 4\n  batch_size: 2\n  checkpoint_every: 10\n"),
    );
    let registry = HeadRegistry::with_builtins();
    let straight = dir.path().join("straight");
    train(&c, &registry, &options(&straight)).unwrap();
    // Stopped after the first step (as Ctrl-C does), then resumed.
    let parts = dir.path().join("parts");
    let stopping = RunOptions {
        stop: Arc::new(AtomicBool::new(true)),
        ..options(&parts)
    };
    let s = train(&c, &registry, &stopping).unwrap();
    assert!(s.stopped);
    assert_eq!(s.steps_done, 1);
    assert!(!parts.join("model.safetensors").exists());
    let resuming = RunOptions {
        resume: true,
        ..options(&parts)
    };
    let s = train(&c, &registry, &resuming).unwrap();
    assert_eq!((s.first_step, s.steps_done), (1, 4));
    let a = TensorFile::read(&straight.join("model.safetensors")).unwrap();
    let b = TensorFile::read(&parts.join("model.safetensors")).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, t) in &a.tensors {
        assert_eq!(Some(t), b.tensors.get(name), "{name}");
    }
    assert_eq!(
        std::fs::read_to_string(straight.join("losses.csv")).unwrap(),
        std::fs::read_to_string(parts.join("losses.csv")).unwrap()
    );
    // An earlier run's results are never replaced unasked.
    let e = train(&c, &registry, &options(&parts))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume") && e.contains("--overwrite"), "{e}");
}

/// A student that starts as its teacher, on the teacher's own backbone and input,
/// reproduces it: the distillation loss of the first step is zero (to float
/// rounding), for each task. Unlabelled images suffice.
#[test]
fn a_student_equal_to_its_teacher_has_no_distillation_loss() {
    let dir = tempfile::tempdir().unwrap();
    for (ckpt, kind, preset) in [
        ("cvnets_ssd_mobilevit_xxs.pt", "ssd", "cvnets-ssd"),
        (
            "cvnets_deeplabv3_mobilevit_xxs.pt",
            "deeplabv3",
            "cvnets-seg",
        ),
        ("cvnets_mobilevit_xxs.pt", "classification", "cvnets-cls"),
    ] {
        let c = config(
            dir.path(),
            &format!(
                "backbone:\n  weights: $R/weights/reference/{ckpt}\n  preprocess: {preset}\ndata:\n  images: $R/tests/fixtures/train_coco/images\nheads:\n  - name: student\n    type: {kind}\n    teacher: $R/weights/reference/{ckpt}\ntrain:\n  steps: 1\n  batch_size: 2\n  augment: {{flip: 0.0, scale: [1.0, 1.0], random_crop: false}}\n  dropout: false\n"
            ),
        );
        let out = dir.path().join(kind);
        let o = RunOptions {
            distill: true,
            ..options(&out)
        };
        let s = train(&c, &HeadRegistry::with_builtins(), &o).unwrap();
        assert!(s.first_loss.abs() < 1e-4, "{kind}: {}", s.first_loss);
    }
}

#[test]
fn distillation_moves_three_teachers_onto_one_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        "backbone:
  weights: $R/weights/reference/cvnets_mobilevit_xxs.pt
  output_stride: 32
  preprocess: cvnets-ssd
data:
  images: $R/tests/fixtures/train_coco/images
heads:
  - {name: objects, type: ssd, teacher: $R/weights/reference/cvnets_ssd_mobilevit_xxs.pt}
  - name: scene
    type: deeplabv3
    teacher: $R/weights/reference/cvnets_deeplabv3_mobilevit_xxs.pt
    options: {stride: 32}
  - {name: imagenet, type: classification, teacher: $R/weights/reference/cvnets_mobilevit_xxs.pt}
train:
  steps: 3
  batch_size: 2
",
    );
    let out = dir.path().join("out");
    let o = RunOptions {
        distill: true,
        ..options(&out)
    };
    let s = train(&c, &HeadRegistry::with_builtins(), &o).unwrap();
    assert!(s.first_loss.is_finite() && s.first_loss > 0.0);
    let p = written_pipeline(&out);
    assert_eq!(p.head_names(), ["objects", "scene", "imagenet"]);
    assert!(p.describe().contains("backbone passes per frame: 1"));
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        &format!(
            "{SUPERVISED}  steps: 30\n  batch_size: 2\n  lr: 1000.0\n  warmup_steps: 0\n  checkpoint_every: 1\n  cache_features: true\n"
        ),
    );
    let out = dir.path().join("out");
    let e = train(&c, &HeadRegistry::with_builtins(), &options(&out)).unwrap_err();
    let TrainError::Diverged { step, .. } = e else {
        panic!("not a divergence: {e}");
    };
    assert!(e.to_string().contains("last good checkpoint"), "{e}");
    let losses = std::fs::read_to_string(out.join("checkpoint/losses.csv")).unwrap();
    // The checkpoint holds the steps before the one that diverged.
    assert_eq!(losses.lines().count() as u64, step + 1);
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn heads_without_labels_of_their_kind_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        "backbone: {weights: $R/weights/reference/cvnets_mobilevit_xxs.pt}
data: {images: $R/tests/fixtures/train_coco/images}
heads:
  - {name: objects, type: ssd, init: $R/weights/reference/cvnets_ssd_mobilevit_xxs.pt}
train: {steps: 1, batch_size: 1}
",
    );
    let e = train(
        &c,
        &HeadRegistry::with_builtins(),
        &options(&dir.path().join("out")),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("head 'objects'") && e.contains("teacher"), "{e}");
}

/// A head of your own: a linear probe on the pooled layer-5 features. It opts in to
/// training by implementing [`TrainableHead`] with vpipe's layers, whose trainable
/// form gives its parameters.
#[derive(Debug)]
struct Probe {
    fc: vpipe_backbone::layers::Linear,
}

impl Probe {
    fn logits(&self, features: &vpipe_backbone::Features) -> burn::tensor::Tensor<2> {
        let [b, c, _, _] = features.last().dims();
        let pooled = burn::tensor::module::adaptive_avg_pool2d(features.last().clone(), [1, 1]);
        self.fc.forward(pooled.reshape([b, c]))
    }
}

impl vpipe_heads::Head for Probe {
    fn kind(&self) -> &str {
        "probe"
    }

    fn levels(&self) -> &[usize] {
        &[5]
    }

    fn num_classes(&self) -> Option<usize> {
        Some(1000)
    }

    fn forward(
        &self,
        features: &vpipe_backbone::Features,
        _input_size: [usize; 2],
    ) -> vpipe_heads::Result<Vec<vpipe_heads::RawTensor>> {
        Ok(vec![vpipe_heads::model::to_raw(
            "logits",
            self.logits(features),
        )?])
    }

    fn postprocess(
        &self,
        raw: &[vpipe_heads::RawTensor],
        index: usize,
        _geometry: &vpipe_core::geometry::InputTransform,
    ) -> vpipe_heads::Result<vpipe_core::result::HeadOutput> {
        let row = vpipe_heads::row(vpipe_heads::output(raw, "logits")?, index)?;
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        Ok(vpipe_core::result::HeadOutput::Classification {
            top_k: vec![vpipe_core::result::ClassScore {
                class_id: best,
                label: best.to_string(),
                score: 1.0,
                logit: row[best],
            }],
        })
    }

    fn trainable(&mut self) -> Option<&mut dyn vpipe_heads::TrainableHead> {
        Some(self)
    }
}

impl vpipe_heads::TrainableHead for Probe {
    fn params(&self) -> Vec<&vpipe_backbone::Param> {
        self.fc.params()
    }

    fn params_mut(&mut self) -> Vec<&mut vpipe_backbone::Param> {
        self.fc.params_mut()
    }

    fn train_forward(
        &self,
        features: &vpipe_backbone::Features,
        _input_size: [usize; 2],
        _dropout: &mut vpipe_heads::Dropout,
    ) -> vpipe_heads::Result<vpipe_heads::TrainOutput> {
        Ok(vpipe_heads::TrainOutput::Classification {
            logits: self.logits(features),
        })
    }
}

#[test]
fn a_custom_head_that_opts_in_trains_from_scratch_and_runs() {
    let mut registry = HeadRegistry::with_builtins();
    registry
        .register("probe", |ctx| {
            let c = ctx.backbone.vit_stages[2].out_channels;
            Ok(Box::new(Probe {
                fc: vpipe_backbone::layers::Linear::load(ctx.params, "probe.fc", c, 1000)?,
            }))
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // An ImageFolder of two classes (the fixture's images, split by name).
    let data = dir.path().join("folder");
    for (i, f) in std::fs::read_dir(root().join("tests/fixtures/train_coco/images"))
        .unwrap()
        .enumerate()
    {
        let f = f.unwrap().path();
        let class = data.join(if i % 2 == 0 { "a" } else { "b" });
        std::fs::create_dir_all(&class).unwrap();
        std::fs::copy(&f, class.join(f.file_name().unwrap())).unwrap();
    }
    let c = config(
        dir.path(),
        &format!(
            "backbone: {{weights: $R/weights/reference/cvnets_mobilevit_xxs.pt}}\ndata: {{image_folder: {}}}\nheads:\n  - {{name: mine, type: probe, init: random}}\ntrain: {{steps: 3, batch_size: 2, cache_features: true}}\n",
            data.display()
        ),
    );
    let out = dir.path().join("out");
    let s = train(&c, &registry, &options(&out)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.steps_done, 3);
    // It starts at the loss of a uniform guess over its 1000 classes (ml-cvnets'
    // initialisation: tiny weights, zero bias), label smoothing included.
    assert!(
        (s.first_loss - 1000f64.ln()).abs() < 0.05,
        "{}",
        s.first_loss
    );
    let file = TensorFile::read(&out.join("model.safetensors")).unwrap();
    assert!(file.tensors.contains_key("heads.mine.probe.fc.weight"));
    let file = vpipe_pipeline::PipelineFile::read(&out.join("pipeline.yaml")).unwrap();
    let p =
        vpipe_pipeline::Pipeline::compile(file, &registry, &vpipe_core::device::default_device())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.head_names(), ["mine"]);
}

#[test]
fn segmentation_heads_learn_from_mask_folders() {
    let dir = tempfile::tempdir().unwrap();
    // The fixture's VOC masks, written as class-index PNGs beside copies of its images.
    let coco = vpipe_data::coco::CocoDataset::load(
        &root().join("tests/fixtures/train_coco/instances.json"),
    )
    .unwrap();
    let masks = dir.path().join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    for (img, anns) in coco.images.iter().zip(coco.annotations_by_image()) {
        let m = vpipe_data::masks::voc_class_mask(img, &anns);
        let stem = Path::new(&img.file_name).with_extension("png");
        image::GrayImage::from_raw(img.width, img.height, m)
            .unwrap()
            .save(masks.join(stem))
            .unwrap();
    }
    let c = config(
        dir.path(),
        &format!(
            "backbone: {{weights: $R/weights/reference/cvnets_deeplabv3_mobilevit_xxs.pt}}\ndata: {{images: $R/tests/fixtures/train_coco/images, masks: {}}}\nheads:\n  - {{name: scene, type: deeplabv3, init: $R/weights/reference/cvnets_deeplabv3_mobilevit_xxs.pt}}\ntrain: {{steps: 2, batch_size: 2}}\n",
            masks.display()
        ),
    );
    let s = train(
        &c,
        &HeadRegistry::with_builtins(),
        &options(&dir.path().join("out")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(s.first_loss.is_finite() && s.first_loss > 0.0);
}
