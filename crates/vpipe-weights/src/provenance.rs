//! Telling random-initialised reference weights from trained ones, so that no one
//! mistakes what they produce for a trained model's output.

use std::path::Path;

use vpipe_io::checkpoint::{FileFormat, safetensors_metadata, sniff_format};

use crate::download::sha256_file;
use crate::error::{Result, WeightsError};
use crate::format::RANDOM_INIT_KEY;
use crate::registry::Registry;

/// What vpipe says about weights that were initialised at random.
pub const RANDOM_INIT_NOTE: &str = "random-initialised reference weights, not a trained model";

/// [`RANDOM_INIT_NOTE`] when the weights file at `path` holds random-initialised
/// weights: a vpipe weights file whose metadata says so, or a file shipped in
/// `weights/` that the registry marks `random_init` (recognised by size and sha256,
/// wherever it lies).
pub fn weights_note(path: &Path) -> Result<Option<&'static str>> {
    if sniff_format(path)? == FileFormat::Safetensors
        && safetensors_metadata(path)?
            .get(RANDOM_INIT_KEY)
            .is_some_and(|v| v == "true")
    {
        return Ok(Some(RANDOM_INIT_NOTE));
    }
    let size = std::fs::metadata(path)
        .map_err(|e| WeightsError::io(path, e))?
        .len();
    let candidates: Vec<&str> = Registry::builtin()
        .shipped
        .iter()
        .filter(|s| s.random_init && s.description.size == Some(size))
        .filter_map(|s| s.description.sha256.as_deref())
        .collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    let found = sha256_file(path)?;
    Ok(candidates
        .contains(&found.as_str())
        .then_some(RANDOM_INIT_NOTE))
}
