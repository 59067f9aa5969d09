//! ShapeNetPart: the official `synsetoffset2category.txt` + `train_test_split/` JSON lists,
//! or `train/`, `val/`, `test/` folders of `<category>_*.txt` files.

use std::path::{Path, PathBuf};

use super::listing::{read_text, sorted_entries};
use super::shapenetpart_categories::{SHAPENETPART_CATEGORIES, shapenetpart_category};
use super::{Dataset, file_sample};
use crate::data::error::{DataError, Result};
use crate::data::io::is_supported;

/// Files directly inside `train/`, `val/` or `test/` whose name starts with a ShapeNetPart
/// category (`cap_test_00.txt`), with their split and category.
pub(super) fn part_split_files(root: &Path) -> Vec<(PathBuf, bool, usize)> {
    let mut out = Vec::new();
    for (dir, test) in [
        ("train", false),
        ("trainval", false),
        ("val", false),
        ("test", true),
    ] {
        for p in sorted_entries(&root.join(dir)) {
            if !p.is_file() || !is_supported(&p) {
                continue;
            }
            let stem = p
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            let prefix = stem.split(['_', '.', '-']).next().unwrap_or("");
            if let Some(cat) = shapenetpart_category(prefix) {
                out.push((p, test, cat));
            }
        }
    }
    out
}

pub(super) fn open_shapenetpart(root: &Path) -> Result<Dataset> {
    let class_names = SHAPENETPART_CATEGORIES
        .iter()
        .map(|(n, _, _)| n.to_string())
        .collect();
    let category_parts = SHAPENETPART_CATEGORIES
        .iter()
        .map(|(_, _, p)| p.to_vec())
        .collect();
    let mut train = Vec::new();
    let mut test = Vec::new();
    let cat_file = root.join("synsetoffset2category.txt");
    if cat_file.is_file() {
        let mut synsets: Vec<(String, usize)> = Vec::new();
        for (i, line) in read_text(&cat_file)?.lines().enumerate() {
            let mut w = line.split_whitespace();
            let (Some(name), Some(synset)) = (w.next(), w.next()) else {
                continue;
            };
            let cat = shapenetpart_category(name).ok_or_else(|| {
                DataError::format(
                    &cat_file,
                    format!("line {}: unknown category {name}", i + 1),
                )
            })?;
            synsets.push((synset.to_string(), cat));
        }
        for (split, is_test) in [("train", false), ("val", false), ("test", true)] {
            let file = root
                .join("train_test_split")
                .join(format!("shuffled_{split}_file_list.json"));
            let text = read_text(&file)?;
            let list: Vec<String> = serde_json::from_str(&text).map_err(|e| {
                DataError::format(&file, format!("not a JSON list of strings: {e}"))
            })?;
            for entry in list {
                let mut parts = entry.rsplit('/');
                let (Some(id), Some(synset)) = (parts.next(), parts.next()) else {
                    return Err(DataError::format(&file, format!("bad entry `{entry}`")));
                };
                let cat = synsets
                    .iter()
                    .find(|(s, _)| s == synset)
                    .map(|(_, c)| *c)
                    .ok_or_else(|| {
                        DataError::format(&file, format!("unknown synset in `{entry}`"))
                    })?;
                let sample = file_sample(root.join(synset).join(format!("{id}.txt")), cat);
                if is_test {
                    test.push(sample);
                } else {
                    train.push(sample);
                }
            }
        }
    } else {
        for (p, is_test, cat) in part_split_files(root) {
            if is_test {
                test.push(file_sample(p, cat));
            } else {
                train.push(file_sample(p, cat));
            }
        }
    }
    if train.is_empty() && test.is_empty() {
        return Err(DataError::format(
            root,
            "no ShapeNetPart shapes: expected synsetoffset2category.txt with train_test_split/, \
             or train/ val/ test/ folders of <category>_*.txt files",
        ));
    }
    Ok(Dataset {
        name: "ShapeNetPart".into(),
        class_names,
        train,
        test,
        category_parts: Some(category_parts),
        num_parts: Some(50),
        normalize: true,
    })
}
