//! Sorted directory listings and text reads shared by layout detection and the readers.

use std::path::{Path, PathBuf};

use crate::data::error::{DataError, Result};
use crate::data::io::is_supported;

pub(super) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

pub(super) fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

pub(super) fn subdirs(dir: &Path) -> Vec<PathBuf> {
    sorted_entries(dir)
        .into_iter()
        .filter(|p| p.is_dir() && !is_hidden(p))
        .collect()
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

pub(super) fn h5_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    sorted_entries(dir)
        .into_iter()
        .filter(|p| {
            p.is_file()
                && p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(prefix) && n.ends_with(".h5")
                })
        })
        .collect()
}

/// Supported files under `dir`, recursively, sorted.
pub(super) fn cloud_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    // a symlink loop must not recurse forever
    if depth > 16 {
        return;
    }
    for p in sorted_entries(dir) {
        if is_hidden(&p) {
            continue;
        }
        if p.is_dir() {
            cloud_files(&p, out, depth + 1);
        } else if is_supported(&p) {
            out.push(p);
        }
    }
}
