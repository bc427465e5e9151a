//! The metrics against pycocotools and numpy (`scripts/make_eval_reference.py`), and the
//! plots.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vpipe_data::coco::CocoDataset;
use vpipe_data::mask_folder::read_class_mask;
use vpipe_eval::classification::ClassificationEval;
use vpipe_eval::coco_eval::{self, Detection, evaluate_bbox, read_detections};
use vpipe_eval::confusion::ConfusionMatrix;
use vpipe_eval::plots;
use vpipe_eval::segmentation::segmentation_metrics;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eval")
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).expect("read"))
        .expect("json")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6
}

#[test]
fn coco_eval_equals_pycocotools() {
    let gt = CocoDataset::load(&fixtures().join("instances.json")).expect("gt");
    let reference = json("coco_eval_reference.json");
    for name in ["perfect", "jitter", "mixed", "sparse"] {
        let dets = read_detections(&fixtures().join(format!("dets_{name}.json"))).expect("dets");
        let result = evaluate_bbox(&gt, &dets).expect("eval");
        let want = &reference[name];
        for (i, stat) in result.stats.iter().enumerate() {
            let w = want["stats"][i].as_f64().expect("stat");
            assert!(
                close(*stat, w),
                "{name} {}: {stat} != {w}",
                coco_eval::STAT_NAMES[i]
            );
        }
        assert_eq!(result.classes.len(), 80);
        for class in &result.classes {
            let key = class.category_id.to_string();
            let w = want["per_class_ap"][&key].as_f64().expect("ap");
            assert!(
                close(class.ap, w),
                "{name} class {key}: {} != {w}",
                class.ap
            );
            let curve = want["pr_iou50"][&key].as_array().expect("curve");
            assert_eq!(curve.len(), 101);
            for (r, (p, w)) in class.precision_iou50.iter().zip(curve).enumerate() {
                let w = w.as_f64().expect("p");
                assert!(
                    close(*p, w),
                    "{name} class {key} recall point {r}: {p} != {w}"
                );
            }
        }
        let unknown = result.report.count(coco_eval::UNKNOWN_CATEGORY);
        assert_eq!(unknown, usize::from(name == "mixed"), "{name}");
    }
}

#[test]
fn coco_eval_edge_cases() {
    let gt = CocoDataset::load(&fixtures().join("instances.json")).expect("gt");
    // No detections: every category with ground truth has AP 0; pycocotools refuses this.
    let result = evaluate_bbox(&gt, &[]).expect("eval");
    assert_eq!(result.stats[0], 0.0);
    assert!(result.classes.iter().all(|c| c.ap == 0.0 || c.ap == -1.0));
    // A detection of an image the ground truth does not have.
    let det = Detection {
        image_id: 123456789,
        category_id: 1,
        bbox: [0.0, 0.0, 5.0, 5.0],
        score: 0.5,
    };
    let err = evaluate_bbox(&gt, &[det]).unwrap_err().to_string();
    assert!(
        err.contains("image id 123456789") && err.contains("instances.json"),
        "{err}"
    );
    // Results files that are not lists of detections.
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, want) in [
        ("", "empty"),
        ("{}", "not a JSON list"),
        ("[{\"image_id\": 1}]", "detection 0"),
    ] {
        let path = dir.path().join("d.json");
        std::fs::write(&path, text).expect("write");
        let err = read_detections(&path).unwrap_err().to_string();
        assert!(err.contains("d.json") && err.contains(want), "{err}");
    }
}

#[test]
fn segmentation_equals_numpy() {
    let reference = json("seg_reference.json");
    let classes = reference["classes"].as_u64().expect("classes") as usize;
    let mut matrix = ConfusionMatrix::new(classes);
    for i in 0..3 {
        let gt = read_class_mask(&fixtures().join(format!("seg/gt/img{i}.png"))).expect("gt");
        let pred = read_class_mask(&fixtures().join(format!("seg/pred/img{i}.png"))).expect("pred");
        matrix
            .add_masks(&gt.data, &pred.data, Some(255))
            .expect("add");
    }
    let want: Vec<Vec<u64>> = reference["confusion"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_u64().expect("n"))
                .collect()
        })
        .collect();
    assert_eq!(matrix.rows(), want);
    let m = segmentation_metrics(&matrix);
    for (c, (iou, w)) in m
        .iou
        .iter()
        .zip(reference["iou"].as_array().expect("iou"))
        .enumerate()
    {
        match (iou, w.as_f64()) {
            (Some(a), Some(b)) => assert!(close(*a, b), "class {c}: {a} != {b}"),
            (None, None) => {}
            other => panic!("class {c}: {other:?}"),
        }
    }
    assert!(close(m.miou, reference["miou"].as_f64().expect("miou")));
    assert!(close(
        m.pixel_accuracy,
        reference["pixel_accuracy"].as_f64().expect("acc")
    ));
    // A class index beyond the classes, and masks of different sizes, are errors.
    assert!(matrix.add_masks(&[0, 30], &[0, 1], Some(255)).is_err());
    assert!(matrix.add_masks(&[0, 1], &[0], Some(255)).is_err());
}

#[test]
fn classification_top_k() {
    let mut eval = ClassificationEval::new(7);
    eval.add(0, &[0, 1, 2, 3, 4]).expect("add");
    eval.add(1, &[2, 3, 4, 5, 1]).expect("add");
    eval.add(2, &[3, 4, 5, 6, 0, 2]).expect("add");
    eval.add(6, &[6]).expect("add");
    assert_eq!(eval.count(), 4);
    assert_eq!(eval.top1(), 0.5);
    assert_eq!(eval.top5(), 0.75);
    assert_eq!(eval.confusion().get(1, 2), 1);
    assert_eq!(eval.confusion().get(2, 3), 1);
    eval.add(3, &[9, 3])
        .expect("a class beyond the dataset's is a wrong prediction");
    assert_eq!(
        (eval.count(), eval.outside(), eval.confusion().total()),
        (5, 1, 4)
    );
    assert_eq!(eval.top1(), 0.4);
    assert_eq!(eval.top5(), 0.8);
    assert!(eval.add(7, &[0]).is_err());
    assert!(eval.add(0, &[]).is_err());
}

/// The PNG at `path` has the size `want` and more than two colours (something was drawn).
fn check_png(path: &Path, want: (u32, u32)) {
    let img = image::open(path).expect("png").to_rgb8();
    assert_eq!(img.dimensions(), want);
    let mut colors: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colors.sort_unstable();
    colors.dedup();
    assert!(colors.len() > 2, "{}", path.display());
}

#[test]
fn plots_are_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gt = CocoDataset::load(&fixtures().join("instances.json")).expect("gt");
    let dets = read_detections(&fixtures().join("dets_jitter.json")).expect("dets");
    let result = evaluate_bbox(&gt, &dets).expect("eval");
    let overall = result.overall_precision_iou50();
    assert_eq!(overall.len(), 101);
    assert!(overall[0] > overall[100]);
    plots::pr_curves(&result, &dir.path().join("pr.png")).expect("pr");
    check_png(&dir.path().join("pr.png"), (900, 700));

    let mut matrix = ConfusionMatrix::new(3);
    for (t, p) in [(0, 0), (0, 1), (1, 1), (2, 2), (2, 0)] {
        matrix.add(t, p).expect("add");
    }
    let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    plots::confusion_matrix(&matrix, &names, &dir.path().join("cm.png")).expect("cm");
    check_png(&dir.path().join("cm.png"), (774, 654));

    let points: Vec<(f64, f64)> = (0..50)
        .map(|i| (f64::from(i), 2.0 / (1.0 + f64::from(i))))
        .collect();
    plots::loss_curve(&points, &dir.path().join("loss.png")).expect("loss");
    check_png(&dir.path().join("loss.png"), (900, 600));
    assert!(plots::loss_curve(&[], &dir.path().join("none.png")).is_err());
    assert!(!dir.path().join("none.png").exists());
}
