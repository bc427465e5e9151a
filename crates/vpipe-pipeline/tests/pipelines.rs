//! Pipelines end to end: the shipped files, strict validation, the shared backbone,
//! and the runner over images, folders and videos with bad input among them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use vpipe_core::device::DeviceSpec;
use vpipe_heads::HeadRegistry;
use vpipe_media::{Frame, VideoInput, VideoReader, VideoWriter, load_image};
use vpipe_pipeline::{
    ConfigError, Input, Pipeline, PipelineError, PipelineFile, RunOptions, resolve_input, run,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh temporary folder for one test, removed when the guard drops.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("vpipe-pl-{name}-"))
        .tempdir()
        .expect("temp dir")
}

fn compile(path: &Path) -> vpipe_pipeline::Result<Pipeline> {
    let file = PipelineFile::read(path)?;
    Pipeline::compile(
        file,
        &HeadRegistry::with_builtins(),
        &vpipe_core::device::default_device(),
    )
}

/// Writes a pipeline next to the reference weights' folder and compiles it.
fn compile_text(dir: &Path, text: &str) -> vpipe_pipeline::Result<Pipeline> {
    let p = dir.join("p.yaml");
    let weights = root().join("weights/reference");
    std::fs::write(&p, text.replace("$W", &weights.display().to_string())).unwrap();
    compile(&p)
}

/// One SSD backbone feeding three heads, two of them taken from checkpoints
/// fine-tuned with other backbones (allowed explicitly): the shared-backbone
/// mechanics, with the reference weights.
const SHARED: &str = "backbones:
  shared:
    weights: $W/cvnets_ssd_mobilevit_xxs.pt
heads:
  - {name: objects, type: ssd}
  - name: scene
    type: deeplabv3
    weights: $W/cvnets_deeplabv3_mobilevit_xxs.pt
    allow_backbone_mismatch: true
    options: {stride: 32}
  - name: imagenet
    type: classification
    weights: $W/cvnets_mobilevit_xxs.pt
    allow_backbone_mismatch: true
";

fn config_error(r: vpipe_pipeline::Result<Pipeline>) -> ConfigError {
    match r {
        Err(PipelineError::Config(c)) => *c,
        Err(other) => panic!("not a config error: {other}"),
        Ok(_) => panic!("the pipeline was accepted"),
    }
}

fn options(out: &Path) -> RunOptions {
    RunOptions {
        out_dir: out.to_path_buf(),
        progress: false,
        stop: Arc::new(AtomicBool::new(false)),
        max_frames: None,
        overwrite: false,
    }
}

#[test]
fn shipped_pipelines_compile_and_describe_their_graph() {
    for name in ["classify", "detect", "segment", "multitask"] {
        let p = compile(&root().join(format!("pipelines/{name}.yaml")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!p.head_names().is_empty());
    }
    // Each public checkpoint's head on its own backbone: three passes per frame.
    let p = compile(&root().join("pipelines/multitask.yaml")).unwrap();
    let text = p.describe();
    assert_eq!(p.branches.len(), 3, "{text}");
    assert!(text.contains("backbone passes per frame: 3"), "{text}");
    assert!(text.contains("head 'objects': ssd on L4, L5"), "{text}");
    for b in &p.branches {
        assert_eq!(b.heads.len(), 1, "{text}");
        assert_eq!(b.heads[0].weights, b.weights, "{text}");
    }
}

#[test]
fn the_device_key_is_checked_where_written_and_an_override_replaces_it() {
    let dir_tmp = scratch("device");
    let dir = dir_tmp.path();
    let text = "device: vulkan\nbackbones:\n  main:\n    weights: $W/cvnets_mobilevit_xxs.pt\nheads:\n  - {name: c, type: classification}\n";
    let path = dir.join("p.yaml");
    if !DeviceSpec::Vulkan(None).is_compiled() {
        // CI's build: a GPU device is a located error naming the feature.
        let e = config_error(compile_text(dir, text));
        assert_eq!(
            e.to_string(),
            format!(
                "{}:1:1: device: device 'vulkan' needs vpipe built with --features vulkan (hint: or run on the CPU: `device: cpu` or `--device cpu`)",
                path.display()
            )
        );
    }
    let e = config_error(compile_text(dir, &text.replace("vulkan", "vulcan")));
    assert_eq!((e.path.as_str(), e.line, e.column), ("device", 1, 1), "{e}");
    assert_eq!(e.hint.as_deref(), Some("did you mean 'vulkan'?"), "{e}");
    // `--device cpu` replaces the key, whatever it says.
    let file = PipelineFile::read_with_device(&path, Some(DeviceSpec::Cpu)).unwrap();
    assert_eq!(file.device(), DeviceSpec::Cpu);
    assert_eq!(file.spec.device, "cpu");
    let p = Pipeline::compile(
        file,
        &HeadRegistry::with_builtins(),
        &DeviceSpec::Cpu.device().unwrap(),
    )
    .unwrap();
    let frame = load_image(&root().join("assets/squirrel_cls.jpg")).unwrap();
    assert_eq!(p.run(&[&frame]).unwrap().len(), 1);
}

#[test]
fn the_shared_backbone_runs_once_per_frame_for_all_heads() {
    let dir_tmp = scratch("shared");
    let p = compile_text(dir_tmp.path(), SHARED).unwrap();
    assert!(p.describe().contains("backbone passes per frame: 1"));
    let frame = load_image(&root().join("assets/squirrel_cls.jpg")).unwrap();
    let results = p.run(&[&frame, &frame]).unwrap();
    assert_eq!(
        p.backbone_runs(),
        1,
        "one batch of two frames: one backbone pass"
    );
    assert_eq!(results.len(), 2);
    for per_frame in &results {
        let tasks: Vec<&str> = per_frame.iter().map(|o| o.head.as_str()).collect();
        assert_eq!(tasks, ["objects", "scene", "imagenet"]);
    }
    for _ in 0..3 {
        p.run(&[&frame]).unwrap();
    }
    assert_eq!(p.backbone_runs(), 4);
}

/// A checkpoint read once hands its tensors to every head and backbone that asks:
/// two SSD heads with different thresholds, a head naming the backbone's own file,
/// two backbones on one file.
#[test]
fn one_checkpoint_serves_several_heads_and_backbones() {
    let dir_tmp = scratch("shared-file");
    let p = compile_text(
        dir_tmp.path(),
        "backbones:
  a:
    weights: $W/cvnets_ssd_mobilevit_xxs.pt
  b:
    weights: $W/cvnets_ssd_mobilevit_xxs.pt
heads:
  - {name: loose, type: ssd, backbone: a, options: {conf_threshold: 0.001, max_detections: 5}}
  - {name: strict, type: ssd, backbone: a, options: {conf_threshold: 1.0}}
  - {name: own, type: ssd, backbone: b, weights: $W/cvnets_ssd_mobilevit_xxs.pt, options: {conf_threshold: 0.001, max_detections: 5}}
",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.branches.len(), 2);
    let frame = load_image(&root().join("assets/squirrel_cls.jpg")).unwrap();
    let results = p.run(&[&frame]).unwrap();
    let detections = |i: usize| match &results[0][i].output {
        vpipe_core::result::HeadOutput::Detection { detections } => detections.clone(),
        other => panic!("not detections: {other:?}"),
    };
    let (loose, strict, own) = (detections(0), detections(1), detections(2));
    assert_eq!(loose.len(), 5, "{loose:?}");
    assert!(strict.is_empty(), "{strict:?}");
    // The same weights through the second backbone give the same boxes.
    assert_eq!(own, loose);
}

#[test]
fn validation_errors_name_the_place_and_suggest_a_fix() {
    let dir_tmp = scratch("validate");
    let dir = dir_tmp.path();
    let e = config_error(compile_text(
        dir,
        "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\nheads:\n  - name: d\n    type: sdd\n",
    ));
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (6, 5, "heads[0].type"),
        "{e}"
    );
    assert!(e.message.contains("unknown head type 'sdd'"), "{e}");
    assert_eq!(e.hint.as_deref(), Some("did you mean 'ssd'?"));

    let e = config_error(compile_text(
        dir,
        "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\nheads:\n  - name: d\n    type: ssd\n    options:\n      conf_treshold: 0.5\n",
    ));
    assert_eq!(e.path, "heads[0].options.conf_treshold", "{e}");
    assert_eq!((e.line, e.column), (8, 7), "{e}");
    assert_eq!(e.hint.as_deref(), Some("did you mean 'conf_threshold'?"));

    // Option values: located at the value, in words (the type; then the range).
    let e = config_error(compile_text(
        dir,
        "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\nheads:\n  - name: d\n    type: ssd\n    options:\n      max_detections: \"lots\"\n",
    ));
    assert_eq!(
        (e.line, e.column, e.path.as_str(), e.message.as_str()),
        (
            8,
            23,
            "heads[0].options.max_detections",
            "invalid type: string \"lots\", expected a whole number"
        ),
        "{e}"
    );
    for (option, expected) in [
        ("top_k: 0", "expected a whole number ≥ 1"),
        ("conf_threshold: 30", "expected a number from 0 to 1"),
        ("nms_iou: -1", "expected a number from 0 to 1"),
    ] {
        let e = config_error(compile_text(
            dir,
            &format!(
                "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\nheads:\n  - name: d\n    type: ssd\n    options: {{{option}}}\n"
            ),
        ));
        let key = option.split(':').next().unwrap_or_default();
        assert_eq!(e.path, format!("heads[0].options.{key}"), "{e}");
        assert_eq!(e.message, expected, "{e}");
        assert_eq!(e.line, 7, "{e}");
    }
    let e = config_error(compile_text(
        dir,
        "backbones:\n  main:\n    weights: $W/cvnets_deeplabv3_mobilevit_xxs.pt\nheads:\n  - {name: s, type: deeplabv3, options: {stride: 12}}\n",
    ));
    assert_eq!(e.message, "expected 32, 16 or 8", "{e}");

    // A head fine-tuned with another backbone than the one it is attached to.
    let e = config_error(compile_text(
        dir,
        "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\n    output_stride: 16\nheads:\n  - name: s\n    type: deeplabv3\n    weights: $W/cvnets_deeplabv3_mobilevit_xxs.pt\n",
    ));
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (8, 5, "heads[0].weights"),
        "{e}"
    );
    assert!(
        e.message.contains("head 's' comes from")
            && e.message.contains("cvnets_deeplabv3_mobilevit_xxs.pt")
            && e.message.contains("backbone 'main' from")
            && e.message.contains("cvnets_ssd_mobilevit_xxs.pt"),
        "{e}"
    );
    let hint = e.hint.as_deref().unwrap_or("");
    assert!(
        hint.contains("its own backbone") && hint.contains("allow_backbone_mismatch: true"),
        "{e}"
    );
    // Allowed on purpose, the same pipeline compiles.
    compile_text(
        dir,
        "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\n    output_stride: 16\nheads:\n  - name: s\n    type: deeplabv3\n    weights: $W/cvnets_deeplabv3_mobilevit_xxs.pt\n    allow_backbone_mismatch: true\n",
    )
    .unwrap();
    // The same weights in another file (Hugging Face .bin beside its .safetensors)
    // are the same backbone by content: no error.
    compile_text(
        dir,
        "backbones:\n  main:\n    weights: $W/hf_mobilevit_xxs_cls.safetensors\nheads:\n  - name: c\n    type: classification\n    weights: $W/hf_mobilevit_xxs_cls.bin\n",
    )
    .unwrap();

    // DeepLab expects stride-16 features; this backbone gives 32.
    let e = config_error(compile_text(
        dir,
        "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\nheads:\n  - name: s\n    type: deeplabv3\n    backbone: main\n    weights: $W/cvnets_deeplabv3_mobilevit_xxs.pt\n    allow_backbone_mismatch: true\n",
    ));
    assert_eq!(e.path, "heads[0].backbone", "{e}");
    assert!(
        e.message.contains("layer 5 at output stride 16") && e.message.contains("gives stride 32"),
        "{e}"
    );
    let hint = e.hint.as_deref().unwrap_or("");
    assert!(
        hint.contains("output_stride") && hint.contains("the head's `stride` option to 32"),
        "{e}"
    );

    let e = config_error(compile_text(
        dir,
        "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\n    preprocess: cvnets_ssd\nheads:\n  - {name: d, type: ssd}\n",
    ));
    assert_eq!(e.path, "backbones.main.preprocess");
    assert_eq!(e.hint.as_deref(), Some("did you mean 'cvnets-ssd'?"));

    let e = config_error(compile_text(
        dir,
        "backbones:\n  a:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\n  b:\n    weights: $W/cvnets_mobilevit_xxs.pt\nheads:\n  - {name: d, type: ssd, backbone: c}\n",
    ));
    assert_eq!(e.path, "heads[0].backbone");
    assert!(e.message.contains("no backbone named 'c'"), "{e}");

    // A file that is not a checkpoint.
    let bogus = dir.join("bogus.pt");
    std::fs::write(&bogus, b"not a checkpoint").unwrap();
    let e = config_error(compile_text(
        dir,
        &format!(
            "backbones:\n  main:\n    weights: {}\nheads:\n  - {{name: d, type: ssd}}\n",
            bogus.display()
        ),
    ));
    assert_eq!(e.path, "backbones.main.weights", "{e}");
}

/// A short video of the test photo, shifted a little each frame.
/// How many frames the video at `path` has, read to its end.
fn frames_of(path: &Path) -> u64 {
    let mut r = VideoReader::open(&VideoInput::File(path.to_path_buf())).unwrap();
    let mut n = 0;
    while r.next_frame().unwrap().is_some() {
        n += 1;
    }
    n
}

fn make_video(path: &Path, frames: usize) {
    let photo = load_image(&root().join("tests/fixtures/image.png")).unwrap();
    let (w, h) = (photo.width, photo.height);
    let mut writer = VideoWriter::create(path, "MJPG", 10.0, w, h).unwrap();
    for i in 0..frames {
        let mut data = photo.data.clone();
        data.rotate_left((i * 12) % (w * 3));
        writer.write(&Frame::new(w, h, data).unwrap()).unwrap();
    }
    writer.finish().unwrap();
}

#[test]
fn a_video_run_writes_a_playable_video_and_one_result_line_per_frame() {
    let dir_tmp = scratch("video");
    let dir = dir_tmp.path();
    let video = dir.join("clip.avi");
    make_video(&video, 6);
    let p = compile(&root().join("pipelines/multitask.yaml")).unwrap();
    let out = dir.join("out");
    let input = resolve_input(video.to_str().unwrap(), false).unwrap();
    assert!(matches!(input, Input::Video(VideoInput::File(_))));
    let summary = run(&p, &input, &options(&out)).unwrap();
    assert_eq!(summary.frames, 6);
    assert_eq!(summary.backbone_runs, 18, "three backbones, six frames");
    assert!(summary.failed.is_empty());
    // Every stage reported work, on the CPU clock and on the wall clock.
    let (cpu, busy) = (summary.stages.named(), summary.busy.named());
    for ((name, cpu), (_, busy)) in cpu.iter().zip(busy) {
        assert!(
            !cpu.is_zero() && !busy.is_zero(),
            "{name}: {cpu:?}, {busy:?}"
        );
    }
    let mut r = VideoReader::open(&VideoInput::File(out.join("clip_annotated.mp4"))).unwrap();
    let src = VideoReader::open(&VideoInput::File(video.clone())).unwrap();
    assert_eq!(r.size(), src.size());
    assert!((r.fps() - 10.0).abs() < 0.01);
    let mut n = 0;
    while r.next_frame().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 6);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[3]["frame"], 3);
    assert_eq!(lines[3]["timestamp_ms"], 300.0);
    let heads = lines[0]["heads"].as_array().unwrap();
    assert_eq!(heads[0]["task"], "detection");
    assert_eq!(heads[1]["task"], "segmentation");
    assert!(heads[1]["areas"].as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(heads[2]["task"], "classification");
    assert_eq!(heads[2]["top_k"].as_array().unwrap().len(), 3);
    // No temporary files are left behind; the record lists what was written.
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('.') || name == ".vpipe-outputs.json",
            "left over: {name}"
        );
    }
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(".vpipe-outputs.json")).unwrap()).unwrap();
    assert_eq!(
        record["outputs"],
        serde_json::json!(["clip_annotated.mp4", "results.jsonl"])
    );
}

/// With `batch` above 1 the preprocessing stage gathers frames into batches:
/// every frame still gets its result line and video frame, in order.
#[test]
fn batched_runs_keep_every_frame_in_order() {
    let dir_tmp = scratch("batched");
    let dir = dir_tmp.path();
    let video = dir.join("clip.avi");
    make_video(&video, 6);
    let text = "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\n\
                heads:\n  - name: objects\n    type: ssd\n\
                runner:\n  batch: 4\n";
    let p = compile_text(dir, text).unwrap();
    let out = dir.join("out");
    let summary = run(&p, &Input::Video(VideoInput::File(video)), &options(&out)).unwrap();
    assert_eq!(summary.frames, 6);
    assert_eq!(summary.backbone_runs, 2, "batches of 4 and 2 frames");
    let frames: Vec<u64> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["frame"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(frames, [0, 1, 2, 3, 4, 5]);
    let n = frames_of(&out.join("clip_annotated.mp4"));
    assert_eq!(n, 6);
}

#[test]
fn a_stopped_run_still_leaves_a_playable_video_of_the_frames_so_far() {
    let dir_tmp = scratch("stop");
    let dir = dir_tmp.path();
    let video = dir.join("long.avi");
    // Far more frames than any CPU runs the network on before the stop arrives.
    let total = 200;
    make_video(&video, total);
    let p = compile(&root().join("pipelines/detect.yaml")).unwrap();
    let out = dir.join("out");
    let opts = options(&out);
    let stop = Arc::clone(&opts.stop);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(400));
        stop.store(true, Ordering::SeqCst);
    });
    let input = Input::Video(VideoInput::File(video));
    let summary = run(&p, &input, &opts).unwrap();
    stopper.join().unwrap();
    assert!(summary.interrupted, "the run was not stopped");
    assert!(
        summary.frames > 0 && summary.frames < total as u64,
        "{} frames",
        summary.frames
    );
    let n = frames_of(&out.join("long_annotated.mp4"));
    assert_eq!(n, summary.frames, "interrupted: {}", summary.interrupted);
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(lines.lines().count() as u64, summary.frames);
}

/// A second run into the same folder replaces the first run's outputs, leaving
/// none of them stale; a file vpipe did not write refuses the folder unless
/// `overwrite` (and is kept). Annotated names that clash are recorded per line.
#[test]
fn output_folders_hold_only_the_latest_run_and_never_lose_other_files() {
    let dir_tmp = scratch("rerun");
    let dir = dir_tmp.path();
    let (one, two) = (dir.join("one"), dir.join("two"));
    for d in [&one, &two] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(root().join("assets/squirrel_cls.jpg"), d.join("a.jpg")).unwrap();
    }
    std::fs::copy(root().join("tests/fixtures/image.png"), one.join("b.png")).unwrap();
    let p = compile(&root().join("pipelines/classify.yaml")).unwrap();
    let out = dir.join("out");
    // Two inputs named a.jpg: the second is written as a-1.jpg, and says so.
    let both = resolve_input(dir.to_str().unwrap(), true).unwrap();
    run(&p, &both, &options(&out)).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["annotated"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.jpg", "b.png", "a-1.jpg"]);
    assert!(out.join("a-1.jpg").is_file());

    // The same folder again, with fewer inputs: nothing of the first run is left.
    let only = resolve_input(two.to_str().unwrap(), false).unwrap();
    run(&p, &only, &options(&out)).unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".vpipe-outputs.json", "a.jpg", "results.jsonl"]);

    // A file of the user's: refused without overwrite, kept with it.
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let err = run(&p, &only, &options(&out)).unwrap_err();
    assert!(
        err.to_string()
            .contains("1 file(s) vpipe did not write (notes.txt)"),
        "{err}"
    );
    let overwrite = RunOptions {
        overwrite: true,
        ..options(&out)
    };
    std::fs::create_dir(out.join("empty")).unwrap();
    run(&p, &only, &overwrite).unwrap();
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
    assert!(
        out.join("empty").is_dir(),
        "a folder of the user's was removed"
    );
    assert!(out.join("a.jpg").is_file());
}

/// A folder `in` under `dir` with two photos, `a.jpg` and `b.png`.
fn two_images(dir: &Path) -> PathBuf {
    let inputs = dir.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::copy(root().join("assets/squirrel_cls.jpg"), inputs.join("a.jpg")).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/image.png"),
        inputs.join("b.png"),
    )
    .unwrap();
    inputs
}

/// An output that fails mid-run ends the run with an error naming it and the file;
/// the other outputs complete with the frames read, nothing half-written is left,
/// and what is at the failed target stays as it was.
#[test]
fn a_write_failure_mid_run_leaves_no_partial_file_and_old_targets_intact() {
    let dir_tmp = scratch("write-failure");
    let dir = dir_tmp.path();
    let inputs = two_images(dir);
    let out = dir.join("out");
    // The second image's target is a folder (with a file in it): its write fails.
    std::fs::create_dir_all(out.join("b.png")).unwrap();
    std::fs::write(out.join("b.png/keep.txt"), b"kept").unwrap();
    std::fs::write(out.join("results.jsonl"), b"old results\n").unwrap();
    let p = compile(&root().join("pipelines/classify.yaml")).unwrap();
    let input = resolve_input(inputs.to_str().unwrap(), false).unwrap();
    let overwrite = RunOptions {
        overwrite: true,
        ..options(&out)
    };
    let err = run(&p, &input, &overwrite).unwrap_err();
    assert!(
        err.to_string().contains("output 'annotated images' failed")
            && err.to_string().contains("b.png"),
        "{err}"
    );
    // results.jsonl, another output, is complete: both frames.
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    for line in lines.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    assert!(out.join("a.jpg").is_file());
    assert_eq!(std::fs::read(out.join("b.png/keep.txt")).unwrap(), b"kept");
    let partial: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial") || n.contains(".tmp") || n.starts_with(".tmp"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}

#[test]
fn image_folders_report_bad_files_and_never_overwrite_inputs() {
    let dir_tmp = scratch("images");
    let dir = dir_tmp.path();
    let inputs = two_images(dir);
    std::fs::write(inputs.join("c.jpg"), b"\xff\xd8\xff truncated jpeg").unwrap();
    // A low threshold, so that the random test weights give some boxes.
    let p = compile_text(
        dir,
        "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\nheads:\n  - name: d\n    type: ssd\n    options: {conf_threshold: 0.001, max_detections: 3}\n",
    )
    .unwrap();
    let out = dir.join("out");
    // A subfolder and a video beside the images: left out (and named in a
    // warning), unless the folder is searched recursively.
    let sub = inputs.join("more");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::copy(inputs.join("b.png"), sub.join("d.png")).unwrap();
    std::fs::write(inputs.join("clip.mp4"), b"not read").unwrap();
    let Input::Images(all) = resolve_input(inputs.to_str().unwrap(), true).unwrap() else {
        panic!("not images");
    };
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.contains(&sub.join("d.png")), "{all:?}");
    let input = resolve_input(inputs.to_str().unwrap(), false).unwrap();
    let Input::Images(top) = &input else {
        panic!("not images");
    };
    assert_eq!(top.len(), 3, "{top:?}");
    let summary = run(&p, &input, &options(&out)).unwrap();
    assert_eq!(summary.frames, 2);
    assert_eq!(summary.failed.len(), 1);
    assert!(
        summary.failed[0].0.ends_with("c.jpg"),
        "{:?}",
        summary.failed
    );
    // Annotated images keep the input's name and size.
    for name in ["a.jpg", "b.png"] {
        let a = image::image_dimensions(inputs.join(name)).unwrap();
        let b = image::image_dimensions(out.join(name)).unwrap();
        assert_eq!(a, b, "{name}");
    }
    let coco: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("detections_coco.json")).unwrap()).unwrap();
    let images = coco["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    // Names relative to the input folder; ids 1, 2, ... (the names are not numbers).
    assert_eq!(images[0]["file_name"], "a.jpg");
    assert_eq!(images[1]["file_name"], "b.png");
    assert_eq!(
        (images[0]["id"].as_u64(), images[1]["id"].as_u64()),
        (Some(1), Some(2))
    );
    // All 80 categories with COCO's ids, whatever was detected.
    let categories = coco["categories"].as_array().unwrap();
    assert_eq!(categories.len(), 80);
    assert_eq!(
        (&categories[0]["id"], &categories[0]["name"]),
        (&serde_json::json!(1), &serde_json::json!("person"))
    );
    assert_eq!(
        (&categories[79]["id"], &categories[79]["name"]),
        (&serde_json::json!(90), &serde_json::json!("toothbrush"))
    );
    // The bare results list, as COCO.loadRes takes it.
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("detections_coco_results.json")).unwrap())
            .unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 6);
    for r in results {
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["bbox", "category_id", "image_id", "score"]);
    }
    let anns = coco["annotations"].as_array().unwrap();
    assert_eq!(anns.len(), 6, "three boxes per image");
    for a in anns {
        let id = a["category_id"].as_u64().unwrap();
        assert!((1..=90).contains(&id) && ![12, 26, 29, 30, 45, 66, 68, 69, 71, 83].contains(&id));
        let b: Vec<f64> = a["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(b[2] >= 0.0 && b[3] >= 0.0, "[x, y, w, h]: {b:?}");
    }
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(first["source"].as_str().unwrap().ends_with("a.jpg"));
    let det = &first["heads"][0]["detections"][0];
    assert_eq!(det["bbox"].as_array().unwrap().len(), 4);
    assert!(det["label"].is_string() && det["class_id"].is_u64() && det["score"].is_f64());

    // The input folder holds files vpipe did not write: refused. With `overwrite`,
    // writing there would still overwrite the inputs: refused, inputs intact.
    let before = std::fs::read(inputs.join("a.jpg")).unwrap();
    let err = run(&p, &input, &options(&inputs)).unwrap_err();
    assert!(err.to_string().contains("vpipe did not write"), "{err}");
    let overwrite = RunOptions {
        overwrite: true,
        ..options(&inputs)
    };
    let err = run(&p, &input, &overwrite).unwrap_err();
    assert!(
        err.to_string().contains("refusing to overwrite an input"),
        "{err}"
    );
    assert_eq!(std::fs::read(inputs.join("a.jpg")).unwrap(), before);
    // No partial file is left; the outputs that could be written (results.jsonl)
    // are complete and recorded, so that the next run replaces them.
    let leftovers: Vec<String> = std::fs::read_dir(&inputs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(leftovers, [".vpipe-outputs.json"], "{leftovers:?}");
    std::fs::remove_file(inputs.join(".vpipe-outputs.json")).unwrap();
    std::fs::remove_file(inputs.join("results.jsonl")).unwrap();

    // Globs, with brace alternatives as a shell has them, and missing inputs.
    let glob = format!("{}/*.png", inputs.display());
    assert_eq!(
        resolve_input(&glob, false).unwrap(),
        Input::Images(vec![inputs.join("b.png")])
    );
    let braces = format!("{}/{{a,b}}.{{png,jpg}}", inputs.display());
    assert_eq!(
        resolve_input(&braces, false).unwrap(),
        Input::Images(vec![inputs.join("a.jpg"), inputs.join("b.png")])
    );
    assert!(resolve_input("/nonexistent/x.jpg", false).is_err());
    assert_eq!(
        resolve_input("0", false).unwrap(),
        Input::Video(VideoInput::Camera(0))
    );
}

/// Serves one file over HTTP/1.0 on a local port, for as many requests as come.
fn serve_file(path: PathBuf) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let body = std::fs::read(&path).unwrap();
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: video/x-msvideo\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}/clip.avi")
}

#[test]
fn a_stream_url_is_read_as_a_live_source() {
    let dir_tmp = scratch("stream");
    let dir = dir_tmp.path();
    let video = dir.join("clip.avi");
    make_video(&video, 8);
    let url = serve_file(video);
    let input = resolve_input(&url, false).unwrap();
    assert_eq!(input, Input::Video(VideoInput::Url(url.clone())));
    let p = compile(&root().join("pipelines/detect.yaml")).unwrap();
    let out = dir.join("out");
    let summary = run(&p, &input, &options(&out)).unwrap();
    // Live sources drop the oldest waiting frames when the model falls behind:
    // the kept frames end with the newest, and the failed reads after the stream's
    // end are not counted as skipped frames.
    assert_eq!(summary.frames + summary.dropped_frames, 8, "{summary:?}");
    assert_eq!(summary.skipped_frames, 0, "{summary:?}");
    assert!(summary.frames >= 1);
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let kept: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["frame"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(kept.len() as u64, summary.frames);
    assert_eq!(kept.last(), Some(&7), "{kept:?}");
    assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
    if summary.dropped_frames > 0 {
        assert_ne!(
            kept,
            (0..summary.frames).collect::<Vec<_>>(),
            "nothing dropped"
        );
    }
    assert!(out.join("stream_annotated.mp4").is_file());
}

#[test]
fn corrupt_video_frames_are_skipped_and_counted() {
    let dir_tmp = scratch("corrupt");
    let dir = dir_tmp.path();
    let video = dir.join("clip.avi");
    make_video(&video, 10);
    // Replace the start of the 5th frame's JPEG data (after its AVI chunk header)
    // with garbage, so that the decoder cannot decode that frame at all.
    let mut bytes = std::fs::read(&video).unwrap();
    let chunks: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w == b"00dc")
        .map(|(i, _)| i)
        .collect();
    assert!(chunks.len() >= 10, "{} frame chunks", chunks.len());
    let start = chunks[4] + 8;
    for b in &mut bytes[start..start + 600] {
        *b = 0x5a;
    }
    std::fs::write(&video, &bytes).unwrap();
    let p = compile(&root().join("pipelines/detect.yaml")).unwrap();
    let out = dir.join("out");
    let summary = run(&p, &Input::Video(VideoInput::File(video)), &options(&out)).unwrap();
    eprintln!(
        "corrupt video: {} frames, {} skipped",
        summary.frames, summary.skipped_frames
    );
    assert!(summary.frames >= 5, "{summary:?}");
    assert!(summary.skipped_frames >= 1, "{summary:?}");
    assert_eq!(summary.frames + summary.skipped_frames, 10, "{summary:?}");
}

/// The head tensors (everything but the backbone's) of a reference checkpoint, in
/// canonical names.
fn head_tensors(name: &str) -> std::collections::BTreeMap<String, vpipe_core::tensor::HostTensor> {
    let file = vpipe_io::TensorFile::read(&root().join("weights/reference").join(name)).unwrap();
    let canonical = vpipe_backbone::layout::to_canonical(&file).unwrap();
    canonical
        .tensors
        .into_iter()
        .filter(|(k, _)| !vpipe_backbone::layout::is_backbone_tensor(k))
        .collect()
}

/// A multi-head file (one backbone, named heads) feeds every head from one backbone
/// pass, each head finding its tensors and options by its name, with the same
/// results as the same heads attached from their own checkpoints.
#[test]
fn a_multi_head_file_is_one_backbone_feeding_its_heads() {
    use vpipe_weights::{HeadEntry, StoredHead, WeightsMetadata, write_multihead};
    let dir_tmp = scratch("multihead");
    let src = root().join("weights/reference/cvnets_ssd_mobilevit_xxs.pt");
    let file = vpipe_io::TensorFile::read(&src).unwrap();
    let backbone: std::collections::BTreeMap<_, _> = vpipe_backbone::layout::to_canonical(&file)
        .unwrap()
        .tensors
        .into_iter()
        .filter(|(k, _)| vpipe_backbone::layout::is_backbone_tensor(k))
        .collect();
    let head = |name: &str, kind: &str, options: serde_json::Value, from: &str| StoredHead {
        entry: HeadEntry {
            name: name.into(),
            kind: kind.into(),
            options: options.as_object().cloned().unwrap_or_default(),
            labels: None,
            training: None,
        },
        tensors: head_tensors(from),
    };
    let heads = [
        head(
            "objects",
            "ssd",
            serde_json::json!({}),
            "cvnets_ssd_mobilevit_xxs.pt",
        ),
        head(
            "scene",
            "deeplabv3",
            serde_json::json!({"stride": 32}),
            "cvnets_deeplabv3_mobilevit_xxs.pt",
        ),
        head(
            "imagenet",
            "classification",
            serde_json::json!({"top_k": 3}),
            "cvnets_mobilevit_xxs.pt",
        ),
    ];
    let model = dir_tmp.path().join("multitask.safetensors");
    let meta = WeightsMetadata {
        arch: vpipe_backbone::MobileVitSize::Xxs,
        task: vpipe_backbone::layout::CheckpointTask::Detection,
        source: vpipe_backbone::SourceLayout::Cvnets,
        labels: vpipe_core::labels::LabelSet::Coco81,
        preprocess: vpipe_core::preset::PreprocessPreset::CvnetsSsd,
        f16: false,
        original_file: "cvnets_ssd_mobilevit_xxs.pt".into(),
        original_sha256: String::new(),
        registry_name: None,
        random_init: true,
    };
    write_multihead(&model, &meta, &backbone, &heads).unwrap();
    let p = dir_tmp.path().join("multi.yaml");
    std::fs::write(
        &p,
        format!(
            "backbones:\n  shared:\n    weights: {}\nheads:\n  - {{name: objects, type: ssd}}\n  - {{name: scene, type: deeplabv3}}\n  - {{name: imagenet, type: classification, options: {{top_k: 5}}}}\n",
            model.display()
        ),
    )
    .unwrap();
    let multi = compile(&p).unwrap_or_else(|e| panic!("{e}"));
    assert!(multi.describe().contains("backbone passes per frame: 1"));
    let separate = compile_text(dir_tmp.path(), SHARED).unwrap();
    let frame = load_image(&root().join("assets/squirrel_cls.jpg")).unwrap();
    let got = multi.run(&[&frame, &frame]).unwrap();
    assert_eq!(multi.backbone_runs(), 1);
    let want = separate.run(&[&frame, &frame]).unwrap();
    // The pipeline's options (top_k 5) override the file's (3), as SHARED's default.
    assert_eq!(
        serde_json::to_value(&got).unwrap(),
        serde_json::to_value(&want).unwrap()
    );

    // A head the file does not have, or of another type, is refused where written.
    std::fs::write(
        &p,
        format!(
            "backbones:\n  shared:\n    weights: {}\nheads:\n  - {{name: object, type: ssd}}\n",
            model.display()
        ),
    )
    .unwrap();
    let e = config_error(compile(&p));
    assert_eq!(e.path, "heads[0].name");
    assert!(
        e.message.contains("objects, scene, imagenet") || e.message.contains("imagenet"),
        "{e}"
    );
    assert_eq!(e.hint.as_deref(), Some("did you mean 'objects'?"));
    std::fs::write(
        &p,
        format!(
            "backbones:\n  shared:\n    weights: {}\nheads:\n  - {{name: scene, type: ssd}}\n",
            model.display()
        ),
    )
    .unwrap();
    let e = config_error(compile(&p));
    assert_eq!(e.path, "heads[0].type");
    assert!(e.message.contains("is a deeplabv3 head"), "{e}");
}

/// A detection head of the test's own that reports two boxes crossing each other
/// (frame by frame, counting its calls): one goes missing for three frames and one
/// drops to a low score for one, as occluded objects do.
#[derive(Debug, Default)]
struct Crossing {
    frame: std::sync::atomic::AtomicUsize,
}

impl vpipe_heads::Head for Crossing {
    fn kind(&self) -> &str {
        "crossing"
    }

    fn levels(&self) -> &[usize] {
        &[5]
    }

    fn forward(
        &self,
        _: &vpipe_backbone::Features,
        _: [usize; 2],
    ) -> vpipe_heads::Result<Vec<vpipe_heads::RawTensor>> {
        Ok(Vec::new())
    }

    fn postprocess(
        &self,
        _: &[vpipe_heads::RawTensor],
        _: usize,
        _: &vpipe_preprocess::InputTransform,
    ) -> vpipe_heads::Result<vpipe_core::result::HeadOutput> {
        let n = self.frame.fetch_add(1, Ordering::SeqCst) as f32;
        let det = |x: f32, score: f32, class_id: usize| vpipe_core::result::Detection {
            bbox: [x, 100.0, x + 60.0, 220.0],
            score,
            class_id,
            label: String::new(),
            track_id: None,
        };
        let mut detections = vec![det(20.0 + 8.0 * n, if n == 20.0 { 0.2 } else { 0.9 }, 0)];
        if !(10.0..13.0).contains(&n) {
            detections.push(det(340.0 - 8.0 * n, 0.8, 1));
        }
        Ok(vpipe_core::result::HeadOutput::Detection { detections })
    }
}

/// `tracker:` on a detection head: each object keeps its id through a crossing, a
/// three-frame gap and a low-score frame; the ids go into results.jsonl and the
/// annotated video has every frame.
#[test]
fn a_tracker_keeps_ids_through_crossings_and_gaps() {
    let dir_tmp = scratch("track");
    let dir = dir_tmp.path();
    let video = dir.join("clip.avi");
    make_video(&video, 40);
    let yaml = dir.join("p.yaml");
    std::fs::write(
        &yaml,
        format!(
            "backbones:\n  main:\n    weights: {}\nheads:\n  - name: objects\n    type: ssd\n  - name: walkers\n    type: crossing\n    tracker: {{lost_track_buffer: 10, trail: 8}}\n    zones:\n      - {{name: west, polygon: [[0, 200], [150, 200], [150, 240], [0, 240]]}}\n    lines:\n      - {{name: gate, start: [200, 0], end: [200, 400]}}\n",
            root().join("weights/reference/cvnets_ssd_mobilevit_xxs.pt").display()
        ),
    )
    .unwrap();
    let mut registry = HeadRegistry::with_builtins();
    registry
        .register("crossing", |_| Ok(Box::new(Crossing::default())))
        .unwrap();
    let p = Pipeline::compile(
        PipelineFile::read(&yaml).unwrap(),
        &registry,
        &vpipe_core::device::default_device(),
    )
    .unwrap();
    let out = dir.join("out");
    let input = resolve_input(video.to_str().unwrap(), false).unwrap();
    let summary = run(&p, &input, &options(&out)).unwrap();
    assert_eq!(summary.frames, 40);
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let mut ids_by_class: [Vec<Option<u64>>; 2] = Default::default();
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let heads = v["heads"].as_array().unwrap();
        let walkers = heads.iter().find(|h| h["head"] == "walkers").unwrap();
        for d in walkers["detections"].as_array().unwrap() {
            let class = d["class_id"].as_u64().unwrap() as usize;
            ids_by_class[class].push(d["track_id"].as_u64());
        }
        // The head without a tracker gives no track ids.
        let objects = heads.iter().find(|h| h["head"] == "objects").unwrap();
        assert!(
            objects["detections"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d.get("track_id").is_none())
        );
    }
    // The zone holds walker 0 (moving east) until its anchor leaves at frame 12, and
    // walker 1 (moving west) from frame 28; the line at x = 200 (drawn downwards, so
    // its right is the west) sees walker 1 cross in and walker 0 cross out.
    let line_of = |n: usize| -> serde_json::Value {
        serde_json::from_str(lines.lines().nth(n).unwrap()).unwrap()
    };
    for (n, want) in [(5, json!({"0": 1})), (20, json!({})), (30, json!({"1": 1}))] {
        let regions = &line_of(n)["regions"];
        assert_eq!(regions[0]["kind"], "zone");
        assert_eq!(regions[0]["counts"], want, "frame {n}");
    }
    let last = &line_of(39)["regions"][1];
    assert_eq!(last["kind"], "line");
    assert_eq!(
        (&last["in"], &last["out"]),
        (&json!({"1": 1}), &json!({"0": 1}))
    );
    assert_eq!(line_of(18)["regions"][1]["out_total"], 0);
    assert_eq!(line_of(19)["regions"][1]["out_total"], 1);
    assert_eq!(ids_by_class[0].len(), 40);
    assert_eq!(ids_by_class[1].len(), 37);
    assert!(
        ids_by_class[0].iter().all(|&id| id == Some(1)),
        "{ids_by_class:?}"
    );
    assert!(
        ids_by_class[1].iter().all(|&id| id == Some(2)),
        "{ids_by_class:?}"
    );
    let n = frames_of(&out.join("clip_annotated.mp4"));
    assert_eq!(n, 40);
}

#[test]
fn trackers_are_checked_where_written() {
    let dir_tmp = scratch("tracker-config");
    let cases = [
        (
            "  - {name: s, type: deeplabv3, tracker: {}}\n",
            "heads[0].tracker",
            "a 'deeplabv3' head gives none",
        ),
        (
            "  - {name: d, type: ssd, tracker: {type: sort}}\n",
            "heads[0].tracker.type",
            "unknown tracker 'sort'",
        ),
        (
            "  - {name: d, type: ssd, tracker: {minimum_matching_threshold: 1.5}}\n",
            "heads[0].tracker.minimum_matching_threshold",
            "between 0 and 1",
        ),
        (
            "  - {name: d, type: ssd, tracker: {lost_buffer: 3}}\n",
            "heads[0].tracker",
            "lost_buffer",
        ),
        (
            "  - {name: s, type: deeplabv3, zones: [{name: z, polygon: [[0, 0], [9, 0], [9, 9]]}]}\n",
            "heads[0].zones",
            "a 'deeplabv3' head gives none",
        ),
        (
            "  - {name: d, type: ssd, lines: [{name: l, start: [0, 0], end: [9, 9]}]}\n",
            "heads[0].lines",
            "give the head a `tracker:`",
        ),
        (
            "  - {name: d, type: ssd, zones: [{name: z, polygon: [[0, 0], [9, 9], [9, 0], [0, 9]]}]}\n",
            "heads[0].zones[0].polygon",
            "must not intersect itself",
        ),
        (
            "  - {name: d, type: ssd, zones: [{name: z, polygon: [[0, 0], [9, 9]]}]}\n",
            "heads[0].zones[0].polygon",
            "at least 3 points",
        ),
        (
            "  - {name: d, type: ssd, zones: [{name: z, polygon: [[0, 0], [9, 0], [9, 9]], anchor: top}]}\n",
            "heads[0].zones[0].anchor",
            "unknown anchor 'top'",
        ),
    ];
    for (head, path, message) in cases {
        let text = format!(
            "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\nheads:\n{head}"
        );
        let e = compile_text(dir_tmp.path(), &text).unwrap_err();
        let PipelineError::Config(c) = &e else {
            panic!("not a config error: {e}")
        };
        assert!(c.path.starts_with(path), "{path}: {e}");
        assert!(c.message.contains(message), "{message}: {e}");
        assert_eq!(c.line, 5, "{e}");
    }
}

/// A live stream served on loopback by FFmpeg (`-re`: at its own pace, 29.97 fps for
/// 6 s), run by a pipeline slower than the stream, which drops frames: the annotated
/// video still lasts as long as the stream (the frame before each gap is repeated),
/// and the results carry the stream's own timestamps.
#[test]
fn a_live_stream_keeps_its_time_when_frames_are_dropped() {
    let dir_tmp = scratch("live");
    let dir = dir_tmp.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/live.ts");
    let mut server = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-re", "-f", "lavfi"])
        .args(["-i", "testsrc=size=320x240:rate=30000/1001", "-t", "6"])
        .args([
            "-c:v",
            "mpeg2video",
            "-q:v",
            "4",
            "-f",
            "mpegts",
            "-listen",
            "1",
            &url,
        ])
        .spawn()
        .expect("ffmpeg (scripts/setup.sh installs it) serves the live stream");
    let p = compile(&root().join("pipelines/multitask.yaml")).unwrap();
    let out = dir.join("out");
    let input = resolve_input(&url, false).unwrap();
    // The server listens once it has started (a refused connection takes nothing from
    // it: it serves one client, the one that gets through).
    let mut tries = 0;
    let summary = loop {
        match run(&p, &input, &options(&out)) {
            Err(e) if e.to_string().contains("cannot open") && tries < 40 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            other => break other.unwrap(),
        }
    };
    let _ = server.wait();
    assert!(
        summary.dropped_frames > 0,
        "the pipeline kept up: nothing was dropped"
    );
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let times: Vec<f64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["timestamp_ms"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(times.windows(2).all(|w| w[1] > w[0]), "{times:?}");
    // Every kept frame is at its place in the stream (a multiple of 1001/30 ms).
    let period = 1001.0 / 30.0;
    assert!(
        times
            .iter()
            .all(|t| ((t / period) - (t / period).round()).abs() < 0.05),
        "{times:?}"
    );
    let last = times.last().copied().unwrap();
    assert!((5400.0..6000.0).contains(&last), "last frame at {last} ms");
    // The video plays in real time: 6 s at the stream's rate.
    let frames = frames_of(&out.join("stream_annotated.mp4"));
    let seconds = frames as f64 * period / 1000.0;
    assert!(
        (5.5..=6.1).contains(&seconds),
        "{frames} frames: {seconds} s"
    );
}

/// A `nats-server` with JetStream on a free loopback port (scripts/setup.sh installs
/// it), stopped when dropped.
struct NatsServer {
    child: std::process::Child,
    url: String,
    _store: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let store = scratch("nats-store");
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (scripts/setup.sh installs it)");
        let url = format!("nats://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self {
            child,
            url,
            _store: store,
        }
    }

    /// How many messages `stream` holds (0 while it does not exist).
    fn stored(url: &str, stream: &str) -> u64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let Ok(client) = async_nats::connect(url).await else {
                return 0;
            };
            let js = async_nats::jetstream::new(client);
            match js.get_stream(stream).await {
                Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
                Err(_) => 0,
            }
        })
    }

    /// The messages of `stream`, as (subject, de-duplication id, JSON).
    fn messages(&self, stream: &str) -> Vec<(String, String, serde_json::Value)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let js = async_nats::jetstream::new(async_nats::connect(&self.url).await.unwrap());
            let mut s = js.get_stream(stream).await.unwrap();
            let n = s.info().await.unwrap().state.last_sequence;
            let mut out = Vec::new();
            for seq in 1..=n {
                let m = s.get_raw_message(seq).await.unwrap();
                let id = m
                    .headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                out.push((
                    m.subject.to_string(),
                    id,
                    serde_json::from_slice(&m.payload).unwrap(),
                ));
            }
            out
        })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipeline with `output.nats` publishes each frame's results to JetStream once:
/// on a subject per pipeline and source, with a de-duplication id per source and
/// frame, so running the same input again stores nothing twice.
#[test]
fn results_go_to_nats_jetstream_once_per_frame() {
    let server = NatsServer::start();
    let dir_tmp = scratch("nats");
    let dir = dir_tmp.path();
    let video = dir.join("cam 1.avi");
    make_video(&video, 6);
    let text = format!(
        "name: lobby\nbackbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\nheads:\n  - {{name: objects, type: ssd}}\noutput:\n  annotated: false\n  nats: {{url: \"{}\"}}\n",
        server.url
    );
    let p = compile_text(dir, &text).unwrap();
    let input = resolve_input(video.to_str().unwrap(), false).unwrap();
    for round in 0..2 {
        let out = dir.join(format!("out{round}"));
        let summary = run(&p, &input, &options(&out)).unwrap();
        assert_eq!(summary.frames, 6);
    }
    let messages = server.messages("VPIPE_RESULTS");
    assert_eq!(messages.len(), 6, "the second run's results are duplicates");
    let source = video.display().to_string();
    let token = vpipe_core::token::safe_token(&source);
    for (i, (subject, id, body)) in messages.iter().enumerate() {
        assert_eq!(subject, &format!("vpipe.results.lobby.{token}"));
        assert_eq!(id, &format!("{source}:{i}"));
        assert_eq!(body["frame"], i);
        assert_eq!(body["heads"][0]["head"], "objects");
    }
}

/// The server going away mid-run: the run does not hang, the other outputs are
/// complete, and the frames that could not be delivered are reported.
#[test]
fn a_nats_server_that_goes_away_is_reported_not_waited_for() {
    let mut server = NatsServer::start();
    let dir_tmp = scratch("nats-away");
    let dir = dir_tmp.path();
    let video = dir.join("long.avi");
    // Long enough that the server goes before the last frame, on any machine.
    make_video(&video, 300);
    let text = format!(
        "backbones:\n  main:\n    weights: $W/cvnets_ssd_mobilevit_xxs.pt\nheads:\n  - {{name: objects, type: ssd}}\noutput:\n  annotated: false\n  nats: {{url: \"{}\"}}\n",
        server.url
    );
    let p = compile_text(dir, &text).unwrap();
    let input = resolve_input(video.to_str().unwrap(), false).unwrap();
    let out = dir.join("out");
    // The server is killed once it has stored the first results (so the run has
    // connected and published, however loaded the machine is).
    let killer = {
        let (pid, url) = (server.child.id(), server.url.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while NatsServer::stored(&url, "VPIPE_RESULTS") < 3
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        })
    };
    let e = run(&p, &input, &options(&out)).unwrap_err().to_string();
    killer.join().unwrap();
    let _ = server.child.wait();
    assert!(
        e.contains("could not be delivered to NATS") && e.contains(&server.url),
        "{e}"
    );
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 300, "results.jsonl is complete");
    // An unreachable server is an error before the run, naming it.
    let e = run(&p, &input, &options(&dir.join("out2")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot connect to the NATS server") && e.contains(&server.url),
        "{e}"
    );
}
