//! How `vpipe` ends when interrupted: Ctrl-C during a run (exit 130, after writing a
//! playable video of the frames so far), and a reader that closes the pipe early.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn ctrl_c_writes_what_it_has_and_exits_130() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out_dir = tmp.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_vpipe"))
        .args([
            "run",
            "pipelines/detect.yaml",
            "--input",
            "assets/street.mp4",
            "--no-progress",
            "--out",
        ])
        .arg(&out_dir)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vpipe");
    // The outputs' temporary files appear with the first processed frame, after
    // the Ctrl-C handler is in place: interrupt then.
    let started = Instant::now();
    while std::fs::read_dir(&out_dir).map_or(true, |mut d| d.next().is_none()) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no output appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(err.contains("stopped early"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("error:"),
        "{err}"
    );

    let lines = std::fs::read_to_string(out_dir.join("results.jsonl")).expect("results");
    let frames = lines.lines().count();
    assert!(frames > 0 && frames < 200, "{frames} frames");
    let video = out_dir.join("street_annotated.mp4");
    let mut reader = vpipe_media::VideoReader::open(&vpipe_media::VideoInput::File(video))
        .expect("the video opens");
    let mut decoded = 0;
    while reader.next_frame().expect("frame").is_some() {
        decoded += 1;
    }
    assert_eq!(decoded, frames);
    // Nothing half-written is left beside the outputs.
    for entry in std::fs::read_dir(&out_dir).expect("out") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            name == "results.jsonl"
                || name == "street_annotated.mp4"
                || name == ".vpipe-outputs.json",
            "left over: {name}"
        );
    }
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpipe"))
        .args(["weights", "list"])
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vpipe");
    // The reader goes away before reading anything (as `| head -0` would).
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.is_empty(), "{err}");
    // Ended by SIGPIPE, like other tools (or done, had it written before the close).
    assert!(
        output.status.signal() == Some(SIGPIPE) || output.status.success(),
        "{:?}",
        output.status
    );
}

/// SIGPIPE's number on Linux.
const SIGPIPE: i32 = 13;
