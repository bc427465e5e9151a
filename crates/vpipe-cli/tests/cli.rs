//! The `vpipe` binary end to end: outputs, exit codes, and clear errors on bad input.

use std::path::PathBuf;
use std::process::{Command, Output};
use vpipe_preprocess::PresetRecipe;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vpipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpipe"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run vpipe")
}

/// [`vpipe`] with the environment variable `key` set to `value`.
fn vpipe_with_env(args: &[&str], key: &str, value: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpipe"))
        .args(args)
        .env(key, value)
        .current_dir(root())
        .output()
        .expect("run vpipe")
}

/// A fresh temporary folder for one test, removed when the guard drops.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("vpipe-cli-{name}-"))
        .tempdir()
        .expect("temp dir")
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {err}");
    assert!(err.contains(needle), "stderr lacks '{needle}': {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn infer_writes_logits_matching_the_reference() {
    let out_dir_tmp = temp_dir("infer");
    let out_dir = out_dir_tmp.path();
    let out = infer(
        "weights/reference/timm_mobilevit_xxs.safetensors",
        "tests/fixtures/timm_xxs_input.npy",
        out_dir,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ok(&out);
    assert!(
        stdout.contains("timm layout, mobilevit_xxs classification"),
        "{stdout}"
    );
    let got = vpipe_io::npy::read(&out_dir.join("logits.npy")).expect("logits.npy");
    assert_eq!(got.shape, vec![1, 1000]);
    let want =
        vpipe_io::npy::read(&root().join("tests/fixtures/timm_xxs_logits.npy")).expect("ref");
    let (g, w) = (
        got.to_f32("g").expect("f32"),
        want.to_f32("w").expect("f32"),
    );
    let diff = vpipe_io::compare::max_abs_diff(&g, &w).expect("comparable logits");
    assert!(diff <= 1e-4, "max |diff| {diff}");
}

/// `vpipe infer` with `weights` on `tensor`, writing into `out`.
fn infer(weights: &str, tensor: &str, out: &std::path::Path) -> Output {
    infer_at_level(weights, tensor, out, None)
}

/// [`infer`] with the CPU kernels' vector unit capped at `simd` (`VPIPE_SIMD`).
fn infer_at_level(
    weights: &str,
    tensor: &str,
    out: &std::path::Path,
    simd: Option<&str>,
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vpipe"));
    cmd.args([
        "infer",
        "--weights",
        weights,
        "--tensor",
        tensor,
        "--out",
        out.to_str().expect("utf8"),
    ])
    .current_dir(root());
    if let Some(level) = simd {
        cmd.env(vpipe_simd::SIMD_ENV, level);
    }
    cmd.output().expect("run vpipe")
}

/// Largest absolute difference between two `.npy` float arrays of the same shape.
fn max_diff(a: &std::path::Path, b: &std::path::Path) -> f32 {
    let (a, b) = (
        vpipe_io::npy::read(a).expect("npy"),
        vpipe_io::npy::read(b).expect("npy"),
    );
    assert_eq!(a.shape, b.shape);
    let (a, b) = (a.to_f32("a").expect("f32"), b.to_f32("b").expect("f32"));
    vpipe_io::compare::max_abs_diff(&a, &b).expect("comparable arrays")
}

/// The AVX2 and baseline versions of the CPU kernels (this machine's widest runs in
/// the other tests) give the reference logits too: cvnets classification against its
/// reference, and DeepLabv3 (dilated convolutions) against the widest version.
#[test]
fn narrower_vector_units_give_the_same_outputs() {
    let dir_tmp = temp_dir("simd");
    let dir = dir_tmp.path();
    let frame = vpipe_media::load_image(&root().join("tests/fixtures/image.png")).expect("decode");
    let (planar, t) = vpipe_preprocess::PreprocessPreset::HfSeg
        .recipe()
        .apply(&frame)
        .expect("preprocess");
    let seg_input = dir.join("seg_input.npy");
    let (w, h) = t.input_size;
    std::fs::write(
        &seg_input,
        vpipe_io::npy::encode_f32(&[1, 3, h, w], &planar),
    )
    .expect("write");
    let seg_weights = "weights/reference/hf_deeplabv3_mobilevit_xxs.safetensors";
    let widest = dir.join("widest");
    let out = infer(seg_weights, seg_input.to_str().expect("utf8"), &widest);
    assert_ok(&out);
    for level in ["avx2", "baseline"] {
        let cls = dir.join(format!("cls-{level}"));
        let out = infer_at_level(
            "weights/reference/cvnets_mobilevit_xxs.pt",
            "tests/fixtures/cvnets_xxs_cls_input.npy",
            &cls,
            Some(level),
        );
        assert_ok(&out);
        let diff = max_diff(
            &cls.join("logits.npy"),
            &root().join("tests/fixtures/cvnets_xxs_cls_logits.npy"),
        );
        assert!(diff <= 1e-4, "{level}: classification max |diff| {diff}");
        let seg = dir.join(format!("seg-{level}"));
        let out = infer_at_level(
            seg_weights,
            seg_input.to_str().expect("utf8"),
            &seg,
            Some(level),
        );
        assert_ok(&out);
        let diff = max_diff(&seg.join("logits.npy"), &widest.join("logits.npy"));
        assert!(diff <= 1e-4, "{level}: segmentation max |diff| {diff}");
    }
}

#[test]
fn infer_rejects_bad_tensors() {
    let dir_tmp = temp_dir("bad-npy");
    let dir = dir_tmp.path();
    let timm = "weights/reference/timm_mobilevit_xxs.safetensors";
    // Wrong shape: logits instead of an image batch.
    let out = infer(timm, "tests/fixtures/timm_xxs_logits.npy", dir);
    assert_clean_failure(&out, "(N, 3, H, W)");
    // Wrong dtype.
    let u8_file = dir.join("u8.npy");
    std::fs::write(
        &u8_file,
        vpipe_io::npy::encode_u8(&[1, 3, 64, 64], &[0; 3 * 64 * 64]),
    )
    .expect("write");
    let out = infer(timm, u8_file.to_str().expect("utf8"), dir);
    assert_clean_failure(&out, "expected float32");
    // Too small an image.
    let tiny = dir.join("tiny.npy");
    std::fs::write(&tiny, vpipe_io::npy::encode_f32(&[1, 3, 8, 8], &[0.5; 192])).expect("write");
    let out = infer(timm, tiny.to_str().expect("utf8"), dir);
    assert_clean_failure(&out, "smaller than the 32x32 minimum");
    // Not a checkpoint.
    let out = infer(
        "tests/fixtures/image.png",
        "tests/fixtures/timm_xxs_input.npy",
        dir,
    );
    assert_clean_failure(&out, "not a checkpoint");
}

#[test]
fn classify_prints_top_k_and_reports_bad_images() {
    let dir_tmp = temp_dir("classify");
    let dir = dir_tmp.path();
    let corrupt = dir.join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 not really a jpeg").expect("write");
    let out = vpipe(&[
        "classify",
        "--weights",
        "weights/reference/cvnets_mobilevit_xxs.pt",
        "--json",
        "assets/squirrel_cls.jpg",
        corrupt.to_str().expect("utf8"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next().expect("one result line");
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(v["preset"], "cvnets-cls");
    assert_eq!(v["top_k"].as_array().expect("top_k").len(), 5);
    assert_clean_failure(&out, "corrupt.jpg");
}

#[test]
fn classify_saves_annotated_copies_and_never_overwrites_inputs() {
    let dir_tmp = temp_dir("save");
    let dir = dir_tmp.path();
    let photo = dir.join("photo.png");
    std::fs::copy(root().join("tests/fixtures/image.png"), &photo).expect("copy");
    let before = std::fs::read(&photo).expect("read");
    let weights = "weights/reference/cvnets_mobilevit_xxs.pt";
    let out_dir = dir.join("out");
    let out = vpipe(&[
        "classify",
        "--weights",
        weights,
        "--save",
        out_dir.to_str().expect("utf8"),
        photo.to_str().expect("utf8"),
    ]);
    assert_ok(&out);
    let saved = image::open(out_dir.join("photo.png"))
        .expect("annotated image")
        .to_rgb8();
    let original = image::open(&photo).expect("photo").to_rgb8();
    assert_eq!(saved.dimensions(), original.dimensions());
    assert_ne!(
        saved.get_pixel(5, 5),
        original.get_pixel(5, 5),
        "no banner drawn"
    );
    assert_eq!(
        saved.get_pixel(256, 400),
        original.get_pixel(256, 400),
        "below the banner must be unchanged"
    );
    // Saving into the input's own folder would overwrite it: refused, input intact.
    let out = vpipe(&[
        "classify",
        "--weights",
        weights,
        "--save",
        dir.to_str().expect("utf8"),
        photo.to_str().expect("utf8"),
    ]);
    assert_clean_failure(&out, "refusing to overwrite the input file");
    assert_eq!(std::fs::read(&photo).expect("read"), before);
}

/// `vpipe bench train` on the classification head: one JSON object; with the feature
/// cache the steps see the same features, so the loss after them is the same.
#[test]
fn bench_train_reports_json_and_the_cache_changes_no_result() {
    let run = |cache: bool| -> serde_json::Value {
        let mut args = vec![
            "bench",
            "train",
            "--head",
            "classification",
            "--batch",
            "2",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--json",
        ];
        if cache {
            args.push("--cache");
        }
        let out = vpipe(&args);
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let (plain, cached) = (run(false), run(true));
    for v in [&plain, &cached] {
        assert_eq!(v["head"], "classification");
        assert_eq!(v["input_size"], serde_json::json!([256, 256]));
        assert_eq!(v["batch"], 2);
        assert_eq!(v["steps"], 2);
        assert!(v["images_per_s"].as_f64().expect("images/s") > 0.0);
        assert!(v["loss"].as_f64().expect("loss").is_finite());
    }
    assert!(plain["median_backbone_ms"].as_f64().is_some());
    assert!(cached["median_backbone_ms"].is_null());
    assert_eq!(plain["loss"], cached["loss"]);
    let out = vpipe(&[
        "bench",
        "train",
        "--head",
        "ssd",
        "--weights",
        "missing.pt",
        "--steps",
        "1",
    ]);
    assert_clean_failure(&out, "missing.pt");
}

#[test]
fn bench_reports_json() {
    let out = vpipe(&[
        "bench",
        "--arch",
        "mobilevit_xxs",
        "--size",
        "64",
        "--batch",
        "2",
        "--threads",
        "1",
        "--warmup",
        "1",
        "--iters",
        "3",
        "--device",
        "cpu",
        "--json",
    ]);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "arch",
            "device",
            "images_per_s",
            "input",
            "iters",
            "kernels",
            "mean_ms",
            "median_ms",
            "p90_ms",
            "precision",
            "products",
            "task",
            "threads"
        ]
    );
    assert_eq!(v["precision"], "fp32");
    assert_eq!(v["products"], "fma");
    assert_eq!(v["arch"], "mobilevit_xxs");
    assert_eq!(v["task"], "classification");
    assert_eq!(v["input"], serde_json::json!([2, 3, 64, 64]));
    assert_eq!(v["threads"], 1);
    assert_eq!(v["iters"], 3);
    assert_eq!(v["device"], "cpu");
    let ms = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k}"));
    let (median, p90, mean) = (ms("median_ms"), ms("p90_ms"), ms("mean_ms"));
    assert!(median > 0.0 && p90 >= median && mean > 0.0, "{v}");
    // Throughput is the batch over the median time.
    let rate = ms("images_per_s");
    assert!((rate - 2000.0 / median).abs() <= 1e-6 * rate, "{v}");
}

/// `vpipe bench --precision bf16` reports the precision that ran: bf16 where the
/// processor has AVX512_BF16, and fp32 with a warning where it lacks it (here made
/// to by capping the vector unit at AVX2).
#[test]
fn bench_precision_falls_back_with_a_warning() {
    let args = [
        "bench",
        "--arch",
        "mobilevit_xxs",
        "--size",
        "64",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--precision",
        "bf16",
        "--json",
    ];
    let capped = vpipe_with_env(&args, "VPIPE_SIMD", "avx2");
    assert_ok(&capped);
    let v: serde_json::Value = serde_json::from_slice(&capped.stdout).expect("json");
    assert_eq!(v["precision"], "fp32");
    assert_eq!(v["products"], "fma");
    let err = String::from_utf8_lossy(&capped.stderr);
    assert!(err.contains("AVX512_BF16") && err.contains("fp32"), "{err}");
    let out = vpipe(&args);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let has_bf16 = std::arch::is_x86_feature_detected!("avx512bf16")
        && std::arch::is_x86_feature_detected!("avx512bw");
    assert_eq!(v["precision"], if has_bf16 { "bf16" } else { "fp32" });
    // bf16 on AMX where the processor has it, unless VPIPE_AMX turns it off.
    let has_amx = has_bf16 && vpipe_backbone::amx::available();
    let unit = match (has_bf16, has_amx) {
        (false, _) => "fma",
        (true, true) => "amx",
        (true, false) => "avx512_bf16",
    };
    assert_eq!(v["products"], unit);
    let off = vpipe_with_env(&args, vpipe_backbone::amx::AMX_ENV, "off");
    assert_ok(&off);
    let v: serde_json::Value = serde_json::from_slice(&off.stdout).expect("json");
    assert_eq!(v["products"], if has_bf16 { "avx512_bf16" } else { "fma" });
    // int8 needs AVX512_VNNI as well, and falls back to bf16, then fp32.
    let int8_args = args.map(|a| if a == "bf16" { "int8" } else { a });
    let capped = vpipe_with_env(&int8_args, "VPIPE_SIMD", "avx2");
    assert_ok(&capped);
    let v: serde_json::Value = serde_json::from_slice(&capped.stdout).expect("json");
    assert_eq!(v["precision"], "fp32");
    let err = String::from_utf8_lossy(&capped.stderr);
    assert!(
        err.contains("AVX512_VNNI") && err.contains("running in fp32"),
        "{err}"
    );
    let out = vpipe(&int8_args);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let has_int8 = has_bf16 && std::arch::is_x86_feature_detected!("avx512vnni");
    let (precision, unit) = match (has_int8, has_bf16) {
        (true, _) => ("int8", "avx512_vnni"),
        (false, true) => ("bf16", unit),
        (false, false) => ("fp32", "fma"),
    };
    assert_eq!(
        (&v["precision"], &v["products"]),
        (&precision.into(), &unit.into())
    );
    let out = vpipe(&["bench", "--precision", "int4", "--iters", "1"]);
    assert_clean_failure(&out, "unknown precision 'int4'");
    let out = vpipe(&[
        "bench",
        "--kernels",
        "generic",
        "--precision",
        "bf16",
        "--iters",
        "1",
    ]);
    assert_clean_failure(&out, "fused kernels only");
}

/// `vpipe run --precision bf16` (and `int8`) gives the fp32 run's classes, with
/// logits within the rounding of the reduced inputs.
#[test]
fn run_in_bf16_and_int8_agrees_with_fp32() {
    let top = |precision: &str| {
        let dir = temp_dir(&format!("precision-{precision}"));
        let out = vpipe(&[
            "run",
            "pipelines/classify.yaml",
            "--input",
            "tests/fixtures/image.png",
            "--out",
            dir.path().to_str().expect("utf-8"),
            "--no-progress",
            "--precision",
            precision,
        ]);
        assert_ok(&out);
        let text = std::fs::read_to_string(dir.path().join("results.jsonl")).expect("results");
        let v: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        v["heads"][0]["top_k"]
            .as_array()
            .expect("top_k")
            .iter()
            .map(|c| {
                (
                    c["class_id"].as_u64().expect("id"),
                    c["logit"].as_f64().expect("logit"),
                )
            })
            .collect::<Vec<(u64, f64)>>()
    };
    let fp32 = top("fp32");
    for (precision, tolerance) in [("bf16", 2e-2), ("int8", 3e-2)] {
        let got = top(precision);
        assert_eq!(fp32[0].0, got[0].0, "{precision}: {fp32:?} vs {got:?}");
        let rel = (fp32[0].1 - got[0].1).abs() / fp32[0].1.abs();
        assert!(rel < tolerance, "{precision}: {fp32:?} vs {got:?}");
    }
}

#[test]
fn infer_writes_detection_and_segmentation_outputs() {
    let dir_tmp = temp_dir("dense");
    let dir = dir_tmp.path();
    let frame = vpipe_media::load_image(&root().join("tests/fixtures/image.png")).expect("decode");
    for (weights, preset, files) in [
        (
            "weights/reference/cvnets_ssd_mobilevit_xxs.pt",
            vpipe_preprocess::PreprocessPreset::CvnetsSsd,
            &[
                "conf_logits.npy",
                "loc.npy",
                "anchors.npy",
                "detections.json",
            ][..],
        ),
        (
            "weights/reference/hf_deeplabv3_mobilevit_xxs.safetensors",
            vpipe_preprocess::PreprocessPreset::HfSeg,
            &["logits.npy", "mask.npy"][..],
        ),
    ] {
        // The reference SSD input was made with ml-cvnets' PIL pipeline (RGB,
        // Pillow bicubic), not the v0.1 OpenCV one of the cvnets-ssd preset.
        let recipe = if preset == vpipe_preprocess::PreprocessPreset::CvnetsSsd {
            vpipe_preprocess::Preprocess {
                kernel: vpipe_preprocess::resize::ResizeKernel::Pillow,
                filter: vpipe_preprocess::resize::Filter::Bicubic,
                channels: vpipe_media::ChannelOrder::Rgb,
                ..preset.recipe()
            }
        } else {
            preset.recipe()
        };
        let (planar, t) = recipe.apply(&frame).expect("preprocess");
        let input = dir.join(format!("{preset}.npy"));
        let (w, h) = t.input_size;
        std::fs::write(&input, vpipe_io::npy::encode_f32(&[1, 3, h, w], &planar)).expect("write");
        let out_dir = dir.join(preset.name());
        let out = infer(weights, input.to_str().expect("utf8"), &out_dir);
        assert_ok(&out);
        for f in files {
            assert!(out_dir.join(f).is_file(), "{weights}: {f} not written");
        }
    }
    let dets: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("cvnets-ssd/detections.json")).expect("json"),
    )
    .expect("parse");
    let list = dets[0]["result"]["detections"]
        .as_array()
        .expect("detections");
    // The reference's detections (ml-cvnets), boxes in input pixels.
    let fixture = |name: &str| {
        vpipe_io::npy::read(&root().join("tests/fixtures").join(name)).expect("fixture")
    };
    let labels = fixture("cvnets_xxs_ssd_det_labels.npy")
        .to_i32("labels")
        .expect("i32");
    let scores = fixture("cvnets_xxs_ssd_det_scores.npy")
        .to_f32("scores")
        .expect("f32");
    let boxes = fixture("cvnets_xxs_ssd_det_boxes_input_px.npy")
        .to_f32("boxes")
        .expect("f32");
    assert_eq!(list.len(), labels.len());
    for (i, d) in list.iter().enumerate() {
        assert_eq!(d["class_id"], labels[i], "detection {i}");
        let score = d["score"].as_f64().expect("score") as f32;
        assert!((score - scores[i]).abs() <= 1e-4, "detection {i}: {score}");
        let bbox: Vec<f32> = d["bbox"]
            .as_array()
            .expect("bbox")
            .iter()
            .map(|v| v.as_f64().expect("number") as f32)
            .collect();
        let d = vpipe_io::compare::max_abs_diff(&bbox, &boxes[4 * i..4 * i + 4]).expect("box");
        assert!(d <= 0.01, "detection {i}: box off by {d}");
    }
    // The mask equals the reference's but for the one pixel the reference itself
    // decides by a 7e-6 margin (see tests/dense_parity.rs).
    let mask = vpipe_io::npy::read(&dir.join("hf-seg/mask.npy")).expect("mask");
    assert_eq!(mask.shape, vec![1, 512, 512]);
    let mask = mask.to_u8("mask").expect("u8");
    let want = fixture("hf_xxs_seg_mask.npy").to_u8("mask").expect("u8");
    assert_eq!(mask.len(), want.len());
    let differing: Vec<(usize, usize)> = (0..mask.len())
        .filter(|&p| mask[p] != want[p])
        .map(|p| (p / 512, p % 512))
        .collect();
    assert!(
        differing.is_empty() || differing == [(502, 376)] || differing == [(376, 502)],
        "{differing:?}"
    );
}

#[test]
fn validate_inspect_and_run_pipelines() {
    let dir_tmp = temp_dir("pipelines");
    let dir = dir_tmp.path();
    // A misspelt option: located error with a hint, non-zero exit.
    let bad = dir.join("bad.yaml");
    let weights = root().join("weights/reference/cvnets_ssd_mobilevit_xxs.pt");
    std::fs::write(
        &bad,
        format!(
            "backbones:\n  main:\n    weights: {}\nheads:\n  - name: d\n    type: ssd\n    options:\n      conf_treshold: 0.5\n",
            weights.display()
        ),
    )
    .unwrap();
    let out = vpipe(&["validate", bad.to_str().unwrap()]);
    assert_clean_failure(
        &out,
        "bad.yaml:8:7: heads[0].options.conf_treshold: unknown option 'conf_treshold' for the ssd head (hint: did you mean 'conf_threshold'?)",
    );
    let out = vpipe(&["validate", "pipelines/multitask.yaml"]);
    assert_ok(&out);
    let out = vpipe(&["inspect", "pipelines/multitask.yaml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("backbone passes per frame: 3"), "{text}");
    assert_clean_failure(&vpipe(&["validate", "pipelines/nope.yaml"]), "nope.yaml");

    // A folder with one unreadable image: the good one is written, the run fails.
    let inputs = dir.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::copy(
        root().join("assets/squirrel_cls.jpg"),
        inputs.join("good.jpg"),
    )
    .unwrap();
    std::fs::write(inputs.join("bad.png"), b"not a png").unwrap();
    let out_dir = dir.join("out");
    let out = vpipe(&[
        "run",
        "pipelines/classify.yaml",
        "--input",
        inputs.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    assert_clean_failure(&out, "1 of the inputs failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.png"), "{err}");
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(figures["frames"], 1);
    assert_eq!(figures["failed"], 1);
    assert_eq!(figures["backbone_runs"], 1);
    assert!(out_dir.join("good.jpg").is_file());
    assert!(out_dir.join("results.jsonl").is_file());
}

/// A video cut short: the frames before the cut are processed, the rest are counted
/// as skipped; the log stays short (a few warnings, no line per damaged packet from
/// FFmpeg, no colour codes when redirected) and stdout keeps only the JSON.
#[test]
fn a_truncated_video_is_reported_briefly() {
    let dir_tmp = temp_dir("truncated");
    let dir = dir_tmp.path();
    let video = dir.join("cut.mp4");
    let bytes = std::fs::read(root().join("assets/street.mp4")).unwrap();
    std::fs::write(&video, &bytes[..bytes.len() / 4]).unwrap();
    let out_dir = dir.join("out");
    let out = vpipe(&[
        "run",
        "pipelines/detect.yaml",
        "--input",
        video.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    assert_ok(&out);
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (frames, skipped) = (
        figures["frames"].as_u64().unwrap(),
        figures["skipped_frames"].as_u64().unwrap(),
    );
    assert!(frames > 0 && skipped > 0, "{figures}");
    assert_eq!(frames + skipped, 200, "{figures}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.matches("skipping a frame").count() <= 3,
        "more than a few warnings: {err}"
    );
    assert!(
        !err.contains("partial file") && !err.contains('\x1b'),
        "{err}"
    );
    assert!(out_dir.join("cut_annotated.mp4").is_file());
}

#[test]
fn device_flag_selects_the_backend_and_names_missing_features() {
    let dir_tmp = temp_dir("device");
    let dir = dir_tmp.path();
    // `--device cpu` through infer and classify.
    let out = vpipe(&[
        "infer",
        "--weights",
        "weights/reference/timm_mobilevit_xxs.safetensors",
        "--tensor",
        "tests/fixtures/timm_xxs_input.npy",
        "--out",
        dir.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_ok(&out);
    assert!(dir.join("logits.npy").is_file());
    let out = vpipe(&[
        "classify",
        "--weights",
        "weights/reference/cvnets_mobilevit_xxs.pt",
        "--device",
        "cpu",
        "--json",
        "assets/squirrel_cls.jpg",
    ]);
    assert_ok(&out);
    // Unknown names are refused by the argument parser.
    let out = vpipe(&["bench", "--device", "gpu", "--iters", "1"]);
    assert_clean_failure(&out, "unknown device 'gpu'");
    // A backend this build lacks: the error names the feature.
    if !cfg!(feature = "cuda") {
        let out = vpipe(&["bench", "--device", "cuda:0", "--iters", "1"]);
        assert_clean_failure(
            &out,
            "device 'cuda:0' needs vpipe built with --features cuda",
        );
    }
    // A pipeline asking for a GPU this build lacks: located error, unless
    // `--device cpu` overrides the key.
    let yaml = dir.join("gpu.yaml");
    let weights = root().join("weights/reference/cvnets_mobilevit_xxs.pt");
    std::fs::write(
        &yaml,
        format!(
            "device: cuda\nbackbones:\n  main:\n    weights: {}\nheads:\n  - {{name: c, type: classification}}\n",
            weights.display()
        ),
    )
    .unwrap();
    if !cfg!(feature = "cuda") {
        let out = vpipe(&["validate", yaml.to_str().unwrap()]);
        assert_clean_failure(
            &out,
            "gpu.yaml:1:1: device: device 'cuda' needs vpipe built with --features cuda",
        );
    }
    let out_dir = dir.join("out");
    let out = vpipe(&[
        "run",
        yaml.to_str().unwrap(),
        "--input",
        "assets/squirrel_cls.jpg",
        "--out",
        out_dir.to_str().unwrap(),
        "--device",
        "cpu",
        "--no-progress",
        "--json",
    ]);
    assert_ok(&out);
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(figures["device"], "cpu");
    assert_eq!(figures["frames"], 1);
}

/// `vpipe weights ARGS` with the weights cache in `cache`, offline.
fn vpipe_weights(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpipe"))
        .arg("weights")
        .args(args)
        .current_dir(root())
        .env("VPIPE_CACHE", cache)
        .env("VPIPE_OFFLINE", "1")
        .output()
        .expect("run vpipe")
}

#[test]
fn weights_verify_reads_back_shipped_and_cached_files() {
    let tmp = temp_dir("weights-verify");
    let cache = tmp.path().join("cache");
    let out = vpipe_weights(&["verify"], &cache);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout
            .matches("ok (sha256 in the registry, reads back as mobilevit_xxs ")
            .count(),
        7,
        "{stdout}"
    );

    // A file cut short, put in the cache by hand, is not usable and gets no hash.
    let reference =
        std::fs::read(root().join("weights/reference/cvnets_mobilevit_xxs.pt")).expect("reference");
    let cached = cache.join("cvnets/mobilevit_xxs/mobilevit_xxs.pt");
    std::fs::create_dir_all(cached.parent().expect("parent")).expect("mkdir");
    std::fs::write(&cached, &reference[..reference.len() / 2]).expect("write");
    let out = vpipe_weights(&["verify", "cvnets/mobilevit_xxs"], &cache);
    assert_clean_failure(&out, "not usable checkpoints");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cvnets/mobilevit_xxs\tNOT USABLE: ")
            && stdout.contains(
                "is not a usable mobilevit_xxs classification (cvnets layout) checkpoint"
            ),
        "{stdout}"
    );
    assert!(!cache.join("hashes.json").exists(), "a hash was recorded");

    // The whole file is recorded on first use, then checked against that hash.
    std::fs::write(&cached, &reference).expect("write");
    let out = vpipe_weights(&["verify", "cvnets/mobilevit_xxs"], &cache);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok (reads back as mobilevit_xxs classification (cvnets layout); no hash was known: recorded "),
        "{stdout}"
    );
    let out = vpipe_weights(&["verify"], &cache);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cvnets/mobilevit_xxs\tok (recorded sha256, reads back as"),
        "{stdout}"
    );
}

#[test]
fn weights_list_shows_legacy_urls_and_licences() {
    let tmp = temp_dir("weights-list");
    let cache = tmp.path().join("cache");
    let out = vpipe_weights(&["list"], &cache);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // name task arch layout format sha256 cached legacy licence
    assert_eq!(row("cvnets/ssd_mobilevit_xxs_320")[7], "yes");
    assert_eq!(row("cvnets/deeplabv3_mobilevit_s_voc")[7], "yes");
    assert_eq!(row("cvnets/mobilevit_xxs")[7], "-");
    assert_eq!(row("hf/apple/mobilevit-small")[5], "pinned");
    assert_eq!(row("hf/apple/deeplabv3-mobilevit-small")[8], "apple-amlr");
    assert!(
        stdout.contains("legacy: the URLs of cvnets/ssd_mobilevit_xxs_320, ")
            && stdout.contains(
                "documented only in ml-cvnets examples/README-mobilevit.md at tag cvnets-v0.1"
            ),
        "{stdout}"
    );

    let out = vpipe_weights(&["list", "--json"], &cache);
    assert_ok(&out);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let ssd = lines
        .iter()
        .find(|l| l["name"] == "cvnets/ssd_mobilevit_s_320")
        .expect("ssd");
    assert_eq!(ssd["legacy"], true);
    assert!(ssd["source"].as_str().expect("source").contains("d38a116"));
    let timm = lines
        .iter()
        .find(|l| l["name"] == "timm/mobilevit_s.cvnets_in1k")
        .expect("timm");
    assert_eq!(timm["legacy"], false);
    assert_eq!(
        timm["sha256"],
        "87f5585cb61814a5e18920d556772ed9c3af6c9ad72b6cf798c654021c306f81"
    );
}

/// `vpipe infer --output-stride 8` runs a DeepLabv3 checkpoint at output stride 8:
/// the logits equal Hugging Face's at that stride (make_reference.py seg-os8).
#[test]
fn infer_at_output_stride_8_matches_the_reference() {
    let tmp = temp_dir("os8");
    let dir = tmp.path();
    let input = dir.join("inputs");
    let out = vpipe(&[
        "preprocess",
        "--preset",
        "hf-seg",
        "--out",
        input.to_str().expect("utf8"),
        "tests/fixtures/image.png",
    ]);
    assert_ok(&out);
    let out_dir = dir.join("os8");
    let out = vpipe(&[
        "infer",
        "--weights",
        "weights/reference/hf_deeplabv3_mobilevit_xxs.safetensors",
        "--tensor",
        input.join("image.npy").to_str().expect("utf8"),
        "--out",
        out_dir.to_str().expect("utf8"),
        "--output-stride",
        "8",
    ]);
    assert_ok(&out);
    let got = vpipe_io::npy::read(&out_dir.join("logits.npy")).expect("logits");
    assert_eq!(got.shape, vec![1, 21, 64, 64]);
    let d = max_diff(
        &out_dir.join("logits.npy"),
        &root().join("tests/fixtures/hf_xxs_seg_os8_logits.npy"),
    );
    assert!(d <= 1e-4, "max |diff| {d}");
    // Only segmentation checkpoints take an output stride.
    let out = vpipe(&[
        "infer",
        "--weights",
        "weights/reference/timm_mobilevit_xxs.safetensors",
        "--tensor",
        "tests/fixtures/timm_xxs_input.npy",
        "--out",
        dir.join("x").to_str().expect("utf8"),
        "--output-stride",
        "8",
    ]);
    assert_clean_failure(&out, "only be chosen for segmentation checkpoints");
}

/// Random-initialised reference weights are named as such on the terminal and in
/// every result; other weights are not.
#[test]
fn random_reference_weights_are_flagged_and_others_are_not() {
    let tmp = temp_dir("provenance");
    let dir = tmp.path();
    let reference = root().join("weights/reference/timm_mobilevit_xxs.safetensors");
    // The same network with one weight nudged: no longer the shipped file.
    let mut bytes = std::fs::read(&reference).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let other = dir.join("tuned.safetensors");
    std::fs::write(&other, &bytes).expect("write");
    for (weights, flagged) in [(reference.as_path(), true), (other.as_path(), false)] {
        let out = vpipe(&[
            "classify",
            "--weights",
            weights.to_str().expect("utf8"),
            "--json",
            "assets/squirrel_cls.jpg",
        ]);
        assert_ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        assert_eq!(
            err.contains("random-initialised reference weights"),
            flagged,
            "{}: {err}",
            weights.display()
        );
        assert_eq!(
            line["weights_note"],
            if flagged {
                serde_json::json!("random-initialised reference weights, not a trained model")
            } else {
                serde_json::Value::Null
            },
            "{}",
            weights.display()
        );
    }
    // The same in a pipeline's results.
    let pipeline = dir.join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "backbones:\n  main:\n    weights: {}\nheads:\n  - {{name: c, type: classification}}\n",
            other.display()
        ),
    )
    .expect("write");
    let out_dir = dir.join("out");
    let out = vpipe(&[
        "run",
        pipeline.to_str().expect("utf8"),
        "--input",
        "assets/squirrel_cls.jpg",
        "--out",
        out_dir.to_str().expect("utf8"),
        "--no-progress",
    ]);
    assert_ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("random-initialised"));
    let results = std::fs::read_to_string(out_dir.join("results.jsonl")).expect("results");
    assert!(!results.contains("weights_note"), "{results}");
    let out = vpipe(&[
        "run",
        "pipelines/classify.yaml",
        "--input",
        "assets/squirrel_cls.jpg",
        "--out",
        dir.join("out2").to_str().expect("utf8"),
        "--no-progress",
    ]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("random-initialised"));
    let results = std::fs::read_to_string(dir.join("out2/results.jsonl")).expect("results");
    assert!(
        results.contains(
            "\"weights_note\":\"random-initialised reference weights, not a trained model\""
        ),
        "{results}"
    );
}

/// What a run cannot do as asked is said, not left silent: a JPEG cut short is
/// used with a warning naming it, COCO output asked for a video, and a pipeline
/// whose outputs are all off.
#[test]
fn runs_say_what_they_cannot_do_as_asked() {
    let tmp = temp_dir("surprises");
    let dir = tmp.path();
    let photo = std::fs::read(root().join("assets/squirrel_cls.jpg")).expect("photo");
    let cut = dir.join("cut.jpg");
    std::fs::write(&cut, &photo[..photo.len() * 3 / 5]).expect("write");
    let out = vpipe(&[
        "run",
        "pipelines/classify.yaml",
        "--input",
        cut.to_str().expect("utf8"),
        "--out",
        dir.join("out").to_str().expect("utf8"),
        "--no-progress",
    ]);
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.jpg") && err.contains("end-of-image marker"),
        "{err}"
    );

    let weights = root().join("weights/reference/cvnets_ssd_mobilevit_xxs.pt");
    for (name, output, warning) in [
        (
            "coco.yaml",
            "output: {coco: true}\n",
            "COCO detections are written for image inputs only",
        ),
        (
            "nothing.yaml",
            "output: {annotated: false, results: false, coco: false}\n",
            "every output is off",
        ),
    ] {
        let pipeline = dir.join(name);
        std::fs::write(
            &pipeline,
            format!(
                "backbones:\n  main:\n    weights: {}\nheads:\n  - {{name: d, type: ssd}}\n{output}",
                weights.display()
            ),
        )
        .expect("write");
        let out = vpipe(&[
            "run",
            pipeline.to_str().expect("utf8"),
            "--input",
            "assets/street.mp4",
            "--max-frames",
            "2",
            "--out",
            dir.join(name).with_extension("out").to_str().expect("utf8"),
            "--no-progress",
        ]);
        assert_ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(warning), "{name}: {err}");
    }
}
