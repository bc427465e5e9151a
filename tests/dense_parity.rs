//! Parity of the SSDLite detection and DeepLabv3 segmentation heads with ml-cvnets
//! and Hugging Face, on the MobileViT-XXS reference fixtures. The network inputs are
//! made here from `image.png` by the pipeline that made the reference inputs (the
//! `hf-seg` preset; for ml-cvnets, [`cvnets_fixture_recipe`]), which must reproduce
//! them bit for bit (checked against the reference arrays' FNV-1a hashes).

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use vpipe::backbone::SourceLayout;
use vpipe::backbone::layout::CheckpointTask;
use vpipe::core::geometry::InputTransform;
use vpipe::core::result::HeadOutput;
use vpipe::heads::{LoadedModel, UpsampleConvention};
use vpipe::io::npy;
use vpipe::media::load_image;
use vpipe::preprocess::{Preprocess, PreprocessPreset, PresetRecipe};

/// FNV-1a (64-bit) of the little-endian bytes of a float array.
fn fnv1a(values: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in values.iter().flat_map(|v| v.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The reference input of `image.png` made by `recipe`, checked against its hash.
fn input(recipe: Preprocess, reference_hash: u64) -> Tensor<4> {
    let frame = load_image(&fixture("image.png")).expect("decode");
    let (planar, t) = recipe.apply(&frame).expect("preprocess");
    assert_eq!(
        fnv1a(&planar),
        reference_hash,
        "{recipe:?}: input differs from the reference"
    );
    let (w, h) = t.input_size;
    Tensor::from_data(TensorData::new(planar, [1, 3, h, w]), &test_device())
}

fn load(name: &str) -> LoadedModel {
    LoadedModel::load(&weights(name), &test_device()).expect("load")
}

/// An XXS backbone at `output_stride` built from checkpoint `name`, with the
/// parameters left for a head.
fn backbone_with_head_params(
    name: &str,
    output_stride: usize,
) -> (
    vpipe::backbone::MobileVit,
    vpipe::backbone::Params,
    vpipe::backbone::MobileVitConfig,
) {
    use vpipe::backbone::{MobileVit, MobileVitConfig, MobileVitSize, Params};
    let device = test_device();
    let file = vpipe::io::TensorFile::read(&weights(name)).expect("read");
    let canonical = vpipe::backbone::layout::to_canonical(&file).expect("canonical");
    let mut params = Params::new(name, canonical, &device);
    let config = MobileVitConfig::new(MobileVitSize::Xxs).with_output_stride(output_stride);
    let backbone = MobileVit::load(&mut params, &config).expect("backbone");
    (backbone, params, config)
}

fn check_close(name: &str, got: &[f32], fixture_name: &str, tol: f32) {
    let (_, want) = read_f32(&fixture(fixture_name));
    let d = max_abs_diff(got, &want);
    eprintln!("{name}: max |diff| {d:e}");
    assert!(d <= tol, "{name}: max |diff| {d} > {tol}");
}

#[test]
fn ssd_outputs_and_detections_match_cvnets() {
    let loaded = load("cvnets_ssd_mobilevit_xxs.pt");
    assert_eq!(loaded.layout.task, CheckpointTask::Detection);
    let x = input(
        cvnets_fixture_recipe(PreprocessPreset::CvnetsSsd),
        0x83b19dd858ea1598,
    );
    let out = loaded.model.forward_raw(x).expect("forward");
    let conf = out.get("conf_logits").expect("conf");
    let loc = out.get("loc").expect("loc");
    let anchors = out.get("anchors").expect("anchors");
    assert_eq!(conf.shape, vec![1, 3232, 81]);
    check_close(
        "conf_logits",
        &conf.data,
        "cvnets_xxs_ssd_conf_logits.npy",
        1e-4,
    );
    check_close("loc", &loc.data, "cvnets_xxs_ssd_loc.npy", 1e-4);
    check_close("anchors", &anchors.data, "cvnets_xxs_ssd_anchors.npy", 0.0);

    // Boxes in the original image's pixels (512x512 resized exactly to 320x320):
    // the head's post-processing scales its normalised boxes to a 512x512 input.
    let HeadOutput::Detection { detections } = loaded
        .model
        .head()
        .postprocess(&out.tensors, 0, &InputTransform::identity(512, 512))
        .expect("postprocess")
    else {
        panic!("not a detection output");
    };
    let labels = npy::read(&fixture("cvnets_xxs_ssd_det_labels.npy"))
        .expect("labels")
        .to_i32("l")
        .expect("i32");
    let (_, scores) = read_f32(&fixture("cvnets_xxs_ssd_det_scores.npy"));
    let (_, boxes) = read_f32(&fixture("cvnets_xxs_ssd_det_boxes_orig_px.npy"));
    assert_eq!(detections.len(), labels.len(), "detection count");
    for (i, d) in detections.iter().enumerate() {
        assert_eq!(d.class_id as i32, labels[i], "detection {i}: label");
        assert!(
            (d.score - scores[i]).abs() <= 1e-4,
            "detection {i}: score {} vs {}",
            d.score,
            scores[i]
        );
        for k in 0..4 {
            let diff = (d.bbox[k] - boxes[i * 4 + k]).abs();
            assert!(
                diff <= 0.01,
                "detection {i}: box coordinate {k} off by {diff} px"
            );
        }
        assert!(!d.label.is_empty() && d.label != "background");
    }
}

/// Pixels where two masks differ, and how many of those the reference itself decides
/// by less than `tie` (top-2 margin of its own logits, upsampled by `convention`).
fn mask_mismatch(
    convention: UpsampleConvention,
    ours: &[f32],
    reference_logits: &str,
    reference_mask: &str,
) -> (usize, usize) {
    let (s, l) = read_f32(&fixture(reference_logits));
    let logits =
        Tensor::<4>::from_data(TensorData::new(l, [s[0], s[1], s[2], s[3]]), &test_device());
    let up = convention.upsample(logits, [512, 512]);
    let [_, c, h, w] = up.dims();
    let upv = up.into_data().try_to_vec::<f32>().expect("f32");
    let want = npy::read(&fixture(reference_mask))
        .expect("mask")
        .to_u8("m")
        .expect("u8");
    let mut differ = 0;
    let mut ties = 0;
    for p in 0..h * w {
        if ours[p] as u8 != want[p] {
            differ += 1;
            let mut v: Vec<f32> = (0..c).map(|k| upv[k * h * w + p]).collect();
            v.sort_by(|a, b| b.total_cmp(a));
            if v[0] - v[1] < 1e-4 {
                ties += 1;
            }
        }
    }
    // Our upsampling of the reference's own logits gives the reference mask exactly.
    let own: Vec<u8> = (0..h * w)
        .map(|p| {
            (0..c).fold(0, |best, k| {
                if upv[k * h * w + p] > upv[best * h * w + p] {
                    k
                } else {
                    best
                }
            }) as u8
        })
        .collect();
    assert_eq!(
        own, want,
        "upsampling + argmax of the reference logits differs from the reference mask"
    );
    (differ, ties)
}

#[test]
fn deeplabv3_matches_cvnets() {
    let loaded = load("cvnets_deeplabv3_mobilevit_xxs.pt");
    assert_eq!(loaded.layout.task, CheckpointTask::Segmentation);
    let x = input(
        cvnets_fixture_recipe(PreprocessPreset::CvnetsSeg),
        0x9150f20635997d29,
    );
    let out = loaded.model.forward_raw(x).expect("forward");
    let logits = out.get("logits").expect("logits");
    assert_eq!(logits.shape, vec![1, 21, 32, 32]);
    check_close(
        "logits",
        &logits.data,
        "cvnets_xxs_seg_logits_pre_upsample.npy",
        1e-4,
    );
    // A 64x64 window (rows and columns 224..288) of the model's output upsampled
    // as ml-cvnets does.
    let up = UpsampleConvention::AlignCorners.upsample(
        Tensor::<4>::from_data(
            TensorData::new(logits.data.clone(), [1, 21, 32, 32]),
            &test_device(),
        ),
        [512, 512],
    );
    let patch = up
        .slice([0..1, 0..21, 224..288, 224..288])
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    check_close(
        "upsampled logits window",
        &patch,
        "cvnets_xxs_seg_logits_patch.npy",
        1e-4,
    );
    let mask = out.get("mask").expect("mask");
    let (differ, ties) = mask_mismatch(
        UpsampleConvention::AlignCorners,
        &mask.data,
        "cvnets_xxs_seg_logits_pre_upsample.npy",
        "cvnets_xxs_seg_mask.npy",
    );
    assert_eq!(
        differ, 0,
        "{differ} mask pixels differ ({ties} of them reference ties)"
    );
}

#[test]
fn deeplabv3_matches_huggingface() {
    let loaded = load("hf_deeplabv3_mobilevit_xxs.safetensors");
    assert_eq!(loaded.layout.source, SourceLayout::HuggingFace);
    assert_eq!(loaded.layout.task, CheckpointTask::Segmentation);
    let x = input(PreprocessPreset::HfSeg.recipe(), 0x5498e0527eccda08);
    let out = loaded.model.forward_raw(x).expect("forward");
    let logits = out.get("logits").expect("logits");
    check_close("logits", &logits.data, "hf_xxs_seg_logits.npy", 1e-4);
    let mask = out.get("mask").expect("mask");
    let (differ, ties) = mask_mismatch(
        UpsampleConvention::HalfPixel,
        &mask.data,
        "hf_xxs_seg_logits.npy",
        "hf_xxs_seg_mask.npy",
    );
    // The reference mask has one pixel (502, 376) decided by a 7e-6 margin, below
    // float32 noise: PyTorch 2.15 itself, rerun on another CPU, flips it too. Only
    // such ties may differ.
    assert_eq!(
        differ, ties,
        "{differ} mask pixels differ, only {ties} of them reference ties"
    );
    assert!(differ <= 1, "{differ} tie pixels differ");
}

#[test]
fn heads_built_through_the_registry_map_boxes_to_the_original_image() {
    use vpipe::backbone::Params;
    use vpipe::heads::{HeadContext, HeadRegistry};

    let device = test_device();
    let (backbone, mut params, config) =
        backbone_with_head_params("cvnets_ssd_mobilevit_xxs.pt", 32);
    let registry = HeadRegistry::with_builtins();
    let options = serde_json::Map::new();
    let head = registry
        .build("ssd", &mut HeadContext::new(&mut params, &config, &options))
        .expect("ssd head");
    params.finish().expect("every tensor used");
    assert_eq!(head.levels(), &[4, 5]);

    let frame = load_image(&fixture("image.png")).expect("decode");
    let recipe = cvnets_fixture_recipe(PreprocessPreset::CvnetsSsd);
    let (x, geometry) = recipe.batch(&[&frame], &device).expect("preprocess");
    let raw = head
        .forward(&backbone.forward(x).expect("features"), [320, 320])
        .expect("forward");
    let HeadOutput::Detection { detections } =
        head.postprocess(&raw, 0, &geometry[0]).expect("post")
    else {
        panic!("not detections");
    };
    let (_, boxes) = read_f32(&fixture("cvnets_xxs_ssd_det_boxes_orig_px.npy"));
    assert_eq!(detections.len() * 4, boxes.len());
    for (d, b) in detections.iter().zip(boxes.chunks_exact(4)) {
        for k in 0..4 {
            assert!((d.bbox[k] - b[k]).abs() <= 0.01, "{:?} vs {b:?}", d.bbox);
        }
    }

    let mut none = Params::synthetic(0, &device);
    let err = registry
        .build("sdd", &mut HeadContext::new(&mut none, &config, &options))
        .expect_err("unknown type");
    assert!(err.to_string().contains("unknown head type 'sdd'") && err.to_string().contains("ssd"));
    let mut r = HeadRegistry::empty();
    assert!(r.names().is_empty());
    let mut again = HeadRegistry::with_builtins();
    assert!(again.register("ssd", |_| unreachable!()).is_err());
    // A factory is a closure and may carry state: here a count of the heads built.
    let built = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&built);
    r.register("counted", move |ctx| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(vpipe::heads::HeadError::Head(format!(
            "no head on a {:?} backbone",
            ctx.backbone.size
        )))
    })
    .expect("register");
    let mut none = Params::synthetic(0, &device);
    let err = r
        .build(
            "counted",
            &mut HeadContext::new(&mut none, &config, &options),
        )
        .expect_err("the factory's own error");
    assert!(
        err.to_string().contains("no head on a Xxs backbone"),
        "{err}"
    );
    assert_eq!(built.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn odd_images_and_empty_results_are_handled() {
    let loaded = load("cvnets_ssd_mobilevit_xxs.pt");
    let device = test_device();
    let recipe = PreprocessPreset::CvnetsSsd.recipe();
    // A single pixel, and an image far from the model's square aspect ratio.
    let frames = [
        vpipe::media::Frame::new(1, 1, vec![200, 10, 10]).expect("frame"),
        vpipe::media::Frame::new(2000, 7, vec![90; 2000 * 7 * 3]).expect("frame"),
    ];
    for f in &frames {
        let (x, _) = recipe.batch(&[f], &device).expect("preprocess");
        let out = loaded.model.forward_raw(x).expect("forward");
        for t in &out.tensors {
            assert!(
                t.data.iter().all(|v| v.is_finite()),
                "{}: non-finite values",
                t.name
            );
        }
        // Boxes scaled to the image's own size.
        let HeadOutput::Detection { detections } = loaded
            .model
            .head()
            .postprocess(
                &out.tensors,
                0,
                &InputTransform::identity(f.width, f.height),
            )
            .expect("postprocess")
        else {
            panic!("not detections");
        };
        for d in &detections {
            assert!(
                d.bbox.iter().all(|v| v.is_finite())
                    && d.bbox[2] <= f.width as f32
                    && d.bbox[3] <= f.height as f32
            );
        }
    }
    // A threshold nothing passes gives an empty list, not an error.
    let strict = vpipe::heads::SsdSettings {
        conf_threshold: 1.0,
        ..Default::default()
    };
    let (backbone, mut params, config) =
        backbone_with_head_params("cvnets_ssd_mobilevit_xxs.pt", 32);
    let strict_head =
        vpipe::heads::SsdHead::load(&mut params, config.feature_channels(), strict).expect("head");
    let (x, _) = recipe.batch(&[&frames[0]], &device).expect("preprocess");
    let raw = strict_head
        .forward(&backbone.forward(x).expect("features"))
        .expect("forward");
    let anchors: Vec<[f32; 4]> = raw[2]
        .data
        .chunks_exact(4)
        .map(|b| [b[0], b[1], b[2], b[3]])
        .collect();
    let HeadOutput::Detection { detections } =
        strict_head.postprocess(&raw[0].data, &raw[1].data, &anchors, (1.0, 1.0))
    else {
        panic!("not detections");
    };
    assert!(detections.is_empty());
}

#[test]
fn segmentation_masks_come_back_at_the_original_size() {
    use vpipe::heads::{HeadContext, HeadRegistry};

    let device = test_device();
    let (backbone, mut params, config) =
        backbone_with_head_params("hf_deeplabv3_mobilevit_xxs.safetensors", 16);
    let mut options = serde_json::Map::new();
    options.insert("align_corners".into(), serde_json::Value::Bool(false));
    let head = HeadRegistry::with_builtins()
        .build(
            "deeplabv3",
            &mut HeadContext::new(&mut params, &config, &options),
        )
        .expect("head");
    params.finish().expect("every tensor used");

    let recipe = PreprocessPreset::HfSeg.recipe();
    let photo = load_image(&fixture("image.png")).expect("decode");
    let wide =
        vpipe::media::Frame::new(640, 200, photo.data[..640 * 200 * 3].to_vec()).expect("frame");
    for (frame, reference) in [(&photo, Some("hf_xxs_seg_mask.npy")), (&wide, None)] {
        let (x, geometry) = recipe.batch(&[frame], &device).expect("preprocess");
        let [_, _, h, w] = x.dims();
        let raw = head
            .forward(&backbone.forward(x).expect("features"), [h, w])
            .expect("forward");
        let HeadOutput::Segmentation {
            width,
            height,
            mask,
            areas,
        } = head.postprocess(&raw, 0, &geometry[0]).expect("post")
        else {
            panic!("not a segmentation");
        };
        assert_eq!(
            (width, height, mask.len()),
            (frame.width, frame.height, frame.width * frame.height)
        );
        assert_eq!(areas.iter().map(|a| a.pixels).sum::<usize>(), mask.len());
        if let Some(r) = reference {
            let want = npy::read(&fixture(r))
                .expect("mask")
                .to_u8("m")
                .expect("u8");
            let differ = mask.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert!(
                differ <= 1,
                "{differ} pixels differ from the reference mask"
            );
        }
    }
}

#[test]
fn deeplabv3_at_output_stride_8_matches_huggingface() {
    let device = test_device();
    let options = vpipe::heads::LoadOptions {
        output_stride: Some(8),
        ..Default::default()
    };
    let loaded = LoadedModel::load_with(
        &weights("hf_deeplabv3_mobilevit_xxs.safetensors"),
        &device,
        &options,
    )
    .expect("load");
    assert_eq!(loaded.model.backbone().config().output_stride, 8);
    let x = input(PreprocessPreset::HfSeg.recipe(), 0x5498e0527eccda08);
    let out = loaded.model.forward_raw(x).expect("forward");
    let logits = out.get("logits").expect("logits");
    assert_eq!(logits.shape, vec![1, 21, 64, 64]);
    check_close(
        "OS8 logits",
        &logits.data,
        "hf_xxs_seg_os8_logits.npy",
        1e-4,
    );
    let err = LoadedModel::load_with(
        &weights("timm_mobilevit_xxs.safetensors"),
        &device,
        &options,
    )
    .expect_err("cls");
    assert!(
        err.to_string().contains("only be chosen for segmentation"),
        "{err}"
    );
}

#[test]
fn parity_holds_through_burns_generic_ops() {
    rerun_through_generic_kernels("parity_holds_through_burns_generic_ops");
}
