//! The local weights cache, the mirror, and the hashes recorded for entries whose
//! hash is not pinned.
//!
//! Layout: `<cache>/<registry name>/<file name of the URL>`, for example
//! `~/.cache/vpipe/weights/cvnets/mobilevit_s/mobilevit_s.pt`; a download in
//! progress is `<file>.partial` next to it; `<cache>/hashes.json` holds the sha256
//! and size recorded on the first download of each unpinned entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, WeightsError};
use crate::registry::Entry;

/// Where the cache is and how files get into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The cache folder.
    pub dir: PathBuf,
    /// A mirror prefix replacing `https://` in every download address
    /// (`VPIPE_WEIGHTS_MIRROR`): `https://host/path` is fetched from
    /// `<mirror>/host/path`.
    pub mirror: Option<String>,
    /// Never use the network (`VPIPE_OFFLINE=1`).
    pub offline: bool,
    /// Draw a progress bar (only ever drawn when stderr is a terminal).
    pub progress: bool,
    /// Download attempts per fetch; each one resumes what the previous one got.
    pub attempts: u32,
}

impl CacheConfig {
    /// The configuration from the environment: `VPIPE_CACHE` (else
    /// `$XDG_CACHE_HOME/vpipe/weights`, else `$HOME/.cache/vpipe/weights`),
    /// `VPIPE_WEIGHTS_MIRROR` and `VPIPE_OFFLINE`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let dir = var("VPIPE_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("vpipe/weights")))
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/vpipe/weights")))
            .unwrap_or_else(|| PathBuf::from(".vpipe-cache/weights"));
        let mirror = var("VPIPE_WEIGHTS_MIRROR").map(|m| m.to_string_lossy().into_owned());
        let offline = var("VPIPE_OFFLINE").is_some_and(|v| v != "0");
        Self {
            dir,
            mirror,
            offline,
            progress: true,
            attempts: 3,
        }
    }

    /// A configuration using `dir`, no mirror, online, without a progress bar.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            mirror: None,
            offline: false,
            progress: false,
            attempts: 3,
        }
    }

    /// Where `entry` lives in the cache.
    pub fn path_of(&self, entry: &Entry) -> PathBuf {
        self.dir.join(&entry.name).join(entry.file_name())
    }

    /// The address `entry` is downloaded from (its URL, or the mirror's copy).
    pub fn url_of(&self, entry: &Entry) -> String {
        match &self.mirror {
            Some(m) => mirror_url(m, &entry.url),
            None => entry.url.clone(),
        }
    }

    fn hashes_path(&self) -> PathBuf {
        self.dir.join("hashes.json")
    }

    /// The hashes recorded so far.
    pub fn recorded(&self) -> Result<BTreeMap<String, Recorded>> {
        let path = self.hashes_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: HashesFile =
                    serde_json::from_slice(&bytes).map_err(|e| WeightsError::Format {
                        path: path.clone(),
                        message: format!("not a valid hashes file ({e}); delete it to start over"),
                    })?;
                Ok(file.files)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(WeightsError::io(path, e)),
        }
    }

    /// Records the hash and size of `name`'s file.
    pub fn record(&self, name: &str, recorded: Recorded) -> Result<()> {
        let mut files = self.recorded()?;
        files.insert(name.to_string(), recorded);
        self.write_recorded(files)
    }

    /// Drops the hash recorded for `name`, if any (one recorded for a file that turned
    /// out not to be a usable checkpoint, so that a good download can be recorded).
    pub fn forget(&self, name: &str) -> Result<()> {
        let mut files = self.recorded()?;
        if files.remove(name).is_some() {
            self.write_recorded(files)?;
        }
        Ok(())
    }

    fn write_recorded(&self, files: BTreeMap<String, Recorded>) -> Result<()> {
        let path = self.hashes_path();
        let text = serde_json::to_vec_pretty(&HashesFile { version: 1, files }).map_err(|e| {
            WeightsError::Format {
                path: path.clone(),
                message: e.to_string(),
            }
        })?;
        std::fs::create_dir_all(&self.dir).map_err(|e| WeightsError::io(&self.dir, e))?;
        vpipe_io::output::write_atomic(&path, &text)?;
        Ok(())
    }
}

/// `url` fetched through `mirror`: the scheme is dropped and the rest appended to
/// the mirror prefix, so `https://huggingface.co/a/b` through `http://m:8080/w`
/// becomes `http://m:8080/w/huggingface.co/a/b`.
pub fn mirror_url(mirror: &str, url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    format!("{}/{rest}", mirror.trim_end_matches('/'))
}

/// The hash and size recorded for an unpinned entry on its first download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// sha256, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Where it was downloaded from.
    pub url: String,
}

#[derive(Serialize, Deserialize)]
struct HashesFile {
    version: u32,
    files: BTreeMap<String, Recorded>,
}

/// The file name a download in progress is kept under: a fixed name beside the
/// target rather than a [`vpipe_io::output::PartialFile`], because the next fetch
/// resumes it (HTTP `Range`) from where the last one stopped.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_keeps_host_and_path() {
        assert_eq!(
            mirror_url(
                "http://mirror.local:8080/weights/",
                "https://docs-assets.developer.apple.com/ml-research/models/cvnets/classification/mobilevit_s.pt"
            ),
            "http://mirror.local:8080/weights/docs-assets.developer.apple.com/ml-research/models/cvnets/classification/mobilevit_s.pt"
        );
        assert_eq!(
            partial_path(Path::new("/c/x/model.safetensors")),
            Path::new("/c/x/model.safetensors.partial")
        );
    }
}
