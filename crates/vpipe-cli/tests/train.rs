//! `vpipe train` from the command line: Ctrl-C ends a run with a checkpoint (exit
//! code 130) and no partial file (`--resume` continuing it is tested in vpipe-train),
//! and a bad training file is one clear line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn training_file(dir: &Path, steps: u64) -> PathBuf {
    let r = root();
    let p = dir.join("train.yaml");
    std::fs::write(
        &p,
        format!(
            "backbone: {{weights: {r}/weights/reference/cvnets_mobilevit_xxs.pt}}\ndata: {{images: {r}/tests/fixtures/train_coco/images}}\nheads:\n  - {{name: imagenet, type: classification, teacher: {r}/weights/reference/cvnets_mobilevit_xxs.pt}}\ntrain: {{steps: {steps}, batch_size: 2, checkpoint_every: 1000}}\n",
            r = r.display()
        ),
    )
    .expect("write");
    p
}

#[test]
fn ctrl_c_ends_a_run_with_a_whole_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = training_file(dir.path(), 100_000);
    let out = dir.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_vpipe"))
        .args([
            "train",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--no-progress"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vpipe train");
    // Once the run is under way (its output folder exists), Ctrl-C.
    let start = Instant::now();
    while !out.join("checkpoint").is_dir() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: sends SIGINT to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let done = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(130), "{err}");
    assert!(
        err.contains("checkpoint in") && err.contains("--resume"),
        "{err}"
    );
    let ckpt = out.join("checkpoint");
    for f in ["model.safetensors", "state.safetensors", "losses.csv"] {
        assert!(ckpt.join(f).is_file(), "{f}: {err}");
    }
    assert!(!out.join("model.safetensors").exists());
    let steps = std::fs::read_to_string(ckpt.join("losses.csv"))
        .expect("losses")
        .lines()
        .count()
        - 1;
    assert!(steps >= 1, "{err}");
    // No temporary file is left beside the checkpoint.
    let names: Vec<String> = std::fs::read_dir(&ckpt)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    // A run over the same folder without --resume or --overwrite is refused.
    let again = Command::new(env!("CARGO_BIN_EXE_vpipe"))
        .args([
            "train",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
}

#[test]
fn a_bad_training_file_is_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = training_file(dir.path(), 3);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("steps:", "stepz:");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vpipe"))
        .args(["train", file.to_str().unwrap(), "--out"])
        .arg(dir.path().join("out"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("train.yaml") && err.contains("unknown field `stepz`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
