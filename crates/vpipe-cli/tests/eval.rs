//! `vpipe eval` end to end: the numbers of pycocotools and numpy on the fixtures
//! (`scripts/make_eval_reference.py`), the files --out writes, pipeline runs over small
//! datasets, and clear errors on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/eval")
}

fn vpipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpipe"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run vpipe")
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    // 1 for an error, 2 for a usage error (clap); never 101, an internal error.
    assert!(matches!(out.status.code(), Some(1 | 2)), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks '{needle}': {err}");
    }
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("reference");
    serde_json::from_str(&text).expect("json")
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn detection_json_equals_pycocotools_and_out_has_the_plots() {
    let want = reference("coco_eval_reference.json");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let gt = fixtures().join("instances.json");
    let dets = fixtures().join("dets_mixed.json");
    let out = vpipe(&[
        "eval",
        "detection",
        "--annotations",
        p(&gt),
        "--detections",
        p(&dets),
        "--json",
        "--out",
        p(out_dir.path()),
    ]);
    let got = ok_json(&out);
    let names = [
        "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
    ];
    for (i, name) in names.iter().enumerate() {
        let (g, w) = (
            got[name].as_f64().expect(name),
            want["mixed"]["stats"][i].as_f64().expect("stat"),
        );
        assert!((g - w).abs() <= 1e-6, "{name}: {g} != {w}");
    }
    let person = got["per_class_AP"]["person"].as_f64().expect("person");
    assert!((person - want["mixed"]["per_class_ap"]["1"].as_f64().expect("ap")).abs() <= 1e-6);
    // The unknown category of the mixed set is reported, not fatal.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("category 999"), "{err}");
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join("metrics.json")).expect("metrics"),
    )
    .expect("json");
    assert_eq!(written, got);
    assert!(image::open(out_dir.path().join("pr_curves.png")).is_ok());
    // The table names the numbers as pycocotools prints them.
    let table = vpipe(&[
        "eval",
        "detection",
        "--annotations",
        p(&gt),
        "--detections",
        p(&dets),
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(
            "Average Precision (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.183"
        ),
        "{text}"
    );
}

#[test]
fn detection_bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "").expect("write");
    let dets = fixtures().join("dets_sparse.json");
    let gt = fixtures().join("instances.json");
    let out = vpipe(&[
        "eval",
        "detection",
        "--annotations",
        p(&empty),
        "--detections",
        p(&dets),
    ]);
    assert_clean_failure(&out, &["empty.json", "empty"]);
    let out = vpipe(&[
        "eval",
        "detection",
        "--annotations",
        p(&gt),
        "--detections",
        p(&gt),
    ]);
    assert_clean_failure(&out, &["instances.json", "not a JSON list of detections"]);
    let stray = dir.path().join("stray.json");
    std::fs::write(
        &stray,
        r#"[{"image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]"#,
    )
    .expect("write");
    let out = vpipe(&[
        "eval",
        "detection",
        "--annotations",
        p(&gt),
        "--detections",
        p(&stray),
    ]);
    assert_clean_failure(&out, &["image id 5"]);
    let out = vpipe(&["eval", "detection", "--annotations", p(&gt)]);
    assert_clean_failure(&out, &["--detections"]);
    let cats = dir.path().join("cats.json");
    std::fs::write(&cats, r#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}], "categories": [{"id": 1, "name": "x"}], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": "wide"}]}"#).expect("write");
    let out = vpipe(&[
        "eval",
        "detection",
        "--annotations",
        p(&cats),
        "--detections",
        p(&stray),
    ]);
    assert_clean_failure(&out, &["cats.json", "annotation 1"]);
}

#[test]
fn segmentation_json_equals_numpy_and_bad_masks_are_reported() {
    let want = reference("seg_reference.json");
    let (gt, pred) = (fixtures().join("seg/gt"), fixtures().join("seg/pred"));
    let args = [
        "eval",
        "segmentation",
        "--ground-truth",
        p(&gt),
        "--predictions",
        p(&pred),
        "--classes",
        "21",
        "--ignore-index",
        "255",
        "--json",
    ];
    let got = ok_json(&vpipe(&args));
    for key in ["mIoU", "pixel_accuracy"] {
        let w = want[if key == "mIoU" { "miou" } else { key }]
            .as_f64()
            .expect("want");
        assert!((got[key].as_f64().expect(key) - w).abs() <= 1e-6, "{key}");
    }
    assert!(got["per_class_IoU"][20].is_null());

    // A prediction of another size is skipped and reported; one missing is reported.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("pred");
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::copy(pred.join("img0.png"), bad.join("img0.png")).expect("copy");
    image::GrayImage::new(3, 3)
        .save(bad.join("img1.png"))
        .expect("save");
    let out = vpipe(&[
        "eval",
        "segmentation",
        "--ground-truth",
        p(&gt),
        "--predictions",
        p(&bad),
        "--classes",
        "21",
        "--json",
    ]);
    let got = ok_json(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 predictions of another size") && err.contains("img1.png"),
        "{err}"
    );
    assert!(
        err.contains("1 ground truth masks without a prediction") && err.contains("img2.png"),
        "{err}"
    );
    assert_eq!(
        got["pixels"].as_u64(),
        Some(31 * 47 - 136),
        "img0 less its ignored pixels"
    );

    // A class index beyond --classes is an error naming the file.
    let out = vpipe(&[
        "eval",
        "segmentation",
        "--ground-truth",
        p(&gt),
        "--predictions",
        p(&pred),
        "--classes",
        "5",
    ]);
    assert_clean_failure(&out, &["out of range", "img0.png"]);
}

#[test]
fn classification_from_an_image_folder_and_a_predictions_csv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    for (class, n) in [("ant", 2), ("bee", 2)] {
        std::fs::create_dir_all(data.join(class)).expect("mkdir");
        for i in 0..n {
            image::RgbImage::new(4, 4)
                .save(data.join(class).join(format!("{i}.png")))
                .expect("save");
        }
    }
    let preds = dir.path().join("preds.csv");
    let d = data.display();
    std::fs::write(
        &preds,
        format!("path,pred,top5\n{d}/ant/0.png,0,0 1\n{d}/ant/1.png,1,1 0\n{d}/bee/0.png,1,1 0\n{d}/bee/1.png,0,0 2 3 4 5\n"),
    )
    .expect("write");
    let out_dir = dir.path().join("out");
    let got = ok_json(&vpipe(&[
        "eval",
        "classification",
        "--dataset",
        p(&data),
        "--predictions",
        p(&preds),
        "--json",
        "--out",
        p(&out_dir),
    ]));
    assert_eq!(got["top1"].as_f64(), Some(0.5));
    assert_eq!(got["top5"].as_f64(), Some(0.75));
    assert_eq!(got["images"].as_u64(), Some(4));
    assert!(image::open(out_dir.join("confusion_matrix.png")).is_ok());

    std::fs::write(&preds, "path,pred,top5\nant/0.png,x,1\n").expect("write");
    let out = vpipe(&[
        "eval",
        "classification",
        "--dataset",
        p(&data),
        "--predictions",
        p(&preds),
    ]);
    assert_clean_failure(&out, &["preds.csv", "line 2"]);
}

/// A folder `images` in `dir` of the test photo, resized to `size`, under each of `names`.
fn photos(dir: &Path, names: &[&str], size: (u32, u32)) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).expect("mkdir");
    let photo = image::open(root().join("tests/fixtures/image.png"))
        .expect("image")
        .to_rgb8();
    let small = image::imageops::resize(
        &photo,
        size.0,
        size.1,
        image::imageops::FilterType::Triangle,
    );
    for name in names {
        small.save(images.join(name)).expect("save");
    }
    images
}

/// A pipeline file of one head on the repository's random reference weights.
fn pipeline(dir: &Path, weights: &str, head: &str) -> PathBuf {
    let path = dir.join("p.yaml");
    let weights = root().join("weights/reference").join(weights);
    std::fs::write(
        &path,
        format!(
            "backbones:\n  main:\n    weights: {}\nheads:\n  - name: h\n    {head}\n",
            weights.display()
        ),
    )
    .expect("write");
    path
}

#[test]
fn detection_runs_a_pipeline_over_a_coco_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = photos(
        dir.path(),
        &["000000000007.png", "000000000008.png"],
        (160, 160),
    );
    let gt = dir.path().join("gt.json");
    std::fs::write(
        &gt,
        r#"{"images": [{"id": 7, "file_name": "000000000007.png", "width": 160, "height": 160},
                       {"id": 8, "file_name": "000000000008.png", "width": 160, "height": 160},
                       {"id": 9, "file_name": "missing.png", "width": 160, "height": 160}],
            "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [20, 10, 80, 140], "area": 11200, "iscrowd": 0}]}"#,
    )
    .expect("write");
    let pipe = pipeline(
        dir.path(),
        "cvnets_ssd_mobilevit_xxs.pt",
        "type: ssd\n    options:\n      conf_threshold: 0.05",
    );
    let out_dir = dir.path().join("out");
    let out = vpipe(&[
        "eval",
        "detection",
        "--annotations",
        p(&gt),
        "--pipeline",
        p(&pipe),
        "--images",
        p(&images),
        "--out",
        p(&out_dir),
        "--json",
    ]);
    let got = ok_json(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.png"),
        "the missing image is reported: {err}"
    );
    let results_file = out_dir.join("predictions/detections_coco_results.json");
    let results: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&results_file).expect("results"))
            .expect("json");
    assert!(
        results
            .iter()
            .all(|r| [7, 8].contains(&r["image_id"].as_i64().expect("id")))
    );
    assert_eq!(got["detections"].as_u64(), Some(results.len() as u64));
    // The predictions file evaluates to the same numbers on its own.
    let again = ok_json(&vpipe(&[
        "eval",
        "detection",
        "--annotations",
        p(&gt),
        "--detections",
        p(&results_file),
        "--json",
    ]));
    assert_eq!(again["AP"], got["AP"]);
    assert!(out_dir.join("metrics.json").is_file() && out_dir.join("pr_curves.png").is_file());
}

#[test]
fn segmentation_runs_a_pipeline_over_images_and_masks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = photos(dir.path(), &["a.jpg", "b.jpg"], (96, 64));
    let masks = dir.path().join("masks");
    std::fs::create_dir_all(&masks).expect("mkdir");
    let mut mask = image::GrayImage::new(96, 64);
    for (x, _, px) in mask.enumerate_pixels_mut() {
        px.0[0] = if x < 48 { 0 } else { 15 };
    }
    mask.save(masks.join("a.png")).expect("save");
    image::GrayImage::new(50, 50)
        .save(masks.join("b.png"))
        .expect("save");
    let pipe = pipeline(
        dir.path(),
        "cvnets_deeplabv3_mobilevit_xxs.pt",
        "type: deeplabv3",
    );
    let out_dir = dir.path().join("out");
    let out = vpipe(&[
        "eval",
        "segmentation",
        "--pipeline",
        p(&pipe),
        "--images",
        p(&images),
        "--ground-truth",
        p(&masks),
        "--classes",
        "21",
        "--out",
        p(&out_dir),
        "--json",
    ]);
    let got = ok_json(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("masks of another size than their image") && err.contains("b.png"),
        "{err}"
    );
    assert_eq!(got["pixels"].as_u64(), Some(96 * 64));
    let predicted = out_dir.join("predictions/masks/a.png");
    assert!(predicted.is_file());
    // The written prediction evaluates to the same numbers.
    let again = ok_json(&vpipe(&[
        "eval",
        "segmentation",
        "--ground-truth",
        p(&masks),
        "--predictions",
        p(&out_dir.join("predictions/masks")),
        "--classes",
        "21",
        "--json",
    ]));
    assert_eq!(again["mIoU"], got["mIoU"]);
}

#[test]
fn segmentation_runs_a_pipeline_over_coco_regions_as_voc_masks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = photos(dir.path(), &["x.png"], (64, 48));
    let gt = dir.path().join("gt.json");
    // A person (VOC 15) polygon over a dog (VOC 12) box-shaped RLE: the first one listed
    // keeps the overlap; a giraffe (not a VOC class) is left out.
    std::fs::write(
        &gt,
        r#"{"images": [{"id": 1, "file_name": "x.png", "width": 64, "height": 48}],
            "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 25, "name": "giraffe"}],
            "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]]},
              {"id": 2, "image_id": 1, "category_id": 18, "bbox": [10, 0, 10, 48], "iscrowd": 1,
               "segmentation": {"counts": [480, 480, 2112], "size": [48, 64]}},
              {"id": 3, "image_id": 1, "category_id": 25, "bbox": [40, 0, 10, 10], "segmentation": [[40, 0, 50, 0, 50, 10, 40, 10]]}]}"#,
    )
    .expect("write");
    let pipe = pipeline(
        dir.path(),
        "cvnets_deeplabv3_mobilevit_xxs.pt",
        "type: deeplabv3",
    );
    let out_dir = dir.path().join("out");
    let got = ok_json(&vpipe(&[
        "eval",
        "segmentation",
        "--pipeline",
        p(&pipe),
        "--images",
        p(&images),
        "--annotations",
        p(&gt),
        "--classes",
        "21",
        "--out",
        p(&out_dir),
        "--json",
    ]));
    assert_eq!(got["pixels"].as_u64(), Some(64 * 48));
    // The classes present in the ground truth (background, dog, person) have an IoU.
    for class in [0, 12, 15] {
        assert!(
            got["per_class_IoU"][class].is_number(),
            "class {class}: {got}"
        );
    }
    assert!(out_dir.join("predictions/masks/x.png").is_file());
    assert!(out_dir.join("confusion_matrix.png").is_file());
}

#[test]
fn classification_runs_a_pipeline_over_an_image_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    for class in ["a", "b"] {
        photos(&data.join(class), &["1.png", "2.png"], (40, 30));
    }
    let pipe = pipeline(
        dir.path(),
        "cvnets_mobilevit_xxs.pt",
        "type: classification\n    options:\n      top_k: 5",
    );
    let out_dir = dir.path().join("out");
    let got = ok_json(&vpipe(&[
        "eval",
        "classification",
        "--dataset",
        p(&data),
        "--pipeline",
        p(&pipe),
        "--out",
        p(&out_dir),
        "--json",
    ]));
    assert_eq!(got["images"].as_u64(), Some(4));
    let csv = out_dir.join("predictions/predictions.csv");
    let text = std::fs::read_to_string(&csv).expect("csv");
    assert_eq!(text.lines().next(), Some("path,pred,top5"));
    assert_eq!(text.lines().count(), 5);
    // The written predictions evaluate to the same numbers.
    let again = ok_json(&vpipe(&[
        "eval",
        "classification",
        "--dataset",
        p(&data),
        "--predictions",
        p(&csv),
        "--json",
    ]));
    assert_eq!(again, got);
}

/// A pipeline measured against itself agrees completely on every task; against a
/// student with other heads it agrees less, and the report names each head.
#[test]
fn agreement_of_a_pipeline_with_itself_is_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = root().join("weights/reference");
    let teacher = dir.path().join("teacher.yaml");
    std::fs::write(
        &teacher,
        format!(
            "backbones:\n  d: {{weights: {0}/cvnets_ssd_mobilevit_xxs.pt}}\n  s: {{weights: {0}/cvnets_deeplabv3_mobilevit_xxs.pt}}\n  c: {{weights: {0}/cvnets_mobilevit_xxs.pt}}\nheads:\n  - {{name: objects, type: ssd, backbone: d}}\n  - {{name: scene, type: deeplabv3, backbone: s}}\n  - {{name: imagenet, type: classification, backbone: c}}\n",
            w.display()
        ),
    )
    .expect("write");
    let images = root().join("tests/fixtures/train_coco/images");
    let args = |student: &Path| {
        vpipe(&[
            "eval",
            "agreement",
            "--teacher",
            p(&teacher),
            "--student",
            p(student),
            "--input",
            p(&images),
            "--teacher-threshold",
            "0.0",
            "--json",
        ])
    };
    let m = ok_json(&args(&teacher));
    assert_eq!(m["frames"], 8);
    let heads = &m["heads"];
    assert_eq!(heads["scene"]["pixel_agreement"], 1.0);
    assert_eq!(heads["scene"]["mIoU"], 1.0);
    assert_eq!(heads["imagenet"]["top1_agreement"], 1.0);
    assert!(
        heads["objects"]["teacher_objects"].as_u64().unwrap() > 0,
        "{m}"
    );
    assert_eq!(heads["objects"]["AP"], 1.0, "{m}");
    // The three heads on one backbone (the SSD checkpoint's): less agreement.
    let student = dir.path().join("student.yaml");
    std::fs::write(
        &student,
        format!(
            "backbones:\n  d: {{weights: {0}/cvnets_ssd_mobilevit_xxs.pt}}\nheads:\n  - {{name: objects, type: ssd}}\n  - {{name: scene, type: deeplabv3, weights: {0}/cvnets_deeplabv3_mobilevit_xxs.pt, allow_backbone_mismatch: true, options: {{stride: 32}}}}\n  - {{name: imagenet, type: classification, weights: {0}/cvnets_mobilevit_xxs.pt, allow_backbone_mismatch: true}}\n",
            w.display()
        ),
    )
    .expect("write");
    let m = ok_json(&args(&student));
    let heads = &m["heads"];
    assert_eq!(heads["objects"]["AP"], 1.0, "the detector is the same: {m}");
    assert!(
        heads["scene"]["pixel_agreement"].as_f64().unwrap() < 1.0,
        "{m}"
    );
    assert!(
        heads["imagenet"]["top1_agreement"].as_f64().unwrap() < 1.0,
        "{m}"
    );
    // No shared head name: a clear error.
    let out = vpipe(&[
        "eval",
        "agreement",
        "--teacher",
        p(&teacher),
        "--student",
        p(&student),
        "--input",
        p(&images),
        "--head",
        "nope",
    ]);
    assert_clean_failure(&out, &["share no head name 'nope'"]);
}
