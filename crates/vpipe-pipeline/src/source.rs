//! Where a run's frames come from: still images (given one by one, as a folder or
//! as a glob), video files, network streams and cameras ([`Input`]), resolved from
//! what the user typed ([`resolve_input`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vpipe_media::VideoInput;

use crate::error::{PipelineError, Result};

/// File extensions read as still images.
pub const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff"];
/// File extensions read as videos.
pub const VIDEO_EXTENSIONS: [&str; 12] = [
    "mp4", "avi", "mkv", "mov", "webm", "m4v", "mpg", "mpeg", "wmv", "flv", "ts", "3gp",
];

/// What a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Still images, in this order.
    Images(Vec<PathBuf>),
    /// A video file, stream or camera.
    Video(VideoInput),
}

fn extension(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Interprets a command-line input: a camera index, a URL, a folder, a glob, a
/// video file or an image file. A folder gives its images (with `recursive`, those
/// of its subfolders too); the videos, other files and subfolders it leaves out are
/// named in a warning.
pub fn resolve_input(arg: &str, recursive: bool) -> Result<Input> {
    let bad = |message: String| PipelineError::Input {
        input: arg.to_string(),
        message,
    };
    if let Ok(index) = arg.parse::<i32>() {
        return Ok(Input::Video(VideoInput::Camera(index)));
    }
    if arg.contains("://") {
        return Ok(Input::Video(VideoInput::Url(arg.to_string())));
    }
    let path = Path::new(arg);
    if path.is_dir() {
        let mut listing = FolderListing::default();
        listing
            .walk(path, recursive)
            .map_err(|e| bad(format!("cannot list the folder: {e}")))?;
        listing.report(path);
        let mut files = listing.images;
        files.sort();
        if files.is_empty() {
            return Err(bad(format!(
                "the folder holds no images ({})",
                IMAGE_EXTENSIONS.join(", ")
            )));
        }
        return Ok(Input::Images(files));
    }
    if path.is_file() {
        return Ok(if VIDEO_EXTENSIONS.contains(&extension(path).as_str()) {
            Input::Video(VideoInput::File(path.to_path_buf()))
        } else {
            Input::Images(vec![path.to_path_buf()])
        });
    }
    if arg.contains(['*', '?', '[', '{']) {
        let files =
            glob_files(arg).map_err(|e| bad(format!("not a valid pattern: {}", e.kind())))?;
        if files.is_empty() {
            return Err(bad("the pattern matches no files".into()));
        }
        return Ok(Input::Images(files));
    }
    Err(bad("no such file or folder".into()))
}

/// What a folder given as input holds: its images (the input), and what is skipped.
#[derive(Debug, Default)]
struct FolderListing {
    images: Vec<PathBuf>,
    videos: Vec<PathBuf>,
    others: Vec<PathBuf>,
    folders: Vec<PathBuf>,
}

impl FolderListing {
    /// Sorts the entries of `dir` (and, when `recursive`, of its subfolders).
    fn walk(&mut self, dir: &Path, recursive: bool) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                if recursive {
                    self.walk(&path, true)?;
                } else {
                    self.folders.push(path);
                }
            } else if IMAGE_EXTENSIONS.contains(&extension(&path).as_str()) {
                self.images.push(path);
            } else if VIDEO_EXTENSIONS.contains(&extension(&path).as_str()) {
                self.videos.push(path);
            } else {
                self.others.push(path);
            }
        }
        Ok(())
    }

    /// Warns about what a run of folder `dir` leaves out.
    fn report(&self, dir: &Path) {
        let some = |paths: &[PathBuf]| some_names(paths.iter().map(|p| p.as_path()));
        let dir = dir.display();
        if !self.videos.is_empty() {
            tracing::warn!(
                "{dir}: skipping {} video file(s) ({}): a folder input runs its images; give each video as --input",
                self.videos.len(),
                some(&self.videos)
            );
        }
        if !self.others.is_empty() {
            tracing::warn!(
                "{dir}: skipping {} file(s) that are not images ({})",
                self.others.len(),
                some(&self.others)
            );
        }
        if !self.folders.is_empty() {
            tracing::warn!(
                "{dir}: not searching {} subfolder(s) ({}); add --recursive to include their images",
                self.folders.len(),
                some(&self.folders)
            );
        }
    }
}

/// The file names of `paths`, sorted: the first three, then `+N more`.
pub(crate) fn some_names<'a>(paths: impl Iterator<Item = &'a Path>) -> String {
    let mut names: Vec<String> = paths
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    let more = names.len().saturating_sub(3);
    names.truncate(3);
    if more > 0 {
        names.push(format!("+{more} more"));
    }
    names.join(", ")
}

/// The files `pattern` selects, sorted: `*`, `?` and `[...]` within a path
/// component, `**` across folders and `{a,b}` alternatives (nested or empty ones too),
/// all of globset's syntax. The folder before the first wildcard is searched, as
/// deep as the pattern reaches.
fn glob_files(pattern: &str) -> std::result::Result<Vec<PathBuf>, globset::Error> {
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .empty_alternates(true)
        .build()?
        .compile_matcher();
    let wildcard = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    let (root, rest) = pattern.split_at(pattern[..wildcard].rfind('/').map_or(0, |i| i + 1));
    // Each `/` of the rest (alternatives included) is at most one folder further down.
    let depth = if rest.contains("**") {
        usize::MAX
    } else {
        rest.matches('/').count() + 1
    };
    let mut files = BTreeSet::new();
    let mut folders = vec![(PathBuf::from(root), depth)];
    while let Some((folder, depth)) = folders.pop() {
        let listed = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &folder
        };
        for entry in std::fs::read_dir(listed).into_iter().flatten().flatten() {
            let path = folder.join(entry.file_name());
            if path.is_dir() {
                if depth > 1 {
                    folders.push((path, depth - 1));
                }
            } else if path.is_file() && glob.is_match(&path) {
                files.insert(path);
            }
        }
    }
    Ok(files.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::glob_files;
    use std::path::PathBuf;

    #[test]
    fn globs_select_files_with_brace_alternatives() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for name in [
            "a/1.jpg",
            "a/2.png",
            "a/3.gif",
            "x/1.jpg",
            "y/2.jpg",
            "y/z/2.jpg",
            "p.jpg",
            "p.jpeg",
            "p.png",
            "q",
            "qb",
            "n/{b}.jpg",
        ] {
            std::fs::create_dir_all(d.join(name).parent().unwrap()).unwrap();
            std::fs::write(d.join(name), b"").unwrap();
        }
        let select = |pattern: &str| -> Vec<String> {
            let files = glob_files(&format!("{}/{pattern}", d.display())).unwrap();
            let names = files
                .iter()
                .map(|f| f.strip_prefix(d).unwrap().display().to_string());
            names.collect()
        };
        assert_eq!(select("a/*.{jpg,png}"), ["a/1.jpg", "a/2.png"]);
        assert_eq!(select("{x,y}/{1,2}.jpg"), ["x/1.jpg", "y/2.jpg"]);
        assert_eq!(select("p.{jp{g,eg},png}"), ["p.jpeg", "p.jpg", "p.png"]);
        assert_eq!(select("q{,b}"), ["q", "qb"]);
        // `*` stays within a folder; `**` goes down any number of them; folders are
        // not files.
        assert_eq!(select("*/2.*"), ["a/2.png", "y/2.jpg"]);
        assert_eq!(select("**/2.jpg"), ["y/2.jpg", "y/z/2.jpg"]);
        assert_eq!(select("[ay]"), Vec::<String>::new());
        // A brace group is always an alternation: `\{` is a literal brace.
        assert_eq!(select("n/\\{b\\}.*"), ["n/{b}.jpg"]);
        assert_eq!(select("n/{b}.*"), Vec::<String>::new());
        assert!(glob_files("a{b,c*").is_err());
        // A pattern without a folder before its first wildcard is relative to the
        // working folder (the package's, under cargo test), and its paths stay so.
        assert_eq!(
            glob_files("{src,no-such-folder}/l?b.rs").unwrap(),
            [PathBuf::from("src/lib.rs")]
        );
    }
}
