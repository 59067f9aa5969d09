//! ShapeNet-55: `train.txt` / `test.txt` lists of `<taxonomy>-<model>.npy` files in
//! `shapenet_pc/`, the class being the taxonomy id.

use std::path::Path;

use super::listing::read_text;
use super::{Dataset, file_sample};
use crate::data::error::{DataError, Result};

pub(super) fn open_shapenet55(root: &Path) -> Result<Dataset> {
    let lists = if root.join("train.txt").is_file() {
        root.to_path_buf()
    } else {
        root.join("ShapeNet-55")
    };
    let npy_dir = [root.join("shapenet_pc"), lists.join("shapenet_pc")]
        .into_iter()
        .find(|p| p.is_dir())
        .unwrap_or_else(|| root.to_path_buf());
    let mut entries: Vec<(String, String, bool)> = Vec::new();
    for (split, is_test) in [("train", false), ("test", true)] {
        let file = lists.join(format!("{split}.txt"));
        for line in read_text(&file)?.lines() {
            let name = line.trim();
            if name.is_empty() {
                continue;
            }
            let taxonomy = name.split('-').next().unwrap_or("").to_string();
            entries.push((taxonomy, name.to_string(), is_test));
        }
    }
    let mut class_names: Vec<String> = entries.iter().map(|e| e.0.clone()).collect();
    class_names.sort();
    class_names.dedup();
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (taxonomy, name, is_test) in entries {
        let label = class_names.binary_search(&taxonomy).unwrap_or(0);
        let s = file_sample(npy_dir.join(name), label);
        if is_test {
            test.push(s);
        } else {
            train.push(s);
        }
    }
    if train.is_empty() && test.is_empty() {
        return Err(DataError::format(
            &lists,
            "train.txt and test.txt list no shapes",
        ));
    }
    Ok(Dataset {
        name: "ShapeNet-55".into(),
        class_names,
        train,
        test,
        category_parts: None,
        num_parts: None,
        normalize: true,
    })
}
