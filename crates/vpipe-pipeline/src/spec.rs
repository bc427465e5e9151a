//! The pipeline file format and its parsing.
//!
//! ```yaml
//! backbones:
//!   main:
//!     weights: ../weights/reference/cvnets_mobilevit_xxs_ssd320.pt
//!     output_stride: 32          # optional; 32, 16 or 8
//!     preprocess: cvnets-ssd     # optional; default from the checkpoint
//! heads:
//!   - name: objects
//!     type: ssd
//!     backbone: main             # optional when there is one backbone
//!     weights: other.pt          # optional; default: the backbone's file
//!     options: {conf_threshold: 0.3}
//! output:
//!   annotated: true
//!   results: true
//!   coco: true
//!   masks: false
//! ```
//!
//! Every key is checked: unknown keys, wrong types and missing required keys are
//! errors with the file, line and column, the key path, and a hint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use vpipe_backbone::Precision;
use vpipe_core::device::{DeviceError, DeviceSpec};
use vpipe_track::{Anchor, ByteTrackConfig, LineCounter, PolygonZone};
use vpipe_weights::{CacheConfig, Registry, WeightsError};

use crate::error::{ConfigError, PipelineError, Result, closest};
use crate::positions::{Position, Positions};

/// A parsed pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// A name for logs and results (default: the file stem).
    #[serde(default)]
    pub name: Option<String>,
    /// Where the networks run: `cpu` (the default), `vulkan`, `vulkan:N`, `wgpu`,
    /// `cuda` or `cuda:N` (GPU devices need vpipe built with their cargo feature).
    #[serde(default = "default_device")]
    pub device: String,
    /// CPU threads (`0` or absent: one per core).
    #[serde(default)]
    pub threads: usize,
    /// Number format of the matrix products on the CPU: `fp32` (the default: the
    /// reference numbers), `bf16` (faster; needs AVX512_BF16) or `int8` (faster
    /// still; needs AVX512_VNNI as well); else the next one that runs, with a
    /// warning.
    #[serde(default = "default_precision")]
    pub precision: String,
    /// Backbones by name.
    pub backbones: BTreeMap<String, BackboneSpec>,
    /// Heads, in the order their results are reported.
    pub heads: Vec<HeadSpec>,
    /// What to write.
    #[serde(default)]
    pub output: OutputSpec,
    /// How frames move through the stages.
    #[serde(default)]
    pub runner: RunnerSpec,
}

fn default_device() -> String {
    "cpu".into()
}

fn default_precision() -> String {
    "fp32".into()
}

/// A backbone and where its weights come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneSpec {
    /// Checkpoint file (ml-cvnets `.pt`, timm or Hugging Face safetensors / `.bin`,
    /// vpipe weights), relative to the pipeline file, or a weights registry name
    /// (`vpipe weights list`), fetched into the cache on first use.
    pub weights: String,
    /// Output stride: 32 (classification and detection checkpoints), 16
    /// (segmentation checkpoints) or 8.
    #[serde(default)]
    pub output_stride: Option<usize>,
    /// Preprocessing preset (`timm`, `cvnets-cls`, `hf-cls`, `hf-seg`, `cvnets-ssd`,
    /// `cvnets-seg`); default: the one the checkpoint was trained with.
    #[serde(default)]
    pub preprocess: Option<String>,
}

/// A head on a backbone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    /// Name, used in results and on the annotated output.
    pub name: String,
    /// Head type, as registered: `classification`, `ssd`, `deeplabv3`, or your own.
    #[serde(rename = "type")]
    pub kind: String,
    /// The backbone it reads (may be left out when there is only one).
    #[serde(default)]
    pub backbone: Option<String>,
    /// Checkpoint holding the head's weights (a path or a registry name); default:
    /// the backbone's.
    #[serde(default)]
    pub weights: Option<String>,
    /// Head options (see the README for each type's).
    #[serde(default)]
    pub options: Map<String, Value>,
    /// Attach the head although its `weights` file was trained with another backbone
    /// than the one it is attached to (refused by default: see
    /// [`crate::Pipeline::compile`]).
    #[serde(default)]
    pub allow_backbone_mismatch: bool,
    /// Follow the head's detections over the frames with ByteTrack (detection heads
    /// only): `tracker: {}` for the defaults.
    #[serde(default)]
    pub tracker: Option<TrackerSpec>,
    /// Polygon zones counting the head's detections on each frame (detection heads).
    #[serde(default)]
    pub zones: Vec<ZoneSpec>,
    /// Lines counting the head's tracks that cross them (detection heads with a
    /// tracker).
    #[serde(default)]
    pub lines: Vec<LineSpec>,
}

/// A polygon zone of a detection head (`heads[i].zones[j]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    /// Name, in results.
    pub name: String,
    /// Corners `[x, y]` in frame pixels, in order (at least 3, not self-intersecting).
    pub polygon: Vec<[f64; 2]>,
    /// The point of each box that must be inside: `bottom_center` (default) or `center`.
    #[serde(default = "bottom_center")]
    pub anchor: String,
}

/// A counting line of a detection head with a tracker (`heads[i].lines[j]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    /// Name, in results.
    pub name: String,
    /// One end `[x, y]`, in frame pixels.
    pub start: [f64; 2],
    /// The other end; crossings to the right of start → end count as `in`.
    pub end: [f64; 2],
    /// The point of each box that crosses: `bottom_center` (default) or `center`.
    #[serde(default = "bottom_center")]
    pub anchor: String,
}

fn bottom_center() -> String {
    "bottom_center".into()
}

/// A detection head's tracker (`heads[i].tracker`): ByteTrack's settings, each
/// optional (defaults: supervision's `ByteTrack`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerSpec {
    /// The tracker: `bytetrack` (the only one).
    #[serde(rename = "type", default = "bytetrack")]
    pub kind: String,
    /// Detections scoring above this take part in the first association, and a new
    /// track starts from one scoring at least this + 0.1 (default 0.25).
    #[serde(default)]
    pub track_activation_threshold: Option<f32>,
    /// Detections scoring above this (and not above the activation threshold) take
    /// part in the second association only (default 0.1).
    #[serde(default)]
    pub low_score_threshold: Option<f32>,
    /// Frames a lost track is kept, at 30 fps (default 30; scaled by the frame rate).
    #[serde(default)]
    pub lost_track_buffer: Option<usize>,
    /// Largest cost `1 - IoU x score` of the first association (default 0.8).
    #[serde(default)]
    pub minimum_matching_threshold: Option<f64>,
    /// Largest cost `1 - IoU` of the second association (default 0.5).
    #[serde(default)]
    pub second_matching_threshold: Option<f64>,
    /// Largest cost `1 - IoU x score` that confirms a new track (default 0.7).
    #[serde(default)]
    pub unconfirmed_matching_threshold: Option<f64>,
    /// Consecutive frames a track must be matched in before it gets an id (default 1).
    #[serde(default)]
    pub minimum_consecutive_frames: Option<usize>,
    /// The frame rate the buffer is scaled by (default: the video's, else 30).
    #[serde(default)]
    pub frame_rate: Option<f64>,
    /// Frames of each track's trail on the annotated output (0: none; default 30).
    #[serde(default = "thirty")]
    pub trail: usize,
}

fn bytetrack() -> String {
    "bytetrack".into()
}

fn thirty() -> usize {
    30
}

impl TrackerSpec {
    /// ByteTrack's settings, for a video of `fps` frames per second (0: unknown).
    pub fn config(&self, fps: f64) -> ByteTrackConfig {
        let d = ByteTrackConfig::default();
        ByteTrackConfig {
            track_activation_threshold: self
                .track_activation_threshold
                .unwrap_or(d.track_activation_threshold),
            low_score_threshold: self.low_score_threshold.unwrap_or(d.low_score_threshold),
            lost_track_buffer: self.lost_track_buffer.unwrap_or(d.lost_track_buffer),
            minimum_matching_threshold: self
                .minimum_matching_threshold
                .unwrap_or(d.minimum_matching_threshold),
            second_matching_threshold: self
                .second_matching_threshold
                .unwrap_or(d.second_matching_threshold),
            unconfirmed_matching_threshold: self
                .unconfirmed_matching_threshold
                .unwrap_or(d.unconfirmed_matching_threshold),
            frame_rate: self
                .frame_rate
                .unwrap_or(if fps > 0.0 { fps } else { d.frame_rate }),
            minimum_consecutive_frames: self
                .minimum_consecutive_frames
                .unwrap_or(d.minimum_consecutive_frames),
        }
    }

    /// The first setting out of its range, as `(key, message)`.
    fn invalid(&self) -> Option<(&'static str, String)> {
        let unit = |v: Option<f64>| v.is_some_and(|v| !(0.0..=1.0).contains(&v));
        if self.kind != "bytetrack" {
            return Some((
                "type",
                format!("unknown tracker '{}' (expected 'bytetrack')", self.kind),
            ));
        }
        for (key, v) in [
            (
                "track_activation_threshold",
                self.track_activation_threshold.map(f64::from),
            ),
            (
                "low_score_threshold",
                self.low_score_threshold.map(f64::from),
            ),
            (
                "minimum_matching_threshold",
                self.minimum_matching_threshold,
            ),
            ("second_matching_threshold", self.second_matching_threshold),
            (
                "unconfirmed_matching_threshold",
                self.unconfirmed_matching_threshold,
            ),
        ] {
            if unit(v) {
                return Some((key, "must be between 0 and 1".into()));
            }
        }
        if self.minimum_consecutive_frames == Some(0) {
            return Some(("minimum_consecutive_frames", "must be at least 1".into()));
        }
        if self.frame_rate.is_some_and(|f| !(f > 0.0 && f.is_finite())) {
            return Some(("frame_rate", "must be a positive number".into()));
        }
        None
    }
}

/// What a run writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Annotated images (same name and size as the input) or video.
    #[serde(default = "yes")]
    pub annotated: bool,
    /// `results.jsonl`, one line per frame.
    #[serde(default = "yes")]
    pub results: bool,
    /// COCO-format detections (`detections_coco.json`) for image inputs: `true`
    /// asks for them (with a warning when the run has none to write), `false` turns
    /// them off; left out, they are written whenever a head gives detections.
    #[serde(default)]
    pub coco: Option<bool>,
    /// Class-index mask PNGs per frame (`masks/`), for segmentation heads.
    #[serde(default)]
    pub masks: bool,
    /// Opacity of the mask overlay, 0 to 1.
    #[serde(default = "default_alpha")]
    pub mask_alpha: f32,
    /// FourCC of the annotated video (`mp4v` or `avc1`).
    #[serde(default = "default_codec")]
    pub video_codec: String,
    /// Publish each frame's results to NATS JetStream.
    #[serde(default)]
    pub nats: Option<NatsSpec>,
}

/// Where `output.nats` publishes: each frame's results line, as JSON, on
/// `<subject>.<pipeline>.<source>`, into a JetStream stream (made when missing).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSpec {
    /// The server, for example `nats://127.0.0.1:4222`.
    pub url: String,
    /// The JetStream stream (default `VPIPE_RESULTS`).
    #[serde(default = "results_stream")]
    pub stream: String,
    /// The subjects' first tokens (default `vpipe.results`); the stream takes
    /// `<subject>.>`.
    #[serde(default = "results_subject")]
    pub subject: String,
}

fn results_stream() -> String {
    "VPIPE_RESULTS".into()
}

fn results_subject() -> String {
    "vpipe.results".into()
}

fn yes() -> bool {
    true
}

fn default_alpha() -> f32 {
    0.5
}

fn default_codec() -> String {
    "mp4v".into()
}

impl Default for OutputSpec {
    fn default() -> Self {
        Self {
            annotated: true,
            results: true,
            coco: None,
            masks: false,
            mask_alpha: default_alpha(),
            video_codec: default_codec(),
            nats: None,
        }
    }
}

/// How frames move through the stages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSpec {
    /// Frames per forward pass.
    #[serde(default = "one")]
    pub batch: usize,
    /// Frames each queue between stages holds.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// For live sources (streams, cameras): `drop_oldest` keeps latency bounded by
    /// dropping the oldest waiting frame when the model falls behind; `block` waits.
    #[serde(default)]
    pub live: LivePolicy,
}

fn one() -> usize {
    1
}

fn default_queue() -> usize {
    4
}

impl Default for RunnerSpec {
    fn default() -> Self {
        Self {
            batch: 1,
            queue: default_queue(),
            live: LivePolicy::default(),
        }
    }
}

/// What happens to live frames when the model falls behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LivePolicy {
    /// Drop the oldest waiting frame.
    #[default]
    DropOldest,
    /// Wait (the source's own buffer fills up).
    Block,
}

/// A pipeline file read and checked for form, with the positions of its keys.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    /// The file.
    pub path: PathBuf,
    /// Its contents.
    pub spec: PipelineSpec,
    positions: Positions,
    /// The device the networks run on (the `device:` key, or the override).
    device: DeviceSpec,
    /// The `precision:` key.
    precision: Precision,
    /// The file each `weights:` value names (registry names resolved to the cache).
    weights: BTreeMap<String, PathBuf>,
    /// Download registry weights that are not cached yet (else list them in
    /// `pending`).
    fetch: bool,
    /// Registry weights a run would download first (read without fetching).
    pending: Vec<PendingWeights>,
}

/// Registry weights that are not in the cache yet: what a run would download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWeights {
    /// The key that names them (`backbones.main.weights`).
    pub key: String,
    /// The registry name.
    pub name: String,
    /// Where they would be downloaded from.
    pub url: String,
    /// Where they would be cached.
    pub path: PathBuf,
}

impl PipelineFile {
    /// Reads and parses a pipeline file.
    pub fn read(path: &Path) -> Result<Self> {
        Self::read_with_device(path, None)
    }

    /// Reads and parses a pipeline file; a `device` given (the CLI's `--device`)
    /// replaces the file's `device:` key, which is then not checked.
    pub fn read_with_device(path: &Path, device: Option<DeviceSpec>) -> Result<Self> {
        Self::parse_from(path, &Self::text_of(path)?, device, true)
    }

    /// Reads and parses a pipeline file without downloading anything: registry
    /// weights that are not cached yet are listed in
    /// [`pending_weights`](Self::pending_weights) instead (`vpipe validate`).
    pub fn read_without_fetching(path: &Path) -> Result<Self> {
        Self::parse_from(path, &Self::text_of(path)?, None, false)
    }

    fn text_of(path: &Path) -> Result<String> {
        std::fs::read_to_string(path).map_err(|cause| PipelineError::Io {
            path: path.to_path_buf(),
            cause,
        })
    }

    /// Registry weights not in the cache, which a run would download first (only
    /// ever non-empty for [`read_without_fetching`](Self::read_without_fetching)).
    pub fn pending_weights(&self) -> &[PendingWeights] {
        &self.pending
    }

    /// Parses pipeline text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        Self::parse_with_device(path, text, None)
    }

    /// Parses pipeline text as [`parse`](Self::parse) does; a `device` given
    /// replaces the file's `device:` key, which is then not checked.
    pub fn parse_with_device(path: &Path, text: &str, device: Option<DeviceSpec>) -> Result<Self> {
        Self::parse_from(path, text, device, true)
    }

    fn parse_from(
        path: &Path,
        text: &str,
        device: Option<DeviceSpec>,
        fetch: bool,
    ) -> Result<Self> {
        let positions = Positions::index(text).map_err(|(pos, message)| ConfigError {
            file: path.to_path_buf(),
            line: pos.line,
            column: pos.column,
            path: String::new(),
            message: format!("not valid YAML: {message}"),
            hint: None,
        })?;
        let de = serde_yaml::Deserializer::from_str(text);
        let spec: PipelineSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let key_path = e.path().to_string();
            let key_path = if key_path == "." {
                String::new()
            } else {
                key_path
            };
            let inner = e.into_inner();
            let pos = inner
                .location()
                .map(|l| Position {
                    line: l.line(),
                    column: l.column(),
                })
                .unwrap_or_else(|| positions.locate(&key_path));
            let raw = inner.to_string();
            // serde_yaml starts its message with the key path, reported separately.
            let raw = match raw.split_once(": ") {
                Some((head, rest)) if !head.contains(' ') => rest.to_string(),
                _ => raw,
            };
            let (message, hint) = describe_serde_error(&raw);
            ConfigError {
                file: path.to_path_buf(),
                line: pos.line,
                column: pos.column,
                path: key_path,
                message,
                hint,
            }
        })?;
        let mut file = Self {
            path: path.to_path_buf(),
            spec,
            positions,
            device: DeviceSpec::Cpu,
            precision: Precision::Fp32,
            weights: BTreeMap::new(),
            fetch,
            pending: Vec::new(),
        };
        file.device = match device {
            Some(d) => {
                file.spec.device = d.to_string();
                d
            }
            None => file.check_device()?,
        };
        file.precision = file.check_precision()?;
        let (weights, pending) = file.check_form()?;
        file.weights = weights;
        file.pending = pending;
        Ok(file)
    }

    /// The device the networks run on: the `device:` key (checked: known, and
    /// compiled into this build) or the override it was read with.
    pub fn device(&self) -> DeviceSpec {
        self.device
    }

    /// Checks head `i`'s zones and lines: on a detection head, lines with a tracker,
    /// names unique, polygons that are simple, anchors known.
    fn check_regions(&self, i: usize, h: &HeadSpec) -> Result<()> {
        let fail = |key: String, message: String| -> Result<()> {
            Err(self.error(&key, message, None).into())
        };
        if (!h.zones.is_empty() || !h.lines.is_empty())
            && matches!(h.kind.as_str(), "classification" | "deeplabv3")
        {
            let key = if h.zones.is_empty() { "lines" } else { "zones" };
            return fail(
                format!("heads[{i}].{key}"),
                format!(
                    "zones and lines count detections, and a '{}' head gives none",
                    h.kind
                ),
            );
        }
        if !h.lines.is_empty() && h.tracker.is_none() {
            return fail(
                format!("heads[{i}].lines"),
                "lines count tracks crossing them: give the head a `tracker:` too".into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        let regions = h
            .zones
            .iter()
            .map(|z| ("zones", &z.name, &z.anchor))
            .chain(h.lines.iter().map(|l| ("lines", &l.name, &l.anchor)));
        for (j, (key, name, anchor)) in regions.enumerate() {
            let j = if key == "zones" { j } else { j - h.zones.len() };
            let at = format!("heads[{i}].{key}[{j}]");
            if !names.insert(name) {
                return fail(
                    format!("{at}.name"),
                    format!("'{name}' names two zones or lines of this head"),
                );
            }
            if let Err(e) = anchor.parse::<Anchor>() {
                return fail(format!("{at}.anchor"), e);
            }
        }
        for (j, z) in h.zones.iter().enumerate() {
            if let Err(e) = PolygonZone::new(z.polygon.clone()) {
                return fail(format!("heads[{i}].zones[{j}].polygon"), e);
            }
        }
        for (j, l) in h.lines.iter().enumerate() {
            if let Err(e) = LineCounter::new(l.start, l.end) {
                return fail(format!("heads[{i}].lines[{j}]"), e);
            }
        }
        Ok(())
    }

    /// The `precision:` key (checked: known, and `bf16` or `int8` only on the CPU).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Parses the `precision:` key.
    fn check_precision(&self) -> Result<Precision> {
        let written = &self.spec.precision;
        let precision = written.parse::<Precision>().map_err(|e| {
            let hint =
                closest(written, ["fp32", "bf16", "int8"]).map(|c| format!("did you mean '{c}'?"));
            self.error("precision", e, hint)
        })?;
        if precision != Precision::Fp32 && self.device != DeviceSpec::Cpu {
            return Err(self
                .error(
                    "precision",
                    format!(
                        "precision {precision} runs on the CPU only, and this pipeline runs on {}",
                        self.device
                    ),
                    Some("use `precision: fp32` (the default) on GPUs".into()),
                )
                .into());
        }
        Ok(precision)
    }

    /// Parses the `device:` key and checks that this build has its backend.
    fn check_device(&self) -> Result<DeviceSpec> {
        let written = &self.spec.device;
        let spec = written
            .parse::<DeviceSpec>()
            .and_then(|d| d.device().map(|_| d));
        spec.map_err(|e| {
            let hint = match &e {
                DeviceError::Unknown(_) => closest(written, ["cpu", "vulkan", "wgpu", "cuda"])
                    .map(|c| format!("did you mean '{c}'?")),
                DeviceError::NotCompiled { .. } => {
                    Some("or run on the CPU: `device: cpu` or `--device cpu`".into())
                }
            };
            self.error("device", e.to_string(), hint).into()
        })
    }

    /// An error at key path `path`.
    pub fn error(
        &self,
        path: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> ConfigError {
        let pos = self.positions.locate(path);
        ConfigError {
            file: self.path.clone(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: message.into(),
            hint,
        }
    }

    /// [`error`](Self::error) located at the value of `path` rather than its key.
    pub fn error_at_value(
        &self,
        path: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> ConfigError {
        let pos = self.positions.locate_value(path);
        ConfigError {
            line: pos.line,
            column: pos.column,
            ..self.error(path, message, hint)
        }
    }

    /// Resolves a path written in the file against the file's folder, with `.` and
    /// `name/..` steps taken out (`pipelines/../weights/x.pt` is `weights/x.pt`).
    pub fn resolve(&self, written: &str) -> PathBuf {
        let p = Path::new(written);
        if p.is_absolute() {
            return normalise(p);
        }
        normalise(
            &self
                .path
                .parent()
                .map(|d| d.join(p))
                .unwrap_or_else(|| p.to_path_buf()),
        )
    }

    /// The weights file a `weights:` value of this pipeline names: the file it
    /// resolves to, or the cached file of a registry name.
    pub fn weights_path(&self, written: &str) -> PathBuf {
        self.weights
            .get(written)
            .cloned()
            .unwrap_or_else(|| self.resolve(written))
    }

    /// The pipeline's name: its `name`, else the file stem.
    pub fn name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into())
        })
    }

    /// The backbone head `index` reads: its `backbone`, or the only one.
    pub fn backbone_of(&self, index: usize) -> Result<&str> {
        let head = &self.spec.heads[index];
        let names: Vec<&str> = self.spec.backbones.keys().map(String::as_str).collect();
        match &head.backbone {
            Some(b) => self
                .spec
                .backbones
                .get_key_value(b)
                .map(|(k, _)| k.as_str())
                .ok_or_else(|| {
                    self.error(
                        &format!("heads[{index}].backbone"),
                        format!("no backbone named '{b}' (defined: {})", names.join(", ")),
                        closest(b, names.iter().copied()).map(|c| format!("did you mean '{c}'?")),
                    )
                    .into()
                }),
            None if names.len() == 1 => Ok(names[0]),
            None => Err(self
                .error(
                    &format!("heads[{index}]"),
                    "this head does not say which backbone it reads",
                    Some(format!("add `backbone:` with one of: {}", names.join(", "))),
                )
                .into()),
        }
    }

    /// Checks what can be checked without reading any weights, and finds (or
    /// fetches) every weights file.
    fn check_form(&self) -> Result<(BTreeMap<String, PathBuf>, Vec<PendingWeights>)> {
        let mut weights = BTreeMap::new();
        let mut pending = Vec::new();
        let s = &self.spec;
        if s.backbones.is_empty() {
            return Err(self
                .error("backbones", "at least one backbone is needed", None)
                .into());
        }
        if s.heads.is_empty() {
            return Err(self
                .error("heads", "at least one head is needed", None)
                .into());
        }
        for (name, b) in &s.backbones {
            let at = format!("backbones.{name}");
            if let Some(Err(message)) = b.output_stride.map(vpipe_backbone::check_output_stride) {
                return Err(self
                    .error(&format!("{at}.output_stride"), message, None)
                    .into());
            }
            let found = self.locate_weights(&format!("{at}.weights"), &b.weights, &mut pending)?;
            weights.insert(b.weights.clone(), found);
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, h) in s.heads.iter().enumerate() {
            if let Some(first) = seen.insert(h.name.as_str(), i) {
                return Err(self
                    .error(
                        &format!("heads[{i}].name"),
                        format!("head name '{}' is used twice (also heads[{first}])", h.name),
                        Some("give each head its own name".into()),
                    )
                    .into());
            }
            self.backbone_of(i)?;
            if let Some(t) = &h.tracker {
                if matches!(h.kind.as_str(), "classification" | "deeplabv3") {
                    return Err(self
                        .error(
                            &format!("heads[{i}].tracker"),
                            format!(
                                "a tracker follows detections, and a '{}' head gives none",
                                h.kind
                            ),
                            Some("put the tracker on a detection head (`type: ssd`)".into()),
                        )
                        .into());
                }
                if let Some((key, message)) = t.invalid() {
                    return Err(self
                        .error(&format!("heads[{i}].tracker.{key}"), message, None)
                        .into());
                }
            }
            self.check_regions(i, h)?;
            if let Some(w) = &h.weights {
                let found = self.locate_weights(&format!("heads[{i}].weights"), w, &mut pending)?;
                weights.insert(w.clone(), found);
            }
        }
        let r = &s.runner;
        if r.batch == 0 || r.queue == 0 {
            let key = if r.batch == 0 { "batch" } else { "queue" };
            return Err(self
                .error(&format!("runner.{key}"), "must be at least 1", None)
                .into());
        }
        if !(0.0..=1.0).contains(&s.output.mask_alpha) {
            return Err(self
                .error("output.mask_alpha", "must be between 0 and 1", None)
                .into());
        }
        if s.output.video_codec.len() != 4 {
            return Err(self
                .error(
                    "output.video_codec",
                    format!("'{}' is not a four-character code", s.output.video_codec),
                    Some("use mp4v or avc1".into()),
                )
                .into());
        }
        Ok((weights, pending))
    }

    /// The file a `weights:` value names: a path relative to the pipeline file, or a
    /// registry name, fetched into the cache on first use (without fetching: its
    /// cache path, with the download added to `pending`).
    fn locate_weights(
        &self,
        at: &str,
        written: &str,
        pending: &mut Vec<PendingWeights>,
    ) -> Result<PathBuf> {
        let base = self.path.parent().unwrap_or(Path::new(""));
        let mut config = CacheConfig::from_env();
        config.offline |= !self.fetch;
        let located = match vpipe_weights::locate(written, base, &config) {
            Err(WeightsError::Unavailable {
                name, url, path, ..
            }) if !self.fetch => {
                pending.push(PendingWeights {
                    key: at.to_string(),
                    name,
                    url,
                    path: path.clone(),
                });
                Ok(path)
            }
            other => other,
        };
        located.map(|p| normalise(&p)).map_err(|e| match e {
            WeightsError::NotFound { looked_at, .. } => {
                let names = Registry::builtin().names();
                let hint = closest(written, names.iter().copied())
                    .map(|c| format!("did you mean the registry name '{c}'?"))
                    .unwrap_or_else(|| {
                        "paths are relative to the pipeline file's folder; registry names: `vpipe weights list`"
                            .into()
                    });
                self.error(
                    at,
                    format!(
                        "weights file '{written}' not found (looked at {}) and not a registry name",
                        looked_at.display()
                    ),
                    Some(hint),
                )
                .into()
            }
            other => self.error(at, other.to_string(), None).into(),
        })
    }
}

/// `path` with `.` steps dropped and each `name/..` pair taken out, without looking
/// at the file system (a `..` at the start, or after the root, stays).
fn normalise(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// serde's words for what it expected (Rust types) in a user's words.
fn expected_in_words(expected: &str) -> String {
    let words = match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number ≥ 0",
        "isize" | "i64" | "i32" => "a whole number",
        "f32" | "f64" => "a number",
        "a sequence" => "a list",
        "a boolean" => "true or false",
        "a string" => "text",
        "a map" => "a mapping (`key: value` lines)",
        e if e.starts_with("struct ") => "a mapping (`key: value` lines)",
        e => return e.to_string(),
    };
    words.to_string()
}

/// serde's description of a value it got, in a user's words.
fn found_in_words(found: &str) -> String {
    let unquote = |s: &str| s.trim_matches('`').to_string();
    match found.split_once(' ') {
        Some(("string", v)) => format!("the text {v}"),
        Some(("integer" | "boolean", v)) => unquote(v),
        Some(("floating", v)) => unquote(v.trim_start_matches("point ")),
        _ => match found {
            "sequence" => "a list".into(),
            "map" => "a mapping".into(),
            "unit value" => "nothing".into(),
            f => f.to_string(),
        },
    }
}

/// "invalid type: string \"x\", expected usize" as "expected a whole number ≥ 0, got
/// the text \"x\"" (and the same for "invalid value"); other messages as they are.
fn in_words(message: &str) -> String {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    match rest.and_then(|r| r.rsplit_once(", expected ")) {
        Some((found, expected)) => format!(
            "expected {}, got {}",
            expected_in_words(expected),
            found_in_words(found)
        ),
        None => message.to_string(),
    }
}

/// Splits a serde_yaml message into a message without its position and a hint.
fn describe_serde_error(raw: &str) -> (String, Option<String>) {
    // serde_yaml appends " at line L column C"; the position is reported separately.
    let message = match raw.find(" at line ") {
        Some(i) => &raw[..i],
        None => raw,
    };
    let hint = unknown_name_hint(message);
    (in_words(message), hint)
}

/// For "unknown field `x`, expected one of `a`, `b`" (or variant), a "did you mean" hint.
fn unknown_name_hint(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (word, tail) = rest.split_once('`')?;
    let known: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
    match closest(word, known.iter().copied()) {
        Some(c) => Some(format!("did you mean `{c}`?")),
        None if !known.is_empty() => Some(format!("valid keys: {}", known.join(", "))),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<PipelineFile, ConfigError> {
        PipelineFile::parse(Path::new("/nonexistent/p.yaml"), text).map_err(|e| match e {
            PipelineError::Config(c) => *c,
            other => panic!("not a config error: {other}"),
        })
    }

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(
            in_words("invalid type: string \"lots\", expected usize"),
            "expected a whole number ≥ 0, got the text \"lots\""
        );
        assert_eq!(
            in_words("invalid type: map, expected a sequence"),
            "expected a list, got a mapping"
        );
        assert_eq!(
            in_words("invalid value: integer `-1`, expected usize"),
            "expected a whole number ≥ 0, got -1"
        );
        assert_eq!(
            in_words("invalid type: floating point `0.5`, expected a boolean"),
            "expected true or false, got 0.5"
        );
        let e = parse("threads: lots\nbackbones:\n  main:\n    weights: a.pt\nheads: []\n")
            .unwrap_err();
        assert!(!e.message.contains("usize"), "{e}");
        assert_eq!(
            normalise(Path::new("pipelines/../weights/./x.pt")),
            Path::new("weights/x.pt")
        );
        assert_eq!(normalise(Path::new("../a/../b")), Path::new("../b"));
    }

    #[test]
    fn unknown_keys_have_position_path_and_hint() {
        let e = parse("backbones:\n  main:\n    weigths: a.pt\nheads: []\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 5), "{e}");
        assert_eq!(e.path, "backbones.main.weigths");
        assert!(e.message.contains("unknown field `weigths`"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("did you mean `weights`?"));
        let shown = e.to_string();
        assert!(
            shown.starts_with("/nonexistent/p.yaml:3:5: backbones.main.weigths: "),
            "{shown}"
        );
    }

    #[test]
    fn wrong_types_and_missing_keys() {
        let e = parse("backbones: {}\nheads:\n  - name: a\n    type: ssd\n    options: 3\n")
            .unwrap_err();
        assert_eq!(e.path, "heads[0].options", "{e}");
        assert_eq!(e.line, 5, "{e}");
        let e = parse("backbones: {}\nheads:\n  - type: ssd\n").unwrap_err();
        assert!(e.message.contains("missing field `name`"), "{e}");
        assert_eq!(e.path, "heads[0]", "{e}");
        let e = parse("backbones: {}\nheads: []\nrunner:\n  live: drop_newest\n").unwrap_err();
        assert_eq!(
            e.hint.as_deref(),
            Some("did you mean `drop_oldest`?"),
            "{e}"
        );
        let e = parse("backbones: [\n").unwrap_err();
        assert!(e.message.starts_with("not valid YAML"), "{e}");
    }

    #[test]
    fn missing_weights_and_unknown_backbones_are_located() {
        let e =
            parse("backbones:\n  main:\n    weights: nope.pt\nheads:\n  - {name: a, type: ssd}\n")
                .unwrap_err();
        assert_eq!(e.path, "backbones.main.weights");
        assert_eq!((e.line, e.column), (3, 5));
        assert!(
            e.message.contains("nope.pt") && e.message.contains("not found"),
            "{e}"
        );
    }

    #[test]
    fn devices_are_checked_where_written() {
        let e = parse("device: gpu\nbackbones: {}\nheads: []\n").unwrap_err();
        assert_eq!((e.path.as_str(), e.line, e.column), ("device", 1, 1), "{e}");
        assert!(e.message.contains("unknown device 'gpu'"), "{e}");
        let e = parse("device: vulkn\nbackbones: {}\nheads: []\n").unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("did you mean 'vulkan'?"), "{e}");
        // `cuda` is never in CI's build; the message names the feature to enable.
        if !DeviceSpec::Cuda(None).is_compiled() {
            let e = parse("name: p\ndevice: cuda:1\nbackbones: {}\nheads: []\n").unwrap_err();
            assert_eq!((e.line, e.column), (2, 1), "{e}");
            assert_eq!(
                e.message,
                "device 'cuda:1' needs vpipe built with --features cuda"
            );
        }
        // An override replaces the key without checking it.
        let f = PipelineFile::parse_with_device(
            Path::new("/nonexistent/p.yaml"),
            "device: nope\nbackbones: {}\nheads: []\n",
            Some(DeviceSpec::Cpu),
        )
        .unwrap_err();
        assert!(f.to_string().contains("at least one backbone"), "{f}");
    }

    #[test]
    fn precision_is_checked_where_written() {
        let e = parse("precision: bf61\nbackbones: {}\nheads: []\n").unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.line, e.column),
            ("precision", 1, 1),
            "{e}"
        );
        assert!(e.message.contains("unknown precision 'bf61'"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("did you mean 'bf16'?"), "{e}");
        let e = PipelineFile::parse_with_device(
            Path::new("/nonexistent/p.yaml"),
            "name: p\nprecision: bf16\nbackbones: {}\nheads: []\n",
            Some(DeviceSpec::Wgpu),
        )
        .unwrap_err();
        assert!(e.to_string().contains("runs on the CPU only"), "{e}");
        assert!(e.to_string().contains(":2:"), "{e}");
    }

    #[test]
    fn misspelt_registry_names_get_a_hint() {
        let e = parse(
            "backbones:\n  main:\n    weights: cvnets/mobilvit_xxs\nheads:\n  - {name: a, type: ssd}\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "backbones.main.weights");
        assert_eq!((e.line, e.column), (3, 5));
        assert!(e.message.contains("not a registry name"), "{e}");
        assert_eq!(
            e.hint.as_deref(),
            Some("did you mean the registry name 'cvnets/mobilevit_xxs'?"),
            "{e}"
        );
    }
}
