//! ModelNet40 few-shot folds in the official layout (Point-MAE's `ModelNetFewShot` loader,
//! `DATASET.md`; dapt-spec.md §7, §8.2): `ModelNetFewshot/{W}way_{K}shot/{fold}.pkl`, each a
//! pickled `{'train': [(points, label, name), ...], 'test': [...]}` made by the official
//! `generate_few_shot_data.py` from the ModelNet40 8192-point caches: `points` a float32
//! (8192, 6) array (xyz + normals), `label` a Python int in `0..W` (the fold's own class
//! order), `name` the shape's ModelNet40 class index (a NumPy int32 scalar).
//!
//! A fold is an ordinary data set to the rest of the crate: its train and test lists become
//! the two splits, xyz only and `pc_normalize`d as the official `__getitem__` does. The
//! classifier head keeps the official size: `cfgs/fewshot.yaml` trains a 40-way head
//! (`cls_dim: 40`) on W-way folds, so the class list is the fold's W classes followed by
//! placeholders up to 40; the placeholder logits see no positive example and are trained
//! down by the cross-entropy like any wrong class.

use std::path::{Path, PathBuf};

use super::PointCloud;
use super::dataset::{Dataset, Sample, memory_sample, pickled_xyz, read_shape_names};
use super::error::{DataError, Result};
use super::pickle::{Value, read_pickle};

/// The head size of the official few-shot config (`cls_dim: 40`, whatever the way count).
pub const FEWSHOT_HEAD_CLASSES: usize = 40;

/// Name of a head class no shape of the fold belongs to.
fn placeholder(i: usize) -> String {
    format!("unused {i}")
}

/// A few-shot setting: W classes ("ways"), K training shapes ("shots") per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FewShotSetting {
    pub way: usize,
    pub shot: usize,
}

impl FewShotSetting {
    /// `5way10shot`, `5way_10shot` (the official folder name) or `5x10`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        let (w, k) = if let Some((w, rest)) = s.split_once("way") {
            (w, rest.trim_start_matches('_').strip_suffix("shot")?)
        } else {
            s.split_once('x')?
        };
        let (way, shot) = (w.trim().parse().ok()?, k.trim().parse().ok()?);
        (way > 0 && shot > 0).then_some(Self { way, shot })
    }

    /// The folder names the setting goes by: the official loader's `{W}way_{K}shot`, then
    /// `DATASET.md`'s `{W}way{K}shot`.
    pub fn dir_names(&self) -> [String; 2] {
        [
            format!("{}way_{}shot", self.way, self.shot),
            format!("{}way{}shot", self.way, self.shot),
        ]
    }
}

impl std::fmt::Display for FewShotSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}way{}shot", self.way, self.shot)
    }
}

/// Whether a folder name is a setting folder (`5way_10shot`, `10way20shot`).
fn is_setting_dir(p: &Path) -> bool {
    p.is_dir()
        && p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| FewShotSetting::parse(n).is_some() && n.contains("way"))
}

/// The `N.pkl` fold files directly in `dir`, by fold number.
fn folds_in(dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter_map(|p| {
                    let stem = p.file_stem()?.to_str()?;
                    let is_pkl = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("pkl"));
                    let n: usize = stem.parse().ok().filter(|_| is_pkl)?;
                    Some((n, p))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Whether `path` is a few-shot root (holding setting folders), a setting folder, or a fold.
pub fn looks_like_fewshot(path: &Path) -> bool {
    if path.is_file() {
        return path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("pkl"));
    }
    if is_setting_dir(path) && !folds_in(path).is_empty() {
        return true;
    }
    std::fs::read_dir(path).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok().map(|e| e.path()))
            .any(|p| is_setting_dir(&p) && !folds_in(&p).is_empty())
    })
}

/// The fold files of `setting` under `root` (a few-shot root, or the setting folder itself),
/// sorted by fold number.
pub fn fold_files(
    root: &Path,
    setting: FewShotSetting,
) -> Result<(PathBuf, Vec<(usize, PathBuf)>)> {
    let names = setting.dir_names();
    let own = root
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| names.iter().any(|d| d.eq_ignore_ascii_case(n)));
    let dir = if own {
        root.to_path_buf()
    } else {
        names
            .iter()
            .map(|n| root.join(n))
            .find(|p| p.is_dir())
            .ok_or_else(|| {
                DataError::format(
                    root,
                    format!(
                        "no {} or {} folder of few-shot folds here",
                        names[0], names[1]
                    ),
                )
            })?
    };
    let folds = folds_in(&dir);
    if folds.is_empty() {
        return Err(DataError::format(
            &dir,
            "no fold files (0.pkl, 1.pkl, ...) here",
        ));
    }
    Ok((dir, folds))
}

/// `modelnet40_shape_names.txt` near a fold file: beside the few-shot root, or in the
/// official `data/ModelNet/modelnet40_normal_resampled/` next to `data/ModelNetFewshot/`.
fn shape_names_near(fold: &Path) -> Option<Vec<String>> {
    let root = fold.parent()?.parent()?;
    let file = "modelnet40_shape_names.txt";
    let up = root.parent();
    let candidates = [
        Some(root.join(file)),
        up.map(|u| u.join("ModelNet/modelnet40_normal_resampled").join(file)),
        up.map(|u| u.join("modelnet40_normal_resampled").join(file)),
    ];
    let path = candidates.into_iter().flatten().find(|p| p.is_file())?;
    read_shape_names(&path).ok()
}

/// One `(points, label, name)` entry: the xyz cloud, the fold label and what names it.
fn entry(
    v: &Value,
    what: &str,
    bad: &dyn Fn(String) -> DataError,
) -> Result<(PointCloud, usize, Option<Value>)> {
    let items = v.as_seq().ok_or_else(|| {
        bad(format!(
            "{what}: expected a (points, label, name) tuple, found a {}",
            v.type_name()
        ))
    })?;
    if items.len() < 2 {
        return Err(bad(format!(
            "{what}: expected (points, label, name), found {} items",
            items.len()
        )));
    }
    let positions = pickled_xyz(&items[0], what, bad)?;
    let raw = items[1].as_int().ok_or_else(|| {
        bad(format!(
            "{what}: expected an integer label, found a {}",
            items[1].type_name()
        ))
    })?;
    // a label beyond a few thousand ways is not a few-shot fold; refusing it also keeps a
    // hostile label from sizing the class list
    let label = usize::try_from(raw)
        .ok()
        .filter(|&l| l < 4096)
        .ok_or_else(|| bad(format!("{what}: label {raw} is not a fold class index")))?;
    Ok((
        PointCloud::from_positions(positions),
        label,
        items.get(2).cloned(),
    ))
}

/// Reads one official few-shot fold as a data set: the fold's `train` and `test` lists are
/// the two splits (xyz only; [`Dataset::load`] normalises), and the class list is the W
/// classes, named from `modelnet40_shape_names.txt` when it is found near the few-shot root
/// (otherwise by their ModelNet40 index), then placeholders up to the official 40-way head.
pub fn open_fold(file: &Path) -> Result<Dataset> {
    let value = read_pickle(file)?;
    let bad = |m: String| DataError::format(file, m);
    if !matches!(value, Value::Dict(_)) {
        return Err(bad(format!(
            "expected a dict with 'train' and 'test' lists, found a {}",
            value.type_name()
        )));
    }
    let mut splits: Vec<Vec<(PointCloud, usize, Option<Value>)>> = Vec::new();
    for split in ["train", "test"] {
        let list = value
            .get(split)
            .ok_or_else(|| bad(format!("no '{split}' entry")))?;
        let items = list.as_seq().ok_or_else(|| {
            bad(format!(
                "'{split}' should be a list, found a {}",
                list.type_name()
            ))
        })?;
        let mut out = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            out.push(entry(it, &format!("{split}[{i}]"), &bad)?);
        }
        splits.push(out);
    }
    let test = splits.pop().unwrap_or_default();
    let train = splits.pop().unwrap_or_default();
    if train.is_empty() {
        return Err(bad("the 'train' list is empty".into()));
    }
    let ways = train
        .iter()
        .chain(&test)
        .map(|e| e.1 + 1)
        .max()
        .unwrap_or(0);
    // the first entry of each fold label says which class it is
    let mut named: Vec<Option<&Value>> = vec![None; ways];
    for (_, label, name) in train.iter().chain(&test) {
        if named[*label].is_none() {
            named[*label] = name.as_ref();
        }
    }
    let shape_names = shape_names_near(file);
    let mut class_names: Vec<String> = named
        .iter()
        .enumerate()
        .map(|(i, n)| match n {
            Some(v) if v.as_text().is_some() => v.as_text().unwrap_or_default().to_string(),
            Some(v) => match v.as_int() {
                Some(k) => usize::try_from(k)
                    .ok()
                    .and_then(|k| shape_names.as_ref()?.get(k).cloned())
                    .unwrap_or_else(|| format!("modelnet40 class {k}")),
                None => format!("class {i}"),
            },
            None => placeholder(i),
        })
        .collect();
    for i in ways..FEWSHOT_HEAD_CLASSES {
        class_names.push(placeholder(i));
    }
    let to_samples = |entries: Vec<(PointCloud, usize, Option<Value>)>| -> Vec<Sample> {
        entries
            .into_iter()
            .map(|(mut cloud, label, _)| {
                cloud.class_label = Some(label);
                cloud.source = Some(file.to_path_buf());
                memory_sample(cloud)
            })
            .collect()
    };
    let setting = file
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let fold = file
        .file_stem()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok(Dataset {
        name: format!("ModelNet40 few-shot {setting} fold {fold}"),
        class_names,
        train: to_samples(train),
        test: to_samples(test),
        category_parts: None,
        num_parts: None,
        normalize: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_in_every_spelling() {
        let s = FewShotSetting { way: 5, shot: 10 };
        for t in ["5way10shot", "5way_10shot", "5x10", " 5WAY_10SHOT "] {
            assert_eq!(FewShotSetting::parse(t), Some(s), "{t}");
        }
        for t in [
            "",
            "5way",
            "way10shot",
            "0way10shot",
            "5x0",
            "5way10",
            "ax3",
        ] {
            assert_eq!(FewShotSetting::parse(t), None, "{t}");
        }
        assert_eq!(s.to_string(), "5way10shot");
        assert_eq!(
            s.dir_names(),
            ["5way_10shot".to_string(), "5way10shot".into()]
        );
    }
}
