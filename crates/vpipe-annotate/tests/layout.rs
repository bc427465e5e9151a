//! Annotation of one frame with all three heads at 160x120, 640x480 and 1920x1080:
//! the banner, the legend and the box tags never overlap and stay inside the image,
//! and the drawing matches a PNG snapshot (within a tolerance).
//!
//! `VPIPE_UPDATE_SNAPSHOTS=1 cargo test --release -p vpipe-annotate` rewrites the
//! snapshots in `tests/snapshots/` (look at them before committing).

use std::path::PathBuf;

use image::{Rgb, RgbImage};
use vpipe_annotate::{Annotator, Area, Layout};
use vpipe_core::result::{ClassArea, ClassScore, Detection, HeadOutput};

const SIZES: [(u32, u32); 3] = [(160, 120), (640, 480), (1920, 1080)];

/// A frame and the outputs of a detection, a segmentation and a classification head.
fn scene(w: u32, h: u32) -> (RgbImage, Vec<HeadOutput>) {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 200 / w + 30) as u8, (y * 200 / h + 30) as u8, 120])
    });
    // A 64x48 mask: six classes in vertical bands of different widths.
    let classes: [(usize, &str, u32); 7] = [
        (0, "background", 14),
        (15, "person", 16),
        (12, "dog", 12),
        (8, "cat", 9),
        (7, "car", 6),
        (2, "bicycle", 4),
        (20, "tvmonitor", 3),
    ];
    let mut mask = Vec::with_capacity(64 * 48);
    for _ in 0..48 {
        for (class, _, width) in classes {
            mask.extend(std::iter::repeat_n(class as u8, width as usize));
        }
    }
    let areas = classes
        .iter()
        .map(|&(class_id, label, width)| ClassArea {
            class_id,
            label: label.into(),
            pixels: width as usize * 48,
            fraction: width as f32 / 64.0,
        })
        .collect();
    let (fw, fh) = (w as f32, h as f32);
    let boxes: [([f32; 4], usize, &str, f32); 6] = [
        ([0.02, 0.02, 0.3, 0.35], 1, "person", 0.91),
        ([0.02, 0.7, 0.28, 0.98], 3, "car", 0.85),
        ([0.4, 0.4, 0.7, 0.8], 18, "dog", 0.77),
        ([0.42, 0.41, 0.75, 0.85], 17, "cat", 0.64),
        ([0.8, 0.1, 0.999, 0.5], 62, "tv", 0.55),
        ([0.55, 0.05, 0.6, 0.12], 44, "bottle", 0.41),
    ];
    let detections = boxes
        .iter()
        .map(|&(b, class_id, label, score)| Detection {
            bbox: [b[0] * fw, b[1] * fh, b[2] * fw, b[3] * fh],
            score,
            class_id,
            label: label.into(),
            track_id: None,
        })
        .collect();
    let top_k = ["tabby", "tiger cat", "Egyptian cat", "lynx", "Persian cat"]
        .iter()
        .enumerate()
        .map(|(i, label)| ClassScore {
            class_id: 281 + i,
            label: (*label).into(),
            score: 0.5 / (i + 1) as f32,
            logit: 5.0 - i as f32,
        })
        .collect();
    (
        img,
        vec![
            HeadOutput::Segmentation {
                width: 64,
                height: 48,
                mask,
                areas,
            },
            HeadOutput::Detection { detections },
            HeadOutput::Classification { top_k },
        ],
    )
}

fn layout_of(w: u32, h: u32) -> Layout {
    let (_, outputs) = scene(w, h);
    let refs: Vec<&HeadOutput> = outputs.iter().collect();
    Annotator::default().layout(w, h, &refs)
}

#[test]
fn banner_legend_and_tags_never_overlap_at_any_size() {
    for (w, h) in SIZES {
        let layout = layout_of(w, h);
        let banner = layout.banner.as_ref().expect("banner");
        let legend = layout.legend.as_ref().expect("legend");
        let mut placed: Vec<(String, Area)> = vec![
            ("banner".into(), banner.area),
            ("legend".into(), legend.area),
        ];
        placed.extend(layout.tags.iter().map(|t| (t.text.clone(), t.area)));
        let inside =
            |a: &Area| a.x >= 0 && a.y >= 0 && a.right() <= w as i32 && a.bottom() <= h as i32;
        for (i, (name, a)) in placed.iter().enumerate() {
            assert!(inside(a), "{w}x{h}: {name} {a:?} leaves the image");
            for (other, b) in &placed[i + 1..] {
                assert!(!a.overlaps(b), "{w}x{h}: {name} {a:?} covers {other} {b:?}");
            }
        }
        // Legend entries stay apart from each other too.
        for (i, a) in legend.tags.iter().enumerate() {
            for b in &legend.tags[i + 1..] {
                assert!(!a.area.overlaps(&b.area), "{w}x{h}: {a:?} / {b:?}");
            }
        }
        assert!(
            banner.area.h <= h as i32 / 4,
            "{w}x{h}: banner {:?}",
            banner.area
        );
        assert!(
            legend.area.h <= h as i32 / 3,
            "{w}x{h}: legend {:?}",
            legend.area
        );
        // Largest class first.
        assert!(legend.tags[0].text.starts_with("person"), "{w}x{h}");
        assert_eq!(layout.tags.len() + layout.hidden_tags, 6, "{w}x{h}");
    }
    // Small frames summarise what does not fit; large ones show everything.
    let small = layout_of(160, 120);
    let more = |lines: Vec<&String>| {
        lines
            .last()
            .is_some_and(|l| l.starts_with('+') && l.ends_with("more"))
    };
    assert!(more(
        small
            .banner
            .as_ref()
            .expect("banner")
            .lines
            .iter()
            .map(|(t, _)| t)
            .collect()
    ));
    assert!(more(
        small
            .legend
            .as_ref()
            .expect("legend")
            .tags
            .iter()
            .map(|t| &t.text)
            .collect()
    ));
    let large = layout_of(1920, 1080);
    assert_eq!(large.banner.as_ref().expect("banner").lines.len(), 5);
    assert_eq!(large.legend.as_ref().expect("legend").tags.len(), 6);
    assert_eq!(large.hidden_tags, 0);
    assert!(small.scale < large.scale);
}

#[test]
fn drawings_match_their_snapshots() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let update = std::env::var_os("VPIPE_UPDATE_SNAPSHOTS").is_some();
    for (w, h) in SIZES {
        let (mut img, outputs) = scene(w, h);
        let refs: Vec<&HeadOutput> = outputs.iter().collect();
        Annotator::default().draw_all(&mut img, &refs);
        let path = dir.join(format!("scene_{w}x{h}.png"));
        if update {
            img.save(&path).expect("write snapshot");
            continue;
        }
        let want = image::open(&path)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (VPIPE_UPDATE_SNAPSHOTS=1 writes it)",
                    path.display()
                )
            })
            .into_rgb8();
        assert_eq!(want.dimensions(), img.dimensions());
        // Font rasterisation may move an edge pixel; anything more is a change.
        let off = img
            .pixels()
            .zip(want.pixels())
            .filter(|(a, b)| a.0.iter().zip(b.0).any(|(x, y)| x.abs_diff(y) > 16))
            .count();
        let allowed = (w * h) as usize / 1000;
        assert!(
            off <= allowed,
            "{w}x{h}: {off} pixels differ from {} (allowed {allowed})",
            path.display()
        );
    }
}
