//! Multi-head model files: one backbone and several named heads trained on it.
//!
//! A multi-head file is a vpipe weights file ([`crate::format`]) whose backbone
//! tensors keep their canonical names and whose heads' tensors are stored under
//! `heads.<name>.` followed by the head's own canonical names. The metadata key
//! [`HEADS_METADATA_KEY`] lists the heads as JSON: each with its name, its type as
//! registered (`classification`, `ssd`, `deeplabv3`, or a custom one), the options it
//! was trained with and its class names.
//!
//! A pipeline whose heads read such a file finds each head's tensors by the head's
//! name, so the backbone runs once per frame for all of them (see the README's
//! "Training" section).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use vpipe_core::tensor::HostTensor;
use vpipe_io::TensorFile;

use crate::error::{Result, WeightsError};
use crate::format::{WeightsMetadata, serialize_tensors};

/// Metadata key listing the heads of a multi-head file (JSON, a list of [`HeadEntry`]).
pub const HEADS_METADATA_KEY: &str = "vpipe.heads";

/// Prefix of every head tensor of a multi-head file.
pub const HEADS_PREFIX: &str = "heads.";

/// One head of a multi-head file, as its metadata describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadEntry {
    /// The head's name: its tensors are under `heads.<name>.`.
    pub name: String,
    /// Its type, as registered.
    #[serde(rename = "type")]
    pub kind: String,
    /// The options it was trained with (a pipeline's own options override them).
    #[serde(default)]
    pub options: Map<String, Value>,
    /// Its class names, when it has classes.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// How it was trained (free-form, for the record).
    #[serde(default)]
    pub training: Option<Value>,
}

/// A head of a multi-head file with its tensors, under the head's own names.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHead {
    /// What the metadata says of it.
    pub entry: HeadEntry,
    /// Its tensors, without the `heads.<name>.` prefix.
    pub tensors: BTreeMap<String, HostTensor>,
}

/// Takes the heads out of a multi-head file, leaving its backbone tensors in
/// `file`. Returns `None` (and leaves `file` as it is) for any other checkpoint.
pub fn split_heads(file: &mut TensorFile) -> Result<Option<Vec<StoredHead>>> {
    let Some(listing) = file.metadata.get(HEADS_METADATA_KEY) else {
        return Ok(None);
    };
    let bad = |message: String| WeightsError::Format {
        path: file.path.clone(),
        message,
    };
    let entries: Vec<HeadEntry> = serde_json::from_str(listing).map_err(|e| {
        bad(format!(
            "its '{HEADS_METADATA_KEY}' metadata is not a list of heads: {e}"
        ))
    })?;
    let mut heads: Vec<StoredHead> = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.name.is_empty() || entry.name.contains('.') {
            return Err(bad(format!(
                "head name '{}' is empty or contains a '.'",
                entry.name
            )));
        }
        if heads.iter().any(|h| h.entry.name == entry.name) {
            return Err(bad(format!("two heads are named '{}'", entry.name)));
        }
        heads.push(StoredHead {
            entry,
            tensors: BTreeMap::new(),
        });
    }
    let names: Vec<String> = file
        .tensors
        .keys()
        .filter(|k| k.starts_with(HEADS_PREFIX))
        .cloned()
        .collect();
    for full in names {
        let rest = &full[HEADS_PREFIX.len()..];
        let (head, name) = rest.split_once('.').unwrap_or((rest, ""));
        let Some(stored) = heads.iter_mut().find(|h| h.entry.name == head) else {
            return Err(bad(format!(
                "tensor '{full}' belongs to head '{head}', which its '{HEADS_METADATA_KEY}' metadata does not list"
            )));
        };
        let tensor = file
            .tensors
            .remove(&full)
            .unwrap_or_else(|| unreachable!("listed above"));
        stored.tensors.insert(name.to_string(), tensor);
    }
    if let Some(empty) = heads.iter().find(|h| h.tensors.is_empty()) {
        return Err(bad(format!(
            "head '{}' is listed but has no tensors (none named '{HEADS_PREFIX}{}.*')",
            empty.entry.name, empty.entry.name
        )));
    }
    Ok(Some(heads))
}

/// Writes a multi-head file atomically: `backbone` (canonical names) and `heads`,
/// described by `meta` (its task is the one the backbone was taken from).
pub fn write_multihead(
    path: &Path,
    meta: &WeightsMetadata,
    backbone: &BTreeMap<String, HostTensor>,
    heads: &[StoredHead],
) -> Result<()> {
    let mut tensors: BTreeMap<String, &HostTensor> =
        backbone.iter().map(|(k, v)| (k.clone(), v)).collect();
    for h in heads {
        for (k, v) in &h.tensors {
            tensors.insert(format!("{HEADS_PREFIX}{}.{k}", h.entry.name), v);
        }
    }
    let entries: Vec<&HeadEntry> = heads.iter().map(|h| &h.entry).collect();
    let mut metadata = meta.to_map();
    metadata.insert(
        HEADS_METADATA_KEY.to_string(),
        serde_json::to_string(&entries).map_err(|e| WeightsError::Format {
            path: path.to_path_buf(),
            message: format!("cannot describe the heads: {e}"),
        })?,
    );
    let bytes = serialize_tensors(path, tensors, meta.f16, metadata)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| WeightsError::io(dir, e))?;
    }
    vpipe_io::output::write_atomic(path, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpipe_backbone::MobileVitSize;
    use vpipe_backbone::SourceLayout;
    use vpipe_backbone::layout::CheckpointTask;
    use vpipe_core::labels::LabelSet;
    use vpipe_core::preset::PreprocessPreset;

    fn meta() -> WeightsMetadata {
        WeightsMetadata {
            arch: MobileVitSize::Xxs,
            task: CheckpointTask::Classification,
            source: SourceLayout::Cvnets,
            labels: LabelSet::ImageNet1k,
            preprocess: PreprocessPreset::CvnetsCls,
            f16: false,
            original_file: "x.pt".into(),
            original_sha256: "00".into(),
            registry_name: None,
            random_init: false,
        }
    }

    fn entry(name: &str, kind: &str) -> HeadEntry {
        HeadEntry {
            name: name.into(),
            kind: kind.into(),
            options: Map::new(),
            labels: Some(vec!["a".into(), "b".into()]),
            training: None,
        }
    }

    #[test]
    fn heads_round_trip_and_leave_the_backbone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let t = |v: f32| HostTensor::new(vec![2], vec![v, -v]);
        let backbone = BTreeMap::from([("conv_1.block.conv.weight".to_string(), t(1.0))]);
        let heads = vec![
            StoredHead {
                entry: entry("objects", "ssd"),
                tensors: BTreeMap::from([("ssd_heads.0.w".to_string(), t(2.0))]),
            },
            StoredHead {
                entry: entry("scene", "deeplabv3"),
                tensors: BTreeMap::from([("aspp.w".to_string(), t(3.0))]),
            },
        ];
        write_multihead(&path, &meta(), &backbone, &heads).unwrap();
        let mut file = TensorFile::read(&path).unwrap();
        assert_eq!(WeightsMetadata::read(&path).unwrap(), Some(meta()));
        let got = split_heads(&mut file).unwrap().unwrap();
        assert_eq!(got, heads);
        assert_eq!(file.tensors, backbone);
    }

    #[test]
    fn a_head_tensor_of_an_unlisted_head_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let heads = vec![StoredHead {
            entry: entry("objects", "ssd"),
            tensors: BTreeMap::from([("w".to_string(), HostTensor::new(vec![1], vec![1.0]))]),
        }];
        write_multihead(&path, &meta(), &BTreeMap::new(), &heads).unwrap();
        let mut file = TensorFile::read(&path).unwrap();
        file.tensors
            .insert("heads.other.w".into(), HostTensor::new(vec![1], vec![1.0]));
        let err = split_heads(&mut file).unwrap_err().to_string();
        assert!(
            err.contains("heads.other.w") && err.contains("'other'"),
            "{err}"
        );
        let mut plain = TensorFile::read(&path).unwrap();
        plain.metadata.remove(HEADS_METADATA_KEY);
        assert!(split_heads(&mut plain).unwrap().is_none());
    }
}
