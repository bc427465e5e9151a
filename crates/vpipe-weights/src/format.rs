//! vpipe's own weights format, and importing any supported checkpoint into it.
//!
//! A vpipe weights file is a safetensors file holding the canonical tensors (the
//! ml-cvnets naming that [`vpipe_backbone::layout::to_canonical`] produces, Hugging
//! Face's query/key/value already fused), in f32 or f16, with string metadata:
//!
//! | key | value |
//! |---|---|
//! | `vpipe.format` | `vpipe-weights` |
//! | `vpipe.format_version` | `1` |
//! | `vpipe.arch` | `mobilevit_xxs`, `mobilevit_xs` or `mobilevit_s` |
//! | `vpipe.task` | `classification`, `detection` or `segmentation` |
//! | `vpipe.source` | the layout converted from: `cvnets`, `timm` or `huggingface` |
//! | `vpipe.labels` | `imagenet1k`, `coco81` or `voc21` |
//! | `vpipe.preprocess` | the preprocessing preset the weights were trained with |
//! | `vpipe.dtype` | `f32` or `f16` |
//! | `vpipe.original_file`, `vpipe.original_sha256` | the file converted, and its hash |
//! | `vpipe.registry_name` | the registry entry it came from (when known) |
//! | `vpipe.random_init` | `true` for random-initialised weights, else `false` |
//!
//! It is read by the normal loaders ([`vpipe_io::TensorFile`], `LoadedModel::load`,
//! pipelines): the names need no renaming, and `vpipe.source` keeps the source's
//! conventions (DeepLab upsampling, default preprocessing).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, View};
use vpipe_backbone::layout::{
    CheckpointTask, SOURCE_METADATA_KEY, TASK_METADATA_KEY, to_canonical,
};
use vpipe_backbone::{CheckpointLayout, MobileVitSize, SourceLayout};
use vpipe_core::labels::LabelSet;
use vpipe_core::preset::PreprocessPreset;
use vpipe_core::tensor::HostTensor;
use vpipe_io::TensorFile;

use crate::download::sha256_file;
use crate::error::{Result, WeightsError};
use crate::provenance::weights_note;
use crate::registry::Entry;

/// Value of `vpipe.format`.
pub const FORMAT_NAME: &str = "vpipe-weights";
/// Value of `vpipe.format_version` written by this version.
pub const FORMAT_VERSION: &str = "1";
/// Metadata key marking random-initialised weights.
pub const RANDOM_INIT_KEY: &str = "vpipe.random_init";

/// What a vpipe weights file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsMetadata {
    /// Backbone size.
    pub arch: MobileVitSize,
    /// The head it carries.
    pub task: CheckpointTask,
    /// The layout it was converted from.
    pub source: SourceLayout,
    /// Class names.
    pub labels: LabelSet,
    /// Preprocessing it was trained with.
    pub preprocess: PreprocessPreset,
    /// Stored in f16 (else f32).
    pub f16: bool,
    /// File name it was converted from.
    pub original_file: String,
    /// sha256 of that file.
    pub original_sha256: String,
    /// Registry entry it came from.
    pub registry_name: Option<String>,
    /// Random-initialised, not trained.
    pub random_init: bool,
}

impl WeightsMetadata {
    pub(crate) fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        let mut put = |k: &str, v: &str| m.insert(k.to_string(), v.to_string());
        put("vpipe.format", FORMAT_NAME);
        put("vpipe.format_version", FORMAT_VERSION);
        put("vpipe.arch", self.arch.arch_name());
        put(TASK_METADATA_KEY, &self.task.to_string());
        put(SOURCE_METADATA_KEY, self.source.name());
        put("vpipe.labels", self.labels.name());
        put("vpipe.preprocess", self.preprocess.name());
        put("vpipe.dtype", if self.f16 { "f16" } else { "f32" });
        put("vpipe.original_file", &self.original_file);
        put("vpipe.original_sha256", &self.original_sha256);
        if let Some(n) = &self.registry_name {
            put("vpipe.registry_name", n);
        }
        put(
            RANDOM_INIT_KEY,
            if self.random_init { "true" } else { "false" },
        );
        m
    }

    /// The metadata of a vpipe weights file; `None` for any other checkpoint.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        use vpipe_io::checkpoint::{FileFormat, safetensors_metadata, sniff_format};
        if sniff_format(path)? != FileFormat::Safetensors {
            return Ok(None);
        }
        let m = safetensors_metadata(path)?;
        if m.get("vpipe.format").map(String::as_str) != Some(FORMAT_NAME) {
            return Ok(None);
        }
        Self::from_map(&m)
            .map(Some)
            .map_err(|message| WeightsError::Format {
                path: path.to_path_buf(),
                message,
            })
    }

    fn from_map(m: &BTreeMap<String, String>) -> std::result::Result<Self, String> {
        let get = |k: &str| {
            m.get(k)
                .map(String::as_str)
                .ok_or_else(|| format!("vpipe weights metadata lacks '{k}'"))
        };
        let version = get("vpipe.format_version")?;
        if version != FORMAT_VERSION {
            return Err(format!(
                "vpipe weights format version {version} is not supported (this vpipe reads {FORMAT_VERSION})"
            ));
        }
        let task = get(TASK_METADATA_KEY)?;
        let labels = get("vpipe.labels")?;
        Ok(Self {
            arch: get("vpipe.arch")?.parse()?,
            task: CheckpointTask::from_name(task)
                .ok_or_else(|| format!("unknown task '{task}'"))?,
            source: SourceLayout::from_name(get(SOURCE_METADATA_KEY)?)
                .ok_or("unknown source layout")?,
            labels: [LabelSet::ImageNet1k, LabelSet::Coco81, LabelSet::Voc21]
                .into_iter()
                .find(|l| l.name() == labels)
                .ok_or_else(|| format!("unknown label set '{labels}'"))?,
            preprocess: get("vpipe.preprocess")?
                .parse()
                .map_err(|e: vpipe_core::preset::UnknownPreset| e.to_string())?,
            f16: get("vpipe.dtype")? == "f16",
            original_file: get("vpipe.original_file")?.to_string(),
            original_sha256: get("vpipe.original_sha256")?.to_string(),
            registry_name: m.get("vpipe.registry_name").cloned(),
            random_init: get(RANDOM_INIT_KEY)? == "true",
        })
    }
}

/// Choices of [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Store the tensors in f16 (half the size; see the README for the accuracy).
    pub f16: bool,
    /// The registry entry the file came from: its labels and preprocessing are recorded.
    pub entry: Option<Entry>,
}

/// One tensor, as safetensors bytes.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Converts the checkpoint at `src` (any supported layout and container, or a vpipe
/// weights file) into a vpipe weights file at `out`, written atomically.
pub fn import(src: &Path, out: &Path, options: &ImportOptions) -> Result<WeightsMetadata> {
    let file = TensorFile::read(src)?;
    let layout = CheckpointLayout::detect(&file)?;
    let canonical = to_canonical(&file)?;
    let previous = WeightsMetadata::read(src)?;
    let (original_file, original_sha256) = match &previous {
        Some(p) => (p.original_file.clone(), p.original_sha256.clone()),
        None => (
            src.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256_file(src)?,
        ),
    };
    let entry = options.entry.as_ref().map(|e| &e.description);
    let meta = WeightsMetadata {
        arch: layout.size,
        task: layout.task,
        source: layout.source,
        labels: entry.map_or_else(|| crate::default_labels(layout.task), |d| d.labels),
        preprocess: entry.map_or_else(|| crate::default_preset(&layout), |d| d.preprocess),
        f16: options.f16,
        original_file,
        original_sha256,
        registry_name: options
            .entry
            .as_ref()
            .map(|e| e.name.clone())
            .or_else(|| previous.as_ref().and_then(|p| p.registry_name.clone())),
        random_init: weights_note(src)?.is_some(),
    };
    let bytes = serialize_tensors(out, &canonical.tensors, options.f16, meta.to_map())?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| WeightsError::io(dir, e))?;
    }
    if same_file(src, out) {
        return Err(WeightsError::Format {
            path: out.to_path_buf(),
            message: "the output would replace the checkpoint being imported".into(),
        });
    }
    vpipe_io::output::write_atomic(out, &bytes)?;
    Ok(meta)
}

/// Serialises named tensors (in f16 or f32) with string metadata as safetensors
/// bytes; `out` is the file they are for, named in errors.
pub(crate) fn serialize_tensors<'a>(
    out: &Path,
    tensors: impl IntoIterator<Item = (impl AsRef<str>, &'a HostTensor)>,
    f16: bool,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Bytes)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let (dtype, data) = if f16 {
                let data = t
                    .data
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect();
                (Dtype::F16, data)
            } else {
                (
                    Dtype::F32,
                    t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            };
            (
                name.as_ref().to_string(),
                Bytes {
                    dtype,
                    shape: t.shape.clone(),
                    data,
                },
            )
        })
        .collect();
    safetensors::tensor::serialize(tensors.iter().map(|(n, b)| (n.as_str(), b)), Some(metadata))
        .map_err(|e| WeightsError::Format {
            path: out.to_path_buf(),
            message: format!("cannot serialise: {e}"),
        })
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| p.canonicalize().ok();
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}
