//! Writing files so that no reader ever sees half of one.
//!
//! Every output goes through [`PartialFile`]: it is written under a temporary name
//! next to its target (`tempfile`'s named temporary file, so the name is unique and
//! the file is removed if the write does not finish) and renamed over the target
//! when complete (`persist`), which leaves any file already there intact until then.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoError, Result};

/// A file being written under a temporary name beside its target: hidden, with the
/// target's extension (OpenCV's video writer picks the container by it). It gets
/// its final name with [`PartialFile::finish`], and is deleted if dropped before.
#[derive(Debug)]
pub struct PartialFile {
    temp: tempfile::TempPath,
    target: PathBuf,
}

impl PartialFile {
    /// A new, empty temporary file for `target`, in `target`'s folder.
    pub fn new(target: &Path) -> Result<Self> {
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .ok_or_else(|| IoError::format(target, "not a file path"))?
            .to_string_lossy();
        let suffix = target
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let prefix = format!(".{name}.partial-");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(&suffix);
        // The permissions of any new file (0o666 less the umask), not tempfile's
        // owner-only 0o600: the output is an ordinary file once it is complete.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let temp = builder
            .tempfile_in(dir)
            .map_err(|e| IoError::io(target, e))?
            .into_temp_path();
        Ok(Self {
            temp,
            target: target.to_path_buf(),
        })
    }

    /// Where the data goes until it is complete.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// The final name.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Renames the complete file over the target.
    pub fn finish(self) -> Result<PathBuf> {
        self.temp
            .persist(&self.target)
            .map_err(|e| IoError::io(&self.target, e.error))?;
        Ok(self.target)
    }
}

/// Writes bytes to `path` atomically through a [`PartialFile`]: written, flushed to
/// the disk and renamed over `path`, so no reader ever sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = PartialFile::new(path)?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(partial.path())
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    written.map_err(|e| IoError::io(path, e))?;
    partial.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_appear_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("clip.mp4");
        std::fs::write(&target, b"old").unwrap();
        let partial = PartialFile::new(&target).unwrap();
        let name = partial
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with(".clip.mp4.partial-") && name.ends_with(".mp4"),
            "{name}"
        );
        std::fs::write(partial.path(), b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        partial.finish().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // Dropped before it is finished: nothing is left, the target stays.
        let abandoned = PartialFile::new(&target).unwrap();
        let temp = abandoned.path().to_path_buf();
        drop(abandoned);
        assert!(!temp.exists());
        write_atomic(&target, b"again").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"again");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // The same permissions as a file written plainly.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let plain = dir.path().join("plain");
            std::fs::write(&plain, b"x").unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&target), mode(&plain));
        }
    }
}
