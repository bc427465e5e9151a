//! Runs a pipeline file from code: compile it once, then run it on frames and read
//! each head's results.
//!
//! `cargo run --release --example pipeline -- pipelines/multitask.yaml assets/squirrel_cls.jpg`

use std::path::Path;

use vpipe::heads::HeadRegistry;
use vpipe::media::load_image;
use vpipe::pipeline::{Pipeline, PipelineFile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pipeline, images @ ..] = args.as_slice() else {
        return Err("usage: pipeline PIPELINE.yaml IMAGE...".into());
    };
    let file = PipelineFile::read(Path::new(pipeline))?;
    let device = vpipe::core::device::default_device();
    // Your own head types go into the registry before compiling (see examples/custom-head).
    let pipeline = Pipeline::compile(file, &HeadRegistry::with_builtins(), &device)?;
    print!("{}", pipeline.describe());
    for path in images {
        let frame = load_image(Path::new(path))?;
        for result in &pipeline.run(&[&frame])?[0] {
            println!("{path}: {}", serde_json::to_string(result)?);
        }
    }
    println!("backbone passes: {}", pipeline.backbone_runs());
    Ok(())
}
