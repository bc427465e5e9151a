//! The `embedding` head from this crate, through YAML to `custom-head run` (the vpipe
//! command line with the head registered): next to vpipe's `ssd` head on a video and
//! on a still image, and refused with located errors when its weights or options
//! are wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vpipe_custom_head::{PROJECTION, strip, write_random_projection};
use vpipe_media::VideoReader;

/// The seed of the shipped `projection.safetensors`.
const SEED: u64 = 2026;

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn root() -> PathBuf {
    here().join("../..")
}

fn custom_head(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_custom-head"))
        .args(args)
        .output()
        .expect("run custom-head")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The result lines of a run, one JSON object per frame.
fn results(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .expect("results.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The head named `name` in a result line.
fn head<'a>(line: &'a Value, name: &str) -> &'a Value {
    line["heads"]
        .as_array()
        .and_then(|heads| heads.iter().find(|h| h["head"] == name))
        .unwrap_or_else(|| panic!("no head '{name}' in {line}"))
}

/// The embedding vector of a result line, checked to be a unit 32-vector.
fn embedding(line: &Value) -> Vec<f32> {
    let e = head(line, "fingerprint");
    assert_eq!(e["task"], "embedding", "{e}");
    assert_eq!(e["dims"], 32);
    let v: Vec<f32> = e["vector"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect();
    assert_eq!(v.len(), 32);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    v
}

#[test]
fn shipped_projection_is_the_seeded_random_projection() {
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("projection.safetensors");
    write_random_projection(&made, 32, 80, SEED).unwrap();
    let shipped = here().join("projection.safetensors");
    if std::env::var_os("VPIPE_UPDATE_PROJECTION").is_some() {
        std::fs::copy(&made, &shipped).unwrap();
    }
    assert_eq!(
        std::fs::read(&made).unwrap(),
        std::fs::read(&shipped)
            .expect("projection.safetensors (VPIPE_UPDATE_PROJECTION=1 writes it)"),
        "projection.safetensors is not write_random_projection(32, 80, seed {SEED})"
    );
}

#[test]
fn embedding_head_runs_next_to_ssd_on_a_video() {
    let out = tempfile::tempdir().unwrap();
    let video = root().join("assets/street.mp4");
    let run = custom_head(&[
        "run",
        here().join("pipeline.yaml").to_str().unwrap(),
        "--input",
        video.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--max-frames",
        "6",
        "--no-progress",
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let lines = results(out.path());
    assert_eq!(lines.len(), 6);
    let mut vectors = Vec::new();
    for line in &lines {
        assert_eq!(head(line, "objects")["task"], "detection", "{line}");
        vectors.push(embedding(line));
    }
    // Different frames give different embeddings.
    assert_ne!(vectors[0], vectors[5]);

    // The annotated video has the six frames, and the head's strip is drawn on them.
    let annotated = out.path().join("street_annotated.mp4");
    let mut reader =
        VideoReader::open(&vpipe_media::VideoInput::File(annotated)).expect("annotated video");
    let first = reader.next_frame().expect("read").expect("a frame");
    let rgb = first.into_order(vpipe_media::ChannelOrder::Rgb);
    let mut frames = 1;
    while reader.next_frame().expect("read").is_some() {
        frames += 1;
    }
    assert_eq!(frames, 6);
    let (w, h) = (rgb.width as u32, rgb.height as u32);
    let cells = strip(&vectors[0], 12, w, h);
    assert_eq!(cells.len(), 32);
    for (rect, color) in cells {
        // The mean of each cell's inside, which the video's compression keeps close.
        let mut sum = [0f32; 3];
        let mut n = 0.0;
        for y in rect.top() + 3..rect.bottom() - 2 {
            for x in rect.left() + 3..rect.right() - 2 {
                let i = (y as usize * rgb.width + x as usize) * 3;
                for (s, v) in sum.iter_mut().zip(&rgb.data[i..i + 3]) {
                    *s += *v as f32;
                }
                n += 1.0;
            }
        }
        for (c, s) in sum.iter().enumerate() {
            let got = s / n;
            assert!(
                (got - color.0[c] as f32).abs() < 48.0,
                "cell at ({}, {}): channel {c} is {got}, drawn {}",
                rect.left(),
                rect.top(),
                color.0[c]
            );
        }
    }
}

#[test]
fn embedding_head_draws_its_strip_on_a_still_image() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let image = input.path().join("image.png");
    std::fs::copy(root().join("tests/fixtures/image.png"), &image).unwrap();
    let run = custom_head(&[
        "run",
        here().join("pipeline.yaml").to_str().unwrap(),
        "--input",
        image.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let lines = results(out.path());
    assert_eq!(lines.len(), 1);
    let v = embedding(&lines[0]);
    let drawn = image::open(out.path().join("image.png")).unwrap().to_rgb8();
    for (rect, color) in strip(&v, 12, drawn.width(), drawn.height()) {
        for y in rect.top()..rect.bottom() {
            for x in rect.left()..rect.right() {
                assert_eq!(*drawn.get_pixel(x as u32, y as u32), color, "({x}, {y})");
            }
        }
    }
}

/// Writes a pipeline whose embedding head has `options` (YAML lines under
/// `options:`) and the weights `tensors` (name → shape), and returns what
/// `custom-head validate` says of it.
fn validate(options: &str, tensors: &[(&str, [usize; 2])]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("head.safetensors");
    let data: BTreeMap<&str, Vec<u8>> = tensors
        .iter()
        .map(|(name, [a, b])| (*name, vec![0u8; a * b * 4]))
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.to_vec(),
                &data[name],
            )
            .unwrap();
            (*name, view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &weights).unwrap();
    let backbone = root().join("weights/reference/cvnets_ssd_mobilevit_xxs.pt");
    let yaml = format!(
        "backbones:\n  main:\n    weights: {}\nheads:\n  - name: objects\n    type: ssd\n  - name: fingerprint\n    type: embedding\n    weights: head.safetensors\n    options:\n{options}\n",
        backbone.display()
    );
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = custom_head(&["validate", file.to_str().unwrap()]);
    (out.status.success(), text(&out))
}

#[test]
fn wrong_weights_and_options_are_located_errors() {
    let good = [(PROJECTION, [32, 80])];
    let (ok, msg) = validate("      dims: 32", &good);
    assert!(ok, "{msg}");

    let (ok, msg) = validate("      dims: 32", &[("proj.weight", [32, 80])]);
    assert!(!ok);
    assert!(
        msg.contains("p.yaml:9:5: heads[1].weights:")
            && msg.contains("missing tensor 'projection.weight' (expected shape [32, 80])"),
        "{msg}"
    );

    let (ok, msg) = validate("      dims: 32", &[(PROJECTION, [32, 81])]);
    assert!(!ok);
    assert!(
        msg.contains("p.yaml:9:5: heads[1].weights:")
            && msg.contains(
                "tensor 'projection.weight' has shape [32, 81], the architecture needs [32, 80]"
            ),
        "{msg}"
    );

    let (ok, msg) = validate(
        "      dims: 32",
        &[(PROJECTION, [32, 80]), ("extra.bias", [1, 32])],
    );
    assert!(!ok);
    assert!(
        msg.contains("heads[1].weights:")
            && msg.contains("unexpected tensor(s), first 'extra.bias'"),
        "{msg}"
    );

    let (ok, msg) = validate("      dims: many", &good);
    assert!(!ok);
    assert!(
        msg.contains("p.yaml:11:13: heads[1].options.dims: invalid type: string \"many\", expected a whole number"),
        "{msg}"
    );

    let (ok, msg) = validate("      layer: 7", &good);
    assert!(!ok);
    assert!(
        msg.contains("heads[1].options.layer: expected a layer from 1 to 5")
            && msg.contains("got 7; left out, it is 5"),
        "{msg}"
    );

    let (ok, msg) = validate("      dim: 32", &good);
    assert!(!ok);
    assert!(
        msg.contains("heads[1].options.dim: unknown option 'dim' for the embedding head")
            && msg.contains("did you mean 'dims'?"),
        "{msg}"
    );
}
