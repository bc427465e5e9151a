//! The official-weights twins (`pipelines/official/*.yaml`) end to end, with the
//! registry's download addresses served from a local mirror (the shipped reference
//! checkpoints stand in for Apple's files, which cannot be downloaded here), the
//! `vpipe weights` commands against the same mirror, and `vpipe preprocess`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vpipe_preprocess::PresetRecipe;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vpipe(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vpipe"));
    cmd.args(args)
        .current_dir(root())
        .env_remove("VPIPE_OFFLINE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run vpipe")
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves, for every mirrored address of an ml-cvnets MobileViT-XXS checkpoint,
/// the reference checkpoint of the same task; 404 elsewhere. Returns the mirror
/// prefix.
fn serve_mirror() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = String::new();
            let mut reader = BufReader::new(&stream);
            let _ = reader.read_line(&mut request);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) <= 2 {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let file = match path.rsplit('/').next() {
                Some("mobilevit_xxs.pt") => Some("cvnets_mobilevit_xxs.pt"),
                Some("ssd_mobilevit_xxs_320.pt") => Some("cvnets_ssd_mobilevit_xxs.pt"),
                Some("deeplabv3_mobilevit_xxs.pt") => Some("cvnets_deeplabv3_mobilevit_xxs.pt"),
                _ => None,
            };
            let body =
                file.and_then(|f| std::fs::read(root().join("weights/reference").join(f)).ok());
            let _ = match body {
                Some(b) => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(&b)),
                None => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    format!("http://127.0.0.1:{port}/mirror")
}

/// A temporary folder, the empty cache folder in it, and the mirror prefix.
fn mirrored_cache() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let mirror = PathBuf::from(serve_mirror());
    let tmp = tempfile::tempdir().expect("temp dir");
    let cache = tmp.path().join("cache");
    (tmp, cache, mirror)
}

#[test]
fn official_twins_fetch_their_weights_by_registry_name_and_run() {
    let (tmp, cache, mirror) = mirrored_cache();
    let envs = [
        ("VPIPE_CACHE", cache.as_path()),
        ("VPIPE_WEIGHTS_MIRROR", mirror.as_path()),
    ];
    // validate downloads nothing: it says what a run would fetch.
    let out = vpipe(&["validate", "pipelines/official/multitask.yaml"], &envs);
    assert_ok(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    for name in [
        "cvnets/ssd_mobilevit_xxs_320",
        "cvnets/deeplabv3_mobilevit_xxs_voc",
        "cvnets/mobilevit_xxs",
    ] {
        assert!(said.contains(name), "{said}");
    }
    assert!(said.contains("a run would first fetch"), "{said}");
    assert!(!cache.exists(), "validate wrote into the cache");
    for name in ["classify", "detect", "segment", "multitask"] {
        let twin = format!("pipelines/official/{name}.yaml");
        let out = vpipe(&["inspect", &twin], &envs);
        assert_ok(&out);
        // Once cached, validate checks the whole graph.
        let checked = vpipe(&["validate", &twin], &envs);
        assert_ok(&checked);
        assert!(
            String::from_utf8_lossy(&checked.stdout).contains(": valid ("),
            "{}",
            String::from_utf8_lossy(&checked.stdout)
        );
        let graph = String::from_utf8_lossy(&out.stdout);
        // The same graph as the offline pipeline, on the cached registry files.
        let offline = vpipe(&["inspect", &format!("pipelines/{name}.yaml")], &[]);
        assert_ok(&offline);
        let offline = String::from_utf8_lossy(&offline.stdout);
        let shape = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.contains("head '") || l.contains("passes per frame"))
                .map(|l| l.split(" (weights").next().unwrap_or(l).to_string())
                .collect()
        };
        assert_eq!(shape(&graph), shape(&offline), "{name}: {graph}");
        assert!(
            graph.contains(&cache.display().to_string()),
            "{name}: weights not from the cache: {graph}"
        );
    }
    let out_dir = tmp.path().join("out");
    let out = vpipe(
        &[
            "run",
            "pipelines/official/detect.yaml",
            "--input",
            "assets/squirrel_cls.jpg",
            "--out",
            out_dir.to_str().expect("utf-8"),
            "--no-progress",
        ],
        &envs,
    );
    assert_ok(&out);
    assert!(out_dir.join("squirrel_cls.jpg").is_file());
    let results = std::fs::read_to_string(out_dir.join("results.jsonl")).expect("results");
    assert_eq!(results.lines().count(), 1);
    assert!(results.contains("\"head\":\"objects\""), "{results}");
}

#[test]
fn preprocess_writes_each_input_as_npy_and_names_bad_presets_and_files() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out_dir = tmp.path().join("npy");
    let inputs = root().join("tests/fixtures/preprocess/inputs");
    let (a, b) = (
        inputs.join("odd_517x389.png"),
        inputs.join("strip_300x7.png"),
    );
    let out = vpipe(
        &[
            "preprocess",
            "--preset",
            "cvnets-cls",
            "--out",
            out_dir.to_str().expect("utf-8"),
            a.to_str().expect("utf-8"),
            b.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_ok(&out);
    for (stem, image) in [("odd_517x389", &a), ("strip_300x7", &b)] {
        let written = vpipe_io::npy::read(&out_dir.join(format!("{stem}.npy"))).expect("npy");
        assert_eq!(written.shape, vec![1, 3, 256, 256]);
        let values = written.to_f32("input").expect("f32");
        let frame = vpipe_media::load_image(image).expect("decode");
        let (want, _) = vpipe_preprocess::PreprocessPreset::CvnetsCls
            .recipe()
            .apply(&frame)
            .expect("preprocess");
        assert_eq!(values.len(), want.len());
        assert!(
            values
                .iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
    }

    let out = vpipe(
        &[
            "preprocess",
            "--preset",
            "cvnets-sd",
            "--out",
            "x",
            a.to_str().expect("utf-8"),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("unknown preprocessing preset 'cvnets-sd'")
            && err.contains("did you mean 'cvnets-ssd'?"),
        "{err}"
    );

    let bad = tmp.path().join("bad.png");
    std::fs::write(&bad, b"not a png").expect("write");
    let out = vpipe(
        &[
            "preprocess",
            "--preset",
            "timm",
            "--out",
            out_dir.to_str().expect("utf-8"),
            bad.to_str().expect("utf-8"),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot decode image") && err.contains("bad.png") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!out_dir.join("bad.npy").exists());
}

#[test]
fn weights_fetch_import_and_verify_through_the_command_line() {
    let (tmp, cache, mirror) = mirrored_cache();
    let envs = [
        ("VPIPE_CACHE", cache.as_path()),
        ("VPIPE_WEIGHTS_MIRROR", mirror.as_path()),
    ];
    // Nothing cached yet, and run outside vpipe's folder: verify says so.
    let out = Command::new(env!("CARGO_BIN_EXE_vpipe"))
        .args(["weights", "verify"])
        .current_dir(tmp.path())
        .env("VPIPE_CACHE", &cache)
        .output()
        .expect("run vpipe");
    assert_ok(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("no registry weights in the cache"), "{said}");
    assert!(said.contains("no shipped weights checked"), "{said}");

    let out = vpipe(&["weights", "fetch", "cvnets/mobilevit_xxs"], &envs);
    assert_ok(&out);
    let cached = cache.join("cvnets/mobilevit_xxs/mobilevit_xxs.pt");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&cached.display().to_string()),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        std::fs::read(&cached).expect("cached"),
        std::fs::read(root().join("weights/reference/cvnets_mobilevit_xxs.pt")).expect("ref")
    );
    let out = vpipe(&["weights", "verify", "cvnets/mobilevit_xxs"], &envs);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok ("));
    let out = vpipe(&["weights", "fetch", "cvnets/mobilevit_xxx"], &envs);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cvnets/mobilevit_xxs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Import by registry name: the vpipe-format file gives the same logits.
    let imported = tmp.path().join("xxs.safetensors");
    let out = vpipe(
        &[
            "weights",
            "import",
            "cvnets/mobilevit_xxs",
            "--out",
            imported.to_str().expect("utf-8"),
        ],
        &envs,
    );
    assert_ok(&out);
    let logits = |weights: &Path, dir: &str| {
        let out_dir = tmp.path().join(dir);
        let out = vpipe(
            &[
                "infer",
                "--weights",
                weights.to_str().expect("utf-8"),
                "--tensor",
                "tests/fixtures/cvnets_xxs_cls_input.npy",
                "--out",
                out_dir.to_str().expect("utf-8"),
            ],
            &[],
        );
        assert_ok(&out);
        vpipe_io::npy::read(&out_dir.join("logits.npy"))
            .expect("logits")
            .to_f32("logits")
            .expect("f32")
    };
    let d = vpipe_io::compare::max_abs_diff(&logits(&imported, "a"), &logits(&cached, "b"))
        .expect("comparable");
    assert_eq!(d, 0.0);
}

/// The shipped training files, with their checkpoints fetched by registry name from
/// the mirror: distillation of the three public checkpoints onto one backbone (on the
/// bundled video), and supervised training on the bundled COCO subset; each result
/// runs as one backbone pass per frame for all of its heads.
#[test]
fn the_shipped_training_files_fetch_their_checkpoints_and_train() {
    let (tmp, cache, mirror) = mirrored_cache();
    let envs = [
        ("VPIPE_CACHE", cache.as_path()),
        ("VPIPE_WEIGHTS_MIRROR", mirror.as_path()),
    ];
    for (file, distill, heads) in [("distill", true, 3usize), ("coco", false, 2)] {
        let out = tmp.path().join(file);
        let out_s = out.display().to_string();
        let training_file = format!("pipelines/train/{file}.yaml");
        let mut args = vec![
            "train",
            &training_file,
            "--out",
            &out_s,
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--no-progress",
        ];
        if distill {
            args.push("--distill");
        }
        let r = vpipe(&args, &envs);
        assert_ok(&r);
        let run_out = tmp.path().join(format!("{file}-run"));
        let r = vpipe(
            &[
                "run",
                &format!("{out_s}/pipeline.yaml"),
                "--input",
                "assets/squirrel_cls.jpg",
                "--out",
                &run_out.display().to_string(),
                "--json",
                "--no-progress",
            ],
            &envs,
        );
        assert_ok(&r);
        let summary: serde_json::Value =
            serde_json::from_slice(r.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(summary["backbone_runs"], 1, "{summary}");
        let results = std::fs::read_to_string(run_out.join("results.jsonl")).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(results.lines().next().unwrap()).unwrap();
        assert_eq!(
            line["heads"].as_array().map(Vec::len),
            Some(heads),
            "{file}"
        );
    }
}
