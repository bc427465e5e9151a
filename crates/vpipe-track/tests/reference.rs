//! ByteTrack against Roboflow supervision 0.26.1 on a recorded detection sequence
//! (`tests/fixtures/tracking`, made by `scripts/make_track_reference.py`): 320 frames
//! with crossings, an occluder and missed, low-score and false detections.

use std::path::PathBuf;

use vpipe_track::{ByteTrack, ByteTrackConfig, TrackInput};

fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tracking")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
}

fn numbers(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn same_ids_and_boxes_as_supervision() {
    let detections = fixture("detections.json");
    let expected = fixture("expected.json");
    let frames = detections.as_array().expect("frames");
    assert!(frames.len() >= 300);
    let mut tracker = ByteTrack::new(ByteTrackConfig::default());
    let mut worst = 0.0f64;
    for (f, (dets, want)) in frames
        .iter()
        .zip(expected.as_array().expect("frames"))
        .enumerate()
    {
        let input: Vec<TrackInput> = dets
            .as_array()
            .expect("rows")
            .iter()
            .map(|row| {
                let r = numbers(row);
                TrackInput {
                    bbox: [r[0] as f32, r[1] as f32, r[2] as f32, r[3] as f32],
                    score: r[4] as f32,
                }
            })
            .collect();
        let got = tracker.update(&input);
        let want: Vec<Vec<f64>> = want.as_array().expect("rows").iter().map(numbers).collect();
        let mut got_ids: Vec<u64> = got.iter().map(|t| t.id.expect("an id")).collect();
        let mut want_ids: Vec<u64> = want.iter().map(|r| r[0] as u64).collect();
        got_ids.sort_unstable();
        want_ids.sort_unstable();
        assert_eq!(got_ids, want_ids, "frame {}: track ids", f + 1);
        for w in &want {
            let g = got
                .iter()
                .find(|t| t.id == Some(w[0] as u64))
                .expect("the track");
            for k in 0..4 {
                let d = (g.bbox[k] - w[1 + k]).abs();
                worst = worst.max(d);
                assert!(
                    d <= 1e-4,
                    "frame {}, track {}: {:?} vs {:?}",
                    f + 1,
                    w[0],
                    g.bbox,
                    &w[1..]
                );
            }
        }
    }
    eprintln!("largest box difference: {worst:e}");
}
