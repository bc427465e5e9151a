//! YAML pipelines: the file format and its strict validation ([`spec`]), the
//! compiled graph in which each backbone runs once per frame for all of its heads
//! ([`graph`]), and the runner that moves frames from images, folders, videos,
//! streams and cameras through decoding, the model, annotation and encoding
//! ([`runner`]).

mod cpu_time;
pub mod error;
pub mod graph;
pub mod positions;
pub mod queue;
pub mod runner;
pub mod spec;

pub use error::{ConfigError, PipelineError, Result, closest};
pub use graph::{NamedOutput, Pipeline, default_preset};
pub use runner::{Input, RunOptions, RunSummary, StageTimes, resolve_input, run, suspend_progress};
pub use spec::{PendingWeights, PipelineFile, PipelineSpec};
