//! YAML pipelines: the file format and its strict validation ([`spec`]), the
//! compiled graph in which each backbone runs once per frame for all of its heads
//! ([`graph`]), and the runner ([`runner`]) that moves frames from a source
//! ([`source`]: images, folders, globs, videos, streams, cameras) through decoding,
//! the model and annotation into sinks ([`sink`]: annotated video or images,
//! `results.jsonl`, COCO JSON, mask PNGs, and sinks of your own).

mod analytics;
mod cpu_time;
pub mod error;
pub mod graph;
pub mod positions;
pub mod queue;
pub mod runner;
pub mod sink;
pub mod source;
pub mod spec;

pub use error::{ConfigError, PipelineError, Result, closest};
pub use graph::{NamedOutput, Pipeline, default_preset};
pub use runner::{RunOptions, RunSummary, StageTimes, run, run_with_sinks, suspend_progress};
pub use sink::{FrameResults, NatsResults, OutputFolder, Sink, coco_category};
pub use source::{Input, resolve_input};
pub use spec::{NatsSpec, PendingWeights, PipelineFile, PipelineSpec, TrackerSpec};
