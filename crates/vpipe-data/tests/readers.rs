//! The dataset readers against pycocotools and ml-cvnets references
//! (`scripts/make_eval_reference.py`) and on bad input.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vpipe_data::DataError;
use vpipe_data::classification::{self, ClassificationDataset};
use vpipe_data::coco::{self, CocoDataset, Segmentation};
use vpipe_data::mask_folder::{self, SegmentationFolder};
use vpipe_data::masks::{Rle, annotation_mask, voc_class_mask};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eval")
}

fn fnv1a64(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("masks_reference.json")).expect("reference");
    serde_json::from_str(&text).expect("json")
}

fn coco128() -> CocoDataset {
    CocoDataset::load(&fixtures().join("instances.json")).expect("coco128")
}

#[test]
fn coco128_reads_whole() {
    let ds = coco128();
    assert_eq!(ds.images.len(), 128);
    assert_eq!(ds.annotations.len(), 939);
    assert_eq!(ds.categories.len(), 80);
    assert_eq!(ds.annotations.iter().filter(|a| a.iscrowd).count(), 10);
    assert!(ds.report.is_empty(), "{}", ds.report);
    let by_image = ds.annotations_by_image();
    assert_eq!(by_image.iter().filter(|a| a.is_empty()).count(), 2);
}

#[test]
fn annotation_masks_equal_pycocotools() {
    let ds = coco128();
    let reference = reference();
    for ann in &ds.annotations {
        let image = &ds.images[ds.image_index(ann.image_id).expect("image")];
        let mask = annotation_mask(ann, image);
        let want = &reference["annotations"][ann.id.to_string()];
        let area: u64 = mask.iter().map(|&m| u64::from(m)).sum();
        assert_eq!(
            area,
            want["area"].as_u64().expect("area"),
            "annotation {}",
            ann.id
        );
        assert_eq!(
            fnv1a64(&mask),
            want["fnv1a64"].as_str().expect("hash"),
            "annotation {}",
            ann.id
        );
    }
}

#[test]
fn compressed_rle_decodes_as_pycocotools() {
    let ds = coco128();
    let reference = reference();
    let compressed = reference["compressed"].as_object().expect("compressed");
    assert!(compressed.len() >= 20);
    for (id, c) in compressed {
        let size = &c["size"];
        let (h, w) = (
            size[0].as_u64().expect("h") as u32,
            size[1].as_u64().expect("w") as u32,
        );
        let rle = Rle::from_compressed(c["counts"].as_str().expect("counts"), h, w).expect("rle");
        let want = &reference["annotations"][id.as_str()];
        assert_eq!(
            fnv1a64(&rle.decode()),
            want["fnv1a64"].as_str().expect("hash"),
            "annotation {id}"
        );
        assert_eq!(rle.area(), want["area"].as_u64().expect("area"));
        // The same mask as the annotation's own region.
        let ann = ds
            .annotations
            .iter()
            .find(|a| a.id.to_string() == *id)
            .expect("annotation");
        if let Some(Segmentation::Rle(own)) = &ann.segmentation {
            assert_eq!(own, &rle);
        }
    }
}

#[test]
fn synthetic_polygons_equal_pycocotools() {
    let reference = reference();
    for (i, s) in reference["synthetic"]
        .as_array()
        .expect("synthetic")
        .iter()
        .enumerate()
    {
        let poly: Vec<f64> = s["polygon"]
            .as_array()
            .expect("poly")
            .iter()
            .map(|v| v.as_f64().expect("f64"))
            .collect();
        let (h, w) = (
            s["height"].as_u64().expect("h") as u32,
            s["width"].as_u64().expect("w") as u32,
        );
        let rle = Rle::from_polygon(&poly, h, w);
        assert_eq!(
            rle.counts.iter().map(|&c| u64::from(c)).sum::<u64>(),
            u64::from(h * w)
        );
        assert_eq!(rle.area(), s["area"].as_u64().expect("area"), "polygon {i}");
        assert_eq!(
            fnv1a64(&rle.decode()),
            s["fnv1a64"].as_str().expect("hash"),
            "polygon {i}"
        );
    }
}

#[test]
fn voc_masks_equal_ml_cvnets() {
    let ds = coco128();
    let reference = reference();
    let by_image = ds.annotations_by_image();
    for (image, annotations) in ds.images.iter().zip(&by_image) {
        let mask = voc_class_mask(image, annotations);
        let want = &reference["voc"][image.id.to_string()];
        let mut counts = [0u64; 21];
        for &m in &mask {
            counts[m as usize] += 1;
        }
        let want_counts: Vec<u64> = want["counts"]
            .as_array()
            .expect("counts")
            .iter()
            .map(|v| v.as_u64().expect("n"))
            .collect();
        assert_eq!(counts.to_vec(), want_counts, "image {}", image.id);
        assert_eq!(
            fnv1a64(&mask),
            want["fnv1a64"].as_str().expect("hash"),
            "image {}",
            image.id
        );
    }
}

fn load_str(text: &str) -> Result<CocoDataset, DataError> {
    CocoDataset::from_slice(text.as_bytes(), Path::new("bad.json"))
}

const IMAGES: &str = r#""images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 8},
                                    {"id": 2, "file_name": "b.png", "width": 10, "height": 8}]"#;
const CATS: &str = r#""categories": [{"id": 3, "name": "cat"}]"#;

#[test]
fn coco_bad_input_is_a_located_error() {
    let empty = load_str("  \n").unwrap_err().to_string();
    assert!(
        empty.contains("bad.json") && empty.contains("empty"),
        "{empty}"
    );
    let json = load_str("{\"images\": [").unwrap_err().to_string();
    assert!(
        json.contains("not valid JSON") && json.contains("line 1"),
        "{json}"
    );
    let list = load_str("[{\"image_id\": 1}]").unwrap_err().to_string();
    assert!(list.contains("JSON list"), "{list}");
    let no_images = load_str(&format!("{{\"images\": [], {CATS}}}"))
        .unwrap_err()
        .to_string();
    assert!(no_images.contains("no images"), "{no_images}");
    let no_bbox = load_str(&format!(
        r#"{{{IMAGES}, {CATS}, "annotations": [{{"id": 7, "image_id": 1, "category_id": 3}}]}}"#
    ))
    .unwrap_err()
    .to_string();
    assert!(
        no_bbox.contains("annotation 7") && no_bbox.contains("bbox"),
        "{no_bbox}"
    );
    let dup = load_str(&format!(
        r#"{{"images": [{{"id": 1, "file_name": "a", "width": 1, "height": 1}}, {{"id": 1, "file_name": "b", "width": 1, "height": 1}}], {CATS}}}"#
    ))
    .unwrap_err()
    .to_string();
    assert!(dup.contains("image id 1 appears twice"), "{dup}");
    let rle = load_str(&format!(
        r#"{{{IMAGES}, {CATS}, "annotations": [{{"id": 9, "image_id": 1, "category_id": 3, "bbox": [0,0,1,1], "segmentation": {{"counts": [3, 4], "size": [8, 10]}}}}]}}"#
    ))
    .unwrap_err()
    .to_string();
    assert!(
        rle.contains("annotation 9") && rle.contains("sum to 7"),
        "{rle}"
    );
    let size = load_str(&format!(
        r#"{{{IMAGES}, {CATS}, "annotations": [{{"id": 9, "image_id": 1, "category_id": 3, "bbox": [0,0,1,1], "segmentation": {{"counts": [20], "size": [4, 5]}}}}]}}"#
    ))
    .unwrap_err()
    .to_string();
    assert!(
        size.contains("annotation 9") && size.contains("5x4") && size.contains("10x8"),
        "{size}"
    );
}

#[test]
fn coco_skips_and_counts_what_it_can_do_without() {
    let text = format!(
        r#"{{{IMAGES}, {CATS}, "annotations": [
            {{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4], "area": 16}},
            {{"id": 2, "image_id": 5, "category_id": 3, "bbox": [1, 1, 4, 4]}},
            {{"id": 3, "image_id": 1, "category_id": 8, "bbox": [1, 1, 4, 4]}},
            {{"id": 4, "image_id": 2, "category_id": 3, "bbox": [8, 6, 5, 5]}},
            {{"id": 5, "image_id": 2, "category_id": 3, "bbox": [12, 1, 5, 5], "iscrowd": 1}}]}}"#
    );
    let mut ds = load_str(&text).expect("valid");
    assert_eq!(
        ds.annotations.iter().map(|a| a.id).collect::<Vec<_>>(),
        [1, 4, 5]
    );
    assert_eq!(ds.report.count(coco::UNKNOWN_IMAGE), 1);
    assert_eq!(ds.report.count(coco::UNKNOWN_CATEGORY), 1);
    assert_eq!(ds.report.count(coco::BOX_OUTSIDE), 2);
    assert_eq!(
        ds.annotations[1].area, 25.0,
        "area from the box when absent"
    );
    assert!(ds.annotations[2].iscrowd);
    let report = ds.report.to_string();
    assert!(
        report.contains("annotation 2 (image 5)") && report.contains("annotation 3 (category 8)"),
        "{report}"
    );
    ds.clip_boxes();
    assert_eq!(
        ds.annotations.iter().map(|a| a.id).collect::<Vec<_>>(),
        [1, 4]
    );
    assert_eq!(ds.annotations[1].bbox, [8.0, 6.0, 2.0, 2.0]);
    assert_eq!(ds.report.count(coco::BOX_CLIPPED), 1);
    assert_eq!(ds.report.count(coco::BOX_DEGENERATE), 1);

    let dir = tempfile::tempdir().expect("tempdir");
    image::GrayImage::new(10, 8)
        .save(dir.path().join("a.png"))
        .expect("save");
    ds.remove_missing_images(dir.path());
    assert_eq!(ds.images.len(), 1);
    assert_eq!(ds.annotations.iter().map(|a| a.id).collect::<Vec<_>>(), [1]);
    assert_eq!(ds.report.count(coco::IMAGE_MISSING), 1);
}

#[test]
fn mask_folder_pairs_by_stem_and_skips_bad_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (images, masks) = (dir.path().join("images"), dir.path().join("masks"));
    std::fs::create_dir_all(&images).expect("mkdir");
    std::fs::create_dir_all(&masks).expect("mkdir");
    for (name, w) in [("a", 6), ("b", 6), ("c", 6)] {
        image::RgbImage::new(w, 4)
            .save(images.join(format!("{name}.jpg")))
            .expect("save");
    }
    let mut a = image::GrayImage::new(6, 4);
    a.put_pixel(2, 1, image::Luma([7]));
    a.save(masks.join("a.png")).expect("save");
    image::GrayImage::new(5, 4)
        .save(masks.join("b.png"))
        .expect("save");
    image::GrayImage::new(6, 4)
        .save(masks.join("d.png"))
        .expect("save");
    let folder = SegmentationFolder::load(&images, &masks).expect("folder");
    assert_eq!(folder.samples.len(), 1);
    assert_eq!(folder.samples[0].mask, masks.join("a.png"));
    assert_eq!(folder.report.count(mask_folder::MASK_SIZE), 1);
    assert_eq!(folder.report.count(mask_folder::IMAGE_WITHOUT_MASK), 1);
    assert_eq!(folder.report.count(mask_folder::MASK_WITHOUT_IMAGE), 1);
    let mask = mask_folder::read_class_mask(&masks.join("a.png")).expect("mask");
    assert_eq!((mask.width, mask.height), (6, 4));
    assert_eq!(mask.data[6 + 2], 7);
    assert_eq!(mask.data.iter().map(|&v| u32::from(v)).sum::<u32>(), 7);
    let rgb = mask_folder::read_class_mask(&images.join("a.jpg"))
        .unwrap_err()
        .to_string();
    assert!(rgb.contains("a.jpg"), "{rgb}");
}

#[test]
fn palette_masks_read_their_indices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.png");
    let file = std::fs::File::create(&path).expect("create");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 3, 2);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    let mut palette = vec![0u8; 256 * 3];
    palette[15 * 3] = 192;
    enc.set_palette(palette);
    let mut w = enc.write_header().expect("header");
    w.write_image_data(&[0, 15, 255, 1, 2, 3]).expect("data");
    w.finish().expect("finish");
    let mask = mask_folder::read_class_mask(&path).expect("mask");
    assert_eq!(mask.data, [0, 15, 255, 1, 2, 3]);
}

#[test]
fn image_folder_and_csv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for (class, files) in [
        ("dog", vec!["b.png", "a.png", "sub/c.png"]),
        ("cat", vec!["z.jpg"]),
    ] {
        for f in files {
            let p = root.join(class).join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            image::RgbImage::new(2, 2).save(&p).expect("save");
        }
    }
    std::fs::write(root.join("dog/notes.txt"), "x").expect("write");
    let ds = ClassificationDataset::image_folder(root).expect("folder");
    assert_eq!(ds.classes, ["cat", "dog"]);
    let got: Vec<(String, usize)> = ds
        .samples
        .iter()
        .map(|s| {
            (
                s.path
                    .strip_prefix(root)
                    .expect("prefix")
                    .display()
                    .to_string(),
                s.label,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("cat/z.jpg".into(), 0),
            ("dog/a.png".into(), 1),
            ("dog/b.png".into(), 1),
            ("dog/sub/c.png".into(), 1)
        ]
    );
    assert_eq!(ds.report.count(classification::NOT_AN_IMAGE), 1);

    let csv = root.join("set.csv");
    std::fs::write(
        &csv,
        "path,label\ndog/a.png,dog\ncat/z.jpg,0\nmissing.png,1\n",
    )
    .expect("write");
    let classes = vec!["cat".to_string(), "dog".to_string()];
    let ds = ClassificationDataset::csv(&csv, Some(&classes)).expect("csv");
    assert_eq!(
        ds.samples.iter().map(|s| s.label).collect::<Vec<_>>(),
        [1, 0]
    );
    assert_eq!(ds.samples[0].path, root.join("dog/a.png"));
    assert_eq!(ds.report.count(classification::CSV_MISSING), 1);
    let err = ClassificationDataset::csv(&csv, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("set.csv") && err.contains("line 2"), "{err}");
    std::fs::write(&csv, "dog/a.png,5\n").expect("write");
    let err = ClassificationDataset::csv(&csv, Some(&classes))
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1") && err.contains("2 classes"), "{err}");
}

#[test]
fn coco_reads_compressed_rle_regions() {
    let reference = reference();
    let (id, c) = reference["compressed"]
        .as_object()
        .expect("compressed")
        .iter()
        .next()
        .expect("one");
    let (h, w) = (
        c["size"][0].as_u64().expect("h"),
        c["size"][1].as_u64().expect("w"),
    );
    let text = format!(
        r#"{{"images": [{{"id": 1, "file_name": "a.jpg", "width": {w}, "height": {h}}}],
            "categories": [{{"id": 1, "name": "x"}}],
            "annotations": [{{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1],
                              "iscrowd": 1, "segmentation": {{"counts": {counts}, "size": [{h}, {w}]}}}}]}}"#,
        counts = c["counts"]
    );
    let ds = load_str(&text).expect("valid");
    let mask = annotation_mask(&ds.annotations[0], &ds.images[0]);
    assert_eq!(
        fnv1a64(&mask),
        reference["annotations"][id.as_str()]["fnv1a64"]
            .as_str()
            .expect("hash")
    );
    let bad = text.replace(&c["counts"].to_string(), "\"0~~\"");
    let err = load_str(&bad).unwrap_err().to_string();
    assert!(
        err.contains("annotation 1") && err.contains("invalid RLE"),
        "{err}"
    );
}
