//! Class-per-folder data sets: a `labels.csv`, `train/` and `test/` folders of class
//! folders, or class folders split 80/20.

use std::path::Path;

use super::labels_csv::{csv_dataset, read_labels_csv};
use super::listing::{cloud_files, subdirs};
use super::{Dataset, file_sample, split_80_20};
use crate::data::error::{DataError, Result};

pub(super) fn open_folder(root: &Path) -> Result<Dataset> {
    let name = format!(
        "folder {}",
        root.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    );
    let csv = root.join("labels.csv");
    let (class_names, train, test) = if csv.is_file() {
        let rows = read_labels_csv(&csv)?;
        csv_dataset(&csv, rows, None)?
    } else if root.join("train").is_dir() && root.join("test").is_dir() {
        let mut names: Vec<String> = [root.join("train"), root.join("test")]
            .iter()
            .flat_map(|d| subdirs(d))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .collect();
        names.sort();
        names.dedup();
        let collect = |split: &str| {
            let mut out = Vec::new();
            for (label, class) in names.iter().enumerate() {
                let mut files = Vec::new();
                cloud_files(&root.join(split).join(class), &mut files, 0);
                out.extend(files.into_iter().map(|f| file_sample(f, label)));
            }
            out
        };
        let (train, test) = (collect("train"), collect("test"));
        (names, train, test)
    } else {
        let mut names = Vec::new();
        let mut train = Vec::new();
        let mut test = Vec::new();
        for dir in subdirs(root) {
            let mut files = Vec::new();
            cloud_files(&dir, &mut files, 0);
            if files.is_empty() {
                continue;
            }
            let label = names.len();
            names.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
            );
            split_80_20(files, label, &mut train, &mut test);
        }
        (names, train, test)
    };
    if train.is_empty() && test.is_empty() {
        return Err(DataError::format(
            root,
            "no point files found: expected labels.csv, or class subfolders of supported files",
        ));
    }
    Ok(Dataset {
        name,
        class_names,
        train,
        test,
        category_parts: None,
        num_parts: None,
        normalize: true,
    })
}
