//! Classification datasets: ImageFolder trees and `path,label` CSV files.
//!
//! An ImageFolder root holds one folder a class; the classes are the folder names in sorted
//! order, their indices the positions in that order, as torchvision's and timm's
//! `ImageFolder` number them; the images are found at any depth below, in sorted order.

use std::path::{Path, PathBuf};

use crate::mask_folder::IMAGE_EXTENSIONS;
use crate::{DataError, DatasetReport, Result};

/// Report reason: files of an ImageFolder tree that are not images.
pub const NOT_AN_IMAGE: &str = "files that are not images skipped";
/// Report reason: CSV rows whose image file does not exist.
pub const CSV_MISSING: &str = "rows whose image is missing skipped";

/// One image and its class index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassificationSample {
    /// The image file.
    pub path: PathBuf,
    /// The class index into [`ClassificationDataset::classes`].
    pub label: usize,
}

/// A classification dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassificationDataset {
    /// The class names, by index.
    pub classes: Vec<String>,
    /// The samples.
    pub samples: Vec<ClassificationSample>,
    /// What was skipped.
    pub report: DatasetReport,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The entries of `dir`, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = std::fs::read_dir(dir)
        .map_err(|e| DataError::read(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| DataError::read(dir, e)))
        .collect::<Result<Vec<_>>>()?;
    out.sort();
    Ok(out)
}

/// Appends the images at any depth below `dir`, in sorted order, to `out`.
fn walk(
    dir: &Path,
    label: usize,
    out: &mut Vec<ClassificationSample>,
    report: &mut DatasetReport,
) -> Result<()> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            walk(&path, label, out, report)?;
        } else if is_image(&path) {
            out.push(ClassificationSample { path, label });
        } else {
            report.add(NOT_AN_IMAGE, path.display());
        }
    }
    Ok(())
}

impl ClassificationDataset {
    /// Reads an ImageFolder tree: a folder a class below `root`.
    pub fn image_folder(root: &Path) -> Result<Self> {
        let mut classes = Vec::new();
        let mut samples = Vec::new();
        let mut report = DatasetReport::default();
        for path in sorted_entries(root)? {
            if !path.is_dir() {
                continue;
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| DataError::invalid(&path, "the class folder's name is not UTF-8"))?
                .to_string();
            walk(&path, classes.len(), &mut samples, &mut report)?;
            classes.push(name);
        }
        if classes.is_empty() {
            return Err(DataError::invalid(
                root,
                "no class folders: an ImageFolder root holds one folder a class",
            ));
        }
        if samples.is_empty() {
            return Err(DataError::invalid(root, "the class folders hold no images"));
        }
        Ok(Self {
            classes,
            samples,
            report,
        })
    }

    /// Reads a CSV file of `path,label` rows (an optional first row `path,label` is a header).
    /// Paths are relative to the CSV file's folder unless absolute. A label is a class index,
    /// or a class name of `classes` when given; without `classes`, the labels must be indices
    /// and the classes are named by their index, as many as the largest index needs.
    pub fn csv(path: &Path, classes: Option<&[String]>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::read(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut samples = Vec::new();
        let mut report = DatasetReport::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (i == 0 && line.eq_ignore_ascii_case("path,label")) {
                continue;
            }
            let at = |m: String| DataError::invalid(path, format!("line {}: {m}", i + 1));
            let Some((file, label)) = line.rsplit_once(',') else {
                return Err(at(format!("expected `path,label`, found {line:?}")));
            };
            let label = label.trim();
            let index = match (label.parse::<usize>(), classes) {
                (Ok(n), Some(c)) if n >= c.len() => {
                    return Err(at(format!("label {n} but there are {} classes", c.len())));
                }
                (Ok(n), _) => n,
                (Err(_), Some(c)) => c.iter().position(|name| name == label).ok_or_else(|| {
                    at(format!(
                        "label {label:?} is not one of the {} classes",
                        c.len()
                    ))
                })?,
                (Err(_), None) => {
                    return Err(at(format!(
                        "label {label:?} is not a class index (give the class names to use names)"
                    )));
                }
            };
            let file = base.join(file.trim());
            if !file.is_file() {
                report.add(CSV_MISSING, format!("line {}: {}", i + 1, file.display()));
                continue;
            }
            samples.push(ClassificationSample {
                path: file,
                label: index,
            });
        }
        if samples.is_empty() {
            return Err(DataError::invalid(path, "no rows with an existing image"));
        }
        let classes = match classes {
            Some(c) => c.to_vec(),
            None => {
                let n = samples.iter().map(|s| s.label).max().unwrap_or(0) + 1;
                (0..n).map(|i| i.to_string()).collect()
            }
        };
        Ok(Self {
            classes,
            samples,
            report,
        })
    }
}
