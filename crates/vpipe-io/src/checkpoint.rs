//! Reading checkpoint files into host tensors.
//!
//! Supported containers, told apart by their first bytes rather than the file name:
//! - safetensors (`.safetensors`);
//! - PyTorch zip archives written by `torch.save` (`.pt`, `.pth`, Hugging Face
//!   `pytorch_model.bin`), and legacy (pre-1.6) PyTorch pickles.
//!
//! Both are read with burn's store (`burn::store`). PyTorch pickles are parsed by a
//! restricted reader that rebuilds tensors and dicts only: nothing in the file is
//! ever executed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::store::{ModuleStore, PytorchStore};
use burn::tensor::{DType, TensorData};

use vpipe_core::HostTensor;

use crate::error::{IoError, Result};

/// The container format of a checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// A safetensors file.
    Safetensors,
    /// A PyTorch `torch.save` file (zip archive or legacy pickle).
    Pytorch,
}

impl std::fmt::Display for FileFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileFormat::Safetensors => "safetensors",
            FileFormat::Pytorch => "PyTorch",
        })
    }
}

/// All float tensors of one checkpoint file, by name.
#[derive(Debug, Clone)]
pub struct TensorFile {
    /// The file they were read from.
    pub path: PathBuf,
    /// Its container format.
    pub format: FileFormat,
    /// The float tensors by name. Integer bookkeeping tensors such as BatchNorm's
    /// `num_batches_tracked` are left out.
    pub tensors: BTreeMap<String, HostTensor>,
    /// The string metadata of a safetensors file (its `__metadata__` header entry);
    /// empty for PyTorch files. vpipe's own weights format keeps its description here.
    pub metadata: BTreeMap<String, String>,
}

/// Detects the container format from the first bytes of a file.
pub fn sniff_format(path: &Path) -> Result<FileFormat> {
    use std::io::Read;
    let mut head = [0u8; 9];
    let mut f = std::fs::File::open(path).map_err(|e| IoError::io(path, e))?;
    let len = f.metadata().map_err(|e| IoError::io(path, e))?.len();
    let n = f.read(&mut head).map_err(|e| IoError::io(path, e))?;
    if n == 0 {
        return Err(IoError::format(path, "the file is empty"));
    }
    if n >= 4 && &head[..4] == b"PK\x03\x04" {
        return Ok(FileFormat::Pytorch);
    }
    if head[0] == 0x80 && n >= 2 && (2..=5).contains(&head[1]) {
        return Ok(FileFormat::Pytorch);
    }
    if n == 9 && head[8] == b'{' {
        let header_len = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        // Saturating: the length field is the file's word, up to u64::MAX.
        let needed = header_len.saturating_add(8);
        if needed > len {
            return Err(IoError::format(
                path,
                format!(
                    "truncated safetensors file: its header alone needs {needed} bytes, the file has {len}"
                ),
            ));
        }
        return Ok(FileFormat::Safetensors);
    }
    Err(IoError::format(
        path,
        "not a checkpoint: expected a safetensors file or a PyTorch torch.save file (.pt, .pth, .bin)",
    ))
}

impl TensorFile {
    /// Reads every float tensor of a checkpoint file.
    pub fn read(path: &Path) -> Result<Self> {
        let format = sniff_format(path)?;
        let metadata = match format {
            FileFormat::Safetensors => safetensors_metadata(path)?,
            FileFormat::Pytorch => BTreeMap::new(),
        };
        let raw: Vec<(String, TensorData)> = match format {
            FileFormat::Safetensors => {
                // Read directly: a safetensors file is a header and raw little-endian
                // arrays, which need no more than a copy (burn's store is ~10x slower).
                let tensors = read_safetensors(path)?;
                if tensors.is_empty() {
                    return Err(IoError::format(
                        path,
                        "the checkpoint holds no float tensors",
                    ));
                }
                return Ok(Self {
                    path: path.to_path_buf(),
                    format,
                    tensors,
                    metadata,
                });
            }
            FileFormat::Pytorch => {
                let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
                collect(&mut store, path)?
            }
        };
        let mut tensors = BTreeMap::new();
        for (name, data) in raw {
            let dtype = data.dtype();
            if !dtype.is_float() {
                continue;
            }
            let shape = data.shape().to_vec();
            let data = if dtype == DType::F32 {
                data.try_into_vec::<f32>()
            } else {
                data.convert::<f32>().try_into_vec::<f32>()
            }
            .map_err(|e| IoError::format(path, format!("tensor '{name}': {e:?}")))?;
            tensors.insert(name, HostTensor::new(shape, data));
        }
        if tensors.is_empty() {
            return Err(IoError::format(
                path,
                "the checkpoint holds no float tensors",
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            format,
            tensors,
            metadata,
        })
    }
}

/// Every float tensor of a safetensors file, converted to `f32`.
fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    use safetensors::Dtype;
    let bytes = std::fs::read(path).map_err(|e| IoError::io(path, e))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| IoError::format(path, format!("cannot read the checkpoint: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in file.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()) as f32)
                .collect(),
            _ => continue,
        };
        tensors.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok(tensors)
}

/// The `__metadata__` entry of a safetensors file's header (string keys and values),
/// read without loading any tensor.
pub fn safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| IoError::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| IoError::io(path, e))?;
    let len = u64::from_le_bytes(len);
    let file_len = f.metadata().map_err(|e| IoError::io(path, e))?.len();
    if len.saturating_add(8) > file_len {
        return Err(IoError::format(path, "truncated safetensors header"));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| IoError::io(path, e))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| IoError::format(path, format!("safetensors header is not JSON: {e}")))?;
    Ok(header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

fn collect<S: ModuleStore>(store: &mut S, path: &Path) -> Result<Vec<(String, TensorData)>> {
    let all = store
        .get_all_tensors()
        .map_err(|e| IoError::format(path, format!("cannot read the checkpoint: {e}")))?;
    all.iter()
        .map(|(name, t)| {
            burn::store::bridge::to_data(t)
                .map(|d| (name.clone(), d))
                .map_err(|e| {
                    IoError::format(
                        path,
                        format!("cannot read tensor '{name}' (truncated or corrupt file?): {e:?}"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `checkpoint` fuzz target: a safetensors header length near
    /// `u64::MAX` overflowed the addition that reports the size the header needs.
    #[test]
    fn a_huge_safetensors_header_length_is_refused_without_overflow() {
        let mut bytes = vec![0xFF; 8];
        bytes.push(b'{');
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        let err = sniff_format(file.path()).unwrap_err().to_string();
        assert!(
            err.contains("needs 18446744073709551615 bytes, the file has 9"),
            "{err}"
        );
        assert!(TensorFile::read(file.path()).is_err());
    }
}
