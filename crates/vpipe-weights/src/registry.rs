//! The weights registry: `weights/registry.yaml`, compiled into vpipe.
//!
//! `entries` are the published checkpoints, fetched by name into the cache;
//! `shipped` are the files in the repository's `weights/` folder, recognised by
//! size and sha256 (which is how random-initialised reference weights are told apart
//! from trained ones).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use vpipe_backbone::layout::CheckpointTask;
use vpipe_backbone::{CheckpointLayout, MobileVitSize, SourceLayout};
use vpipe_core::labels::LabelSet;
use vpipe_core::preset::PreprocessPreset;
use vpipe_io::checkpoint::FileFormat;

use crate::error::{Result, WeightsError};

/// The registry text compiled into vpipe.
pub const BUILTIN: &str = include_str!("../../../weights/registry.yaml");

/// What an entry or a shipped file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// Container format.
    pub format: FileFormat,
    /// Tensor naming.
    pub layout: SourceLayout,
    /// The head it carries.
    pub task: CheckpointTask,
    /// Backbone size.
    pub arch: MobileVitSize,
    /// Class names.
    pub labels: LabelSet,
    /// Preprocessing it was trained with.
    pub preprocess: PreprocessPreset,
    /// Size in bytes, where known.
    pub size: Option<u64>,
    /// Pinned sha256 (lower-case hex), where known.
    pub sha256: Option<String>,
    /// Licence key (see [`Registry::licences`]).
    pub licence: String,
}

impl Description {
    /// The layout, task and size a checkpoint so described reads back as.
    pub fn checkpoint_layout(&self) -> CheckpointLayout {
        CheckpointLayout {
            source: self.layout,
            task: self.task,
            size: self.arch,
        }
    }
}

/// A published checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Registry name, e.g. `cvnets/mobilevit_s`.
    pub name: String,
    /// Where it is published.
    pub url: String,
    /// Where that URL is documented.
    pub source: String,
    /// The URL is documented only in an old release of the publisher's docs, no longer
    /// on its current pages (see [`Entry::source`]): it may stop working.
    pub legacy: bool,
    /// What it holds.
    pub description: Description,
}

impl Entry {
    /// The file name the entry is cached under: the last segment of its URL.
    pub fn file_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }
}

/// A file shipped in the repository's `weights/` folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedFile {
    /// Path relative to `weights/`.
    pub path: String,
    /// What it holds (size and sha256 are always known).
    pub description: Description,
    /// Initialised at random, not trained.
    pub random_init: bool,
}

/// The parsed registry.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Licence texts by key.
    pub licences: BTreeMap<String, String>,
    /// Published checkpoints, in file order.
    pub entries: Vec<Entry>,
    /// Files shipped in `weights/`.
    pub shipped: Vec<ShippedFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    version: u32,
    licences: BTreeMap<String, String>,
    entries: Vec<RawEntry>,
    shipped: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    legacy: bool,
    format: String,
    layout: String,
    task: String,
    arch: String,
    labels: String,
    preprocess: String,
    size: Option<u64>,
    sha256: Option<String>,
    licence: String,
    #[serde(default)]
    random_init: bool,
}

/// Whether `name` is a usable registry name: ASCII letters, digits, `.`, `_`, `-`,
/// and `/` between non-empty segments that are not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

impl RawEntry {
    fn describe(&self, at: &str, licences: &BTreeMap<String, String>) -> Result<Description> {
        let bad = |what: &str, value: &str| {
            WeightsError::Registry(format!("{at}: unknown {what} '{value}'"))
        };
        let format = match self.format.as_str() {
            "pytorch" => FileFormat::Pytorch,
            "safetensors" => FileFormat::Safetensors,
            other => return Err(bad("format (pytorch or safetensors)", other)),
        };
        let layout =
            SourceLayout::from_name(&self.layout).ok_or_else(|| bad("layout", &self.layout))?;
        let task = CheckpointTask::from_name(&self.task).ok_or_else(|| bad("task", &self.task))?;
        let arch = self
            .arch
            .parse::<MobileVitSize>()
            .map_err(|_| bad("arch", &self.arch))?;
        let labels = [LabelSet::ImageNet1k, LabelSet::Coco81, LabelSet::Voc21]
            .into_iter()
            .find(|l| l.name() == self.labels)
            .ok_or_else(|| bad("label set", &self.labels))?;
        let preprocess = self
            .preprocess
            .parse::<PreprocessPreset>()
            .map_err(|_| bad("preprocessing preset", &self.preprocess))?;
        if let Some(h) = &self.sha256
            && !is_sha256(h)
        {
            return Err(WeightsError::Registry(format!(
                "{at}: sha256 '{h}' is not 64 lower-case hex digits"
            )));
        }
        if !licences.contains_key(&self.licence) {
            return Err(bad("licence", &self.licence));
        }
        Ok(Description {
            format,
            layout,
            task,
            arch,
            labels,
            preprocess,
            size: self.size,
            sha256: self.sha256.clone(),
            licence: self.licence.clone(),
        })
    }
}

impl Registry {
    /// Parses and checks registry text.
    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawRegistry = serde_yaml::from_str(text)
            .map_err(|e| WeightsError::Registry(format!("not a valid registry: {e}")))?;
        if raw.version != 1 {
            return Err(WeightsError::Registry(format!(
                "version {} is not supported (this vpipe reads version 1)",
                raw.version
            )));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.entries.len());
        for (i, e) in raw.entries.iter().enumerate() {
            let at = format!("entries[{i}]");
            let (Some(name), Some(url), None) = (&e.name, &e.url, &e.path) else {
                return Err(WeightsError::Registry(format!(
                    "{at}: an entry has a `name` and a `url` (and no `path`)"
                )));
            };
            if !valid_name(name) {
                return Err(WeightsError::Registry(format!(
                    "{at}: '{name}' is not a valid name (letters, digits, . _ - and / between segments)"
                )));
            }
            if entries.iter().any(|x| &x.name == name) {
                return Err(WeightsError::Registry(format!(
                    "{at}: '{name}' is listed twice"
                )));
            }
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(WeightsError::Registry(format!(
                    "{at}: url '{url}' is not http(s)"
                )));
            }
            if e.random_init {
                return Err(WeightsError::Registry(format!(
                    "{at}: `random_init` is for shipped files"
                )));
            }
            let Some(source) = e.source.as_ref().filter(|s| !s.trim().is_empty()) else {
                return Err(WeightsError::Registry(format!(
                    "{at}: '{name}' needs a `source` (where its URL is documented)"
                )));
            };
            entries.push(Entry {
                name: name.clone(),
                url: url.clone(),
                source: source.clone(),
                legacy: e.legacy,
                description: e.describe(&at, &raw.licences)?,
            });
        }
        let mut shipped = Vec::with_capacity(raw.shipped.len());
        for (i, e) in raw.shipped.iter().enumerate() {
            let at = format!("shipped[{i}]");
            let (None, None, Some(path)) = (&e.name, &e.url, &e.path) else {
                return Err(WeightsError::Registry(format!(
                    "{at}: a shipped file has a `path` (and no `name` or `url`)"
                )));
            };
            if e.source.is_some() || e.legacy {
                return Err(WeightsError::Registry(format!(
                    "{at}: `source` and `legacy` are for published entries"
                )));
            }
            let description = e.describe(&at, &raw.licences)?;
            if description.size.is_none() || description.sha256.is_none() {
                return Err(WeightsError::Registry(format!(
                    "{at}: a shipped file needs its size and sha256"
                )));
            }
            shipped.push(ShippedFile {
                path: path.clone(),
                description,
                random_init: e.random_init,
            });
        }
        Ok(Self {
            licences: raw.licences,
            entries,
            shipped,
        })
    }

    /// The registry compiled into vpipe (`weights/registry.yaml`).
    pub fn builtin() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| match Registry::parse(BUILTIN) {
            Ok(r) => r,
            // The compiled-in file is checked by this crate's tests.
            Err(e) => panic!("the compiled-in weights/registry.yaml is invalid: {e}"),
        })
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Every entry name, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_lists_every_official_checkpoint() {
        let r = Registry::parse(BUILTIN).unwrap();
        assert_eq!(r.entries.len(), 18);
        for size in ["xxs", "xs", "s"] {
            for name in [
                format!("cvnets/mobilevit_{size}"),
                format!("cvnets/ssd_mobilevit_{size}_320"),
                format!("cvnets/deeplabv3_mobilevit_{size}_voc"),
                format!("timm/mobilevit_{size}.cvnets_in1k"),
            ] {
                assert!(r.get(&name).is_some(), "{name}");
            }
        }
        let seg = r.get("hf/apple/deeplabv3-mobilevit-small").unwrap();
        assert_eq!(seg.description.layout, SourceLayout::HuggingFace);
        assert_eq!(seg.description.task, CheckpointTask::Segmentation);
        assert_eq!(seg.description.arch, MobileVitSize::S);
        assert_eq!(seg.file_name(), "pytorch_model.bin");
        assert_eq!(r.shipped.len(), 7);
        assert!(r.shipped.iter().all(|s| s.random_init));
    }

    #[test]
    fn legacy_entries_are_the_cvnets_ssd_and_deeplabv3_urls() {
        let r = Registry::builtin();
        let legacy: Vec<&str> = r
            .entries
            .iter()
            .filter(|e| e.legacy)
            .map(|e| e.name.as_str())
            .collect();
        let mut expected = Vec::new();
        for size in ["xxs", "xs", "s"] {
            expected.push(format!("cvnets/ssd_mobilevit_{size}_320"));
        }
        for size in ["xxs", "xs", "s"] {
            expected.push(format!("cvnets/deeplabv3_mobilevit_{size}_voc"));
        }
        assert_eq!(legacy, expected);
        for e in r.entries.iter().filter(|e| e.legacy) {
            assert!(e.source.contains("cvnets-v0.1"), "{}: {}", e.name, e.source);
        }
        let text = BUILTIN.replacen(
            "    source: Hugging Face model repository apple/mobilevit-small (file on main)\n",
            "",
            1,
        );
        let err = Registry::parse(&text).unwrap_err().to_string();
        assert!(err.contains("needs a `source`"), "{err}");
    }

    #[test]
    fn pinned_hashes_and_licences() {
        let r = Registry::builtin();
        let pinned: Vec<&str> = r
            .entries
            .iter()
            .filter(|e| e.description.sha256.is_some())
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            pinned,
            [
                "hf/apple/mobilevit-xx-small",
                "hf/apple/mobilevit-x-small",
                "hf/apple/mobilevit-small",
                "hf/apple/deeplabv3-mobilevit-xx-small",
                "hf/apple/deeplabv3-mobilevit-x-small",
                "hf/apple/deeplabv3-mobilevit-small",
                "timm/mobilevit_s.cvnets_in1k",
            ]
        );
        let seg = r.get("hf/apple/deeplabv3-mobilevit-small").unwrap();
        assert_eq!(seg.description.licence, "apple-amlr");
        assert!(r.licences["apple-amlr"].contains("research use only"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("hf/apple/mobilevit-small"));
        assert!(valid_name("timm/mobilevit_s.cvnets_in1k"));
        for bad in ["", "a//b", "../x", "a/./b", "a b", "/abs"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let text = BUILTIN.replacen(
            "name: cvnets/mobilevit_xs\n",
            "name: cvnets/mobilevit_xxs\n",
            1,
        );
        let err = Registry::parse(&text).unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
    }
}
