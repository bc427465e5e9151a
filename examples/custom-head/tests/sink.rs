//! A sink of the user's own (SQLite) next to vpipe's outputs, through the library;
//! and a sink that fails mid-run while the other outputs complete.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use vpipe_custom_head::registry;
use vpipe_custom_head::sink::SqliteSink;
use vpipe_pipeline::{
    FrameResults, Pipeline, PipelineError, PipelineFile, RunOptions, Sink, resolve_input,
    run_with_sinks,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pipeline() -> Pipeline {
    let file = PipelineFile::read(&root().join("examples/custom-head/pipeline.yaml")).unwrap();
    Pipeline::compile(file, &registry(), &vpipe_core::device::default_device()).unwrap()
}

fn options(out: &Path, max_frames: u64) -> RunOptions {
    RunOptions {
        out_dir: out.to_path_buf(),
        progress: false,
        stop: Arc::new(AtomicBool::new(false)),
        max_frames: Some(max_frames),
        overwrite: false,
    }
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn result_lines(out: &Path) -> usize {
    let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    text.lines().count()
}

#[test]
fn results_go_into_a_database_next_to_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, db) = (tmp.path().join("out"), tmp.path().join("results.sqlite"));
    let p = pipeline();
    let input = resolve_input(root().join("assets/street.mp4").to_str().unwrap(), false).unwrap();
    let sink = SqliteSink::open(&db, &p.name).unwrap();
    let summary = run_with_sinks(&p, &input, &options(&out, 5), vec![Box::new(sink)]).unwrap();
    assert_eq!(summary.frames, 5);
    assert_eq!(result_lines(&out), 5);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM runs"), 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM frames"), 5);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM results WHERE task = 'detection'"),
        5
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM results WHERE task = 'embedding'"),
        5
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM results WHERE head = 'fingerprint' AND json_array_length(json, '$.vector') = 32"
        ),
        5
    );
    // A second run adds its own rows.
    let out2 = tmp.path().join("out2");
    let sink = SqliteSink::open(&db, &p.name).unwrap();
    run_with_sinks(&p, &input, &options(&out2, 2), vec![Box::new(sink)]).unwrap();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM frames WHERE run = 2"), 2);
}

/// A sink whose disk fills up at frame 2.
struct DiskFull;

impl Sink for DiskFull {
    fn name(&self) -> String {
        "archive".into()
    }

    fn write(&mut self, frame: &FrameResults<'_>) -> vpipe_pipeline::Result<Vec<PathBuf>> {
        if frame.index == 2 {
            return Err(PipelineError::Io {
                path: PathBuf::from("/archive/frames.bin"),
                cause: std::io::Error::from(std::io::ErrorKind::StorageFull),
            });
        }
        Ok(Vec::new())
    }

    fn finish(self: Box<Self>) -> vpipe_pipeline::Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
}

#[test]
fn a_sink_failing_mid_run_stops_the_run_and_the_other_outputs_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, db) = (tmp.path().join("out"), tmp.path().join("results.sqlite"));
    let p = pipeline();
    let input = resolve_input(root().join("assets/street.mp4").to_str().unwrap(), false).unwrap();
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(DiskFull),
        Box::new(SqliteSink::open(&db, &p.name).unwrap()),
    ];
    let err = run_with_sinks(&p, &input, &options(&out, 200), sinks).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("output 'archive' failed: /archive/frames.bin:")
            && msg.contains("the other outputs were completed"),
        "{msg}"
    );
    // The run stopped early; every other output holds the same, complete frames.
    let lines = result_lines(&out);
    assert!((3..200).contains(&lines), "{lines} lines");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM frames") as usize, lines);
    let video = vpipe_media::VideoInput::File(out.join("street_annotated.mp4"));
    let mut reader = vpipe_media::VideoReader::open(&video).unwrap();
    let mut frames = 0;
    while reader.next_frame().unwrap().is_some() {
        frames += 1;
    }
    assert_eq!(frames, lines);
    let partial: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}
