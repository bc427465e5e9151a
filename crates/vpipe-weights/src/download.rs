//! Fetching registry entries into the cache: HTTP(S) with resume of partial
//! downloads (`Range: bytes=N-`), a progress bar, sha256 verification, a read-back
//! of the file as a checkpoint of the entry (see [`crate::readback`]), and an atomic
//! rename to the final name only when both are right.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::cache::{CacheConfig, Recorded, partial_path};
use crate::error::{Result, WeightsError};
use crate::readback::{ReadBackError, read_back};
use crate::registry::{Entry, Registry};

/// The sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| WeightsError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| WeightsError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the weights written as `written` are: an existing file (relative paths
/// taken from `base`), else the cached file of the registry entry of that name,
/// fetched on first use.
pub fn locate(written: &str, base: &Path, config: &CacheConfig) -> Result<PathBuf> {
    let p = Path::new(written);
    let path = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    if path.is_file() {
        return Ok(path);
    }
    match Registry::builtin().get(written) {
        Some(entry) => fetch(entry, config),
        None => Err(WeightsError::NotFound {
            written: written.to_string(),
            looked_at: path,
        }),
    }
}

/// How a cached file was checked. Whichever the variant, the file has also read back
/// as a checkpoint of its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Its sha256 matches the hash pinned in the registry.
    Pinned,
    /// Its sha256 matches the hash recorded on its first download.
    Recorded,
    /// No hash was known: its sha256 has now been recorded.
    FirstUse(String),
}

/// The hash `entry`'s file must have, and where that hash comes from: pinned in the
/// registry, else recorded on the first download, else none.
fn expected_hash(entry: &Entry, config: &CacheConfig) -> Result<Option<(String, &'static str)>> {
    Ok(match &entry.description.sha256 {
        Some(h) => Some((h.clone(), "pinned in the registry")),
        None => config
            .recorded()?
            .get(&entry.name)
            .map(|r| (r.sha256.clone(), "recorded on its first download")),
    })
}

/// The error for `entry`'s file that did not read back. A hash recorded for the entry
/// (necessarily the hash of that very file, which passed the hash check) is dropped,
/// so that a good copy can be recorded in its place.
fn not_a_checkpoint(
    entry: &Entry,
    config: &CacheConfig,
    reason: ReadBackError,
    downloaded: bool,
) -> Result<WeightsError> {
    if entry.description.sha256.is_none() {
        config.forget(&entry.name)?;
    }
    Ok(WeightsError::NotACheckpoint {
        name: entry.name.clone(),
        url: config.url_of(entry),
        path: config.path_of(entry),
        expected: entry.description.checkpoint_layout(),
        reason: Box::new(reason),
        downloaded,
    })
}

/// Checks the cached file of `entry`: its sha256 against the pinned or recorded hash,
/// then that it reads back as a checkpoint of the entry's layout, size, task and class
/// count ([`crate::readback::read_back`]). When no hash is known (a file placed in the
/// cache by hand), its hash is recorded, but only once it has read back. A file that
/// does not read back is left in place, and no hash is kept for it.
pub fn verify_cached(entry: &Entry, config: &CacheConfig) -> Result<Verified> {
    let path = config.path_of(entry);
    let found = sha256_file(&path)?;
    let expected = expected_hash(entry, config)?;
    if let Some((expected, origin)) = &expected
        && *expected != found
    {
        return Err(WeightsError::Checksum {
            name: entry.name.clone(),
            path,
            expected: expected.clone(),
            found,
            origin,
        });
    }
    if let Err(reason) = read_back(&path, &entry.description) {
        return Err(not_a_checkpoint(entry, config, reason, false)?);
    }
    match expected {
        Some(_) if entry.description.sha256.is_some() => Ok(Verified::Pinned),
        Some(_) => Ok(Verified::Recorded),
        None => {
            let size = std::fs::metadata(&path)
                .map_err(|e| WeightsError::io(&path, e))?
                .len();
            config.record(
                &entry.name,
                Recorded {
                    sha256: found.clone(),
                    size,
                    url: entry.url.clone(),
                },
            )?;
            Ok(Verified::FirstUse(found))
        }
    }
}

/// The cached file of `entry`, downloaded on first use and verified on every use
/// ([`verify_cached`]).
///
/// A download goes to `<file>.partial`; an interrupted one is resumed (by the next
/// attempt, or the next call). Once the transfer ends, the partial file must have the
/// pinned (or recorded) sha256, then read back as a checkpoint of the entry; only then
/// does it get its final name and, unpinned, its hash recorded. A partial file that
/// fails either check is deleted, so the next call downloads it afresh.
pub fn fetch(entry: &Entry, config: &CacheConfig) -> Result<PathBuf> {
    let path = config.path_of(entry);
    if path.is_file() {
        verify_cached(entry, config)?;
        return Ok(path);
    }
    let url = config.url_of(entry);
    if config.offline {
        return Err(WeightsError::Unavailable {
            name: entry.name.clone(),
            url,
            path,
            reason: "offline (VPIPE_OFFLINE is set)".into(),
        });
    }
    let dir = path.parent().unwrap_or(&config.dir);
    std::fs::create_dir_all(dir).map_err(|e| WeightsError::io(dir, e))?;
    let partial = partial_path(&path);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(None)
        .build()
        .into();
    let bar = progress_bar(config.progress, &entry.name);
    let mut last_failure = String::new();
    let mut done = false;
    for attempt in 1..=config.attempts.max(1) {
        match download_once(&agent, &url, &partial, &bar) {
            Ok(()) => {
                done = true;
                break;
            }
            Err(Failure::Status(status)) => {
                bar.finish_and_clear();
                return Err(WeightsError::Http {
                    name: entry.name.clone(),
                    url,
                    status,
                    path,
                });
            }
            Err(Failure::Local(e)) => {
                bar.finish_and_clear();
                return Err(e);
            }
            Err(Failure::Transfer(cause)) => {
                tracing::warn!(name = %entry.name, attempt, %cause, "download interrupted");
                last_failure = cause;
            }
        }
    }
    bar.finish_and_clear();
    if !done {
        let got = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        return Err(WeightsError::Unavailable {
            name: entry.name.clone(),
            url,
            path,
            reason: format!(
                "the download failed ({last_failure}; {got} bytes kept in the .partial file, \
                 which the next fetch resumes)"
            ),
        });
    }
    let found = sha256_file(&partial)?;
    let size = std::fs::metadata(&partial)
        .map_err(|e| WeightsError::io(&partial, e))?
        .len();
    if let Some((expected, origin)) = expected_hash(entry, config)?
        && expected != found
    {
        let _ = std::fs::remove_file(&partial);
        return Err(WeightsError::Checksum {
            name: entry.name.clone(),
            path,
            expected,
            found,
            origin,
        });
    }
    if let Err(reason) = read_back(&partial, &entry.description) {
        let _ = std::fs::remove_file(&partial);
        return Err(not_a_checkpoint(entry, config, reason, true)?);
    }
    std::fs::rename(&partial, &path).map_err(|e| WeightsError::io(&path, e))?;
    if entry.description.sha256.is_none() {
        config.record(
            &entry.name,
            Recorded {
                sha256: found,
                size,
                url: entry.url.clone(),
            },
        )?;
    }
    tracing::info!(name = %entry.name, path = %path.display(), size, "downloaded");
    Ok(path)
}

/// Why one download attempt stopped.
enum Failure {
    /// The server answered with this error status: retrying will not help.
    Status(u16),
    /// The connection failed or broke off: the next attempt resumes.
    Transfer(String),
    /// The partial file could not be written.
    Local(WeightsError),
}

/// One attempt: resumes `partial` from its current length when the server honours
/// the range, else starts over.
fn download_once(
    agent: &ureq::Agent,
    url: &str,
    partial: &Path,
    bar: &ProgressBar,
) -> std::result::Result<(), Failure> {
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request
        .call()
        .map_err(|e| Failure::Transfer(e.to_string()))?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let length: Option<u64> = header("content-length").and_then(|v| v.parse().ok());
    let (mut file, start) = match status {
        206 if have > 0 => {
            // "bytes START-END/TOTAL": the server must resume where we are.
            let start = header("content-range")
                .and_then(|r| r.strip_prefix("bytes ").map(str::to_string))
                .and_then(|r| r.split('-').next().and_then(|s| s.parse::<u64>().ok()));
            if start != Some(have) {
                let _ = std::fs::remove_file(partial);
                return Err(Failure::Transfer(format!(
                    "the server resumed at {start:?} instead of byte {have}; starting over"
                )));
            }
            let f = OpenOptions::new()
                .append(true)
                .open(partial)
                .map_err(|e| Failure::Local(WeightsError::io(partial, e)))?;
            (f, have)
        }
        200 => {
            let f =
                File::create(partial).map_err(|e| Failure::Local(WeightsError::io(partial, e)))?;
            (f, 0)
        }
        416 if have > 0 => {
            // The partial file is not a prefix the server can continue.
            let _ = std::fs::remove_file(partial);
            return Err(Failure::Transfer(
                "the server cannot resume the partial file; starting over".into(),
            ));
        }
        s if s >= 500 => return Err(Failure::Transfer(format!("HTTP {s}"))),
        s => return Err(Failure::Status(s)),
    };
    let total = length.map(|l| start + l);
    if let Some(t) = total {
        bar.set_length(t);
    }
    bar.set_position(start);
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut written = start;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = file.flush();
                return Err(Failure::Transfer(format!(
                    "connection lost after {written} bytes: {e}"
                )));
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| Failure::Local(WeightsError::io(partial, e)))?;
        written += n as u64;
        bar.set_position(written);
    }
    file.sync_all()
        .map_err(|e| Failure::Local(WeightsError::io(partial, e)))?;
    match total {
        Some(t) if written < t => Err(Failure::Transfer(format!(
            "connection closed after {written} of {t} bytes"
        ))),
        _ => Ok(()),
    }
}

fn progress_bar(wanted: bool, name: &str) -> ProgressBar {
    let target = if wanted && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_string());
    bar
}
