//! Pipeline YAML files: parsed and checked as `vpipe validate` does
//! (`PipelineFile::read_without_fetching`, which never downloads weights), with
//! an empty weights cache and the network off.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vpipe_pipeline::PipelineFile;

/// A folder holding the pipeline file and an empty weights cache, made once.
static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    // SAFETY: set before any other thread of this process reads the environment
    // (libFuzzer runs the target on one thread).
    unsafe {
        std::env::set_var("VPIPE_CACHE", dir.path().join("cache"));
        std::env::set_var("VPIPE_OFFLINE", "1");
        std::env::remove_var("VPIPE_WEIGHTS_MIRROR");
    }
    dir
});

fuzz_target!(|data: &[u8]| {
    // Pipeline files are text: bytes that are not UTF-8 are refused on reading.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path: PathBuf = DIR.path().join("pipeline.yaml");
    std::fs::write(&path, text).expect("write pipeline file");
    if let Ok(file) = PipelineFile::read_without_fetching(&path) {
        let _ = file.name();
        let _ = file.device();
        let _ = file.pending_weights();
        for i in 0..file.spec.heads.len() {
            let _ = file.backbone_of(i);
        }
    }
});
