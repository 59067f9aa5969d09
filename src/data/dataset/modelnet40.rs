//! ModelNet40 in the official layout (`modelnet40_normal_resampled/`): the shape-name and
//! split lists with one txt file per shape, or the official loader's `.dat` FPS caches
//! when both exist; a `labels.csv` beside it takes precedence.

use std::path::{Path, PathBuf};

use super::labels_csv::{csv_dataset, read_labels_csv};
use super::listing::read_text;
use super::{Dataset, Sample, file_sample, memory_sample};
use crate::data::PointCloud;
use crate::data::error::{DataError, Result};
use crate::data::pickle::{DtypeKind, Value, read_pickle};

pub(super) fn open_modelnet40(root: &Path) -> Result<Dataset> {
    open_modelnet40_splits(root, true)
}

/// `with_train: false` leaves the training cache unread (the txt path only lists files).
pub(super) fn open_modelnet40_splits(root: &Path, with_train: bool) -> Result<Dataset> {
    let base = if root.join("modelnet40_normal_resampled").is_dir() {
        root.join("modelnet40_normal_resampled")
    } else {
        root.to_path_buf()
    };
    let names_file = base.join("modelnet40_shape_names.txt");
    let names: Option<Vec<String>> = if names_file.is_file() {
        Some(read_shape_names(&names_file)?)
    } else {
        None
    };
    let csv = [root.join("labels.csv"), base.join("labels.csv")]
        .into_iter()
        .find(|p| p.is_file());
    let caches = [
        modelnet40_cache(&base, "train"),
        modelnet40_cache(&base, "test"),
    ];
    let (class_names, train, test) = if let Some(csv) = csv {
        let rows = read_labels_csv(&csv)?;
        csv_dataset(&csv, rows, names)?
    } else if let (Some(names), true) = (&names, caches.iter().all(|c| c.is_file())) {
        // the official loader reads these instead of the txt files once they exist
        let [train_dat, test_dat] = &caches;
        let listed = |split: &str| listed_shapes(&base.join(format!("modelnet40_{split}.txt")));
        let train = if with_train {
            read_modelnet40_cache(train_dat, names.len(), listed("train")?)?
        } else {
            Vec::new()
        };
        let test = read_modelnet40_cache(test_dat, names.len(), listed("test")?)?;
        (names.clone(), train, test)
    } else {
        let names = names.ok_or_else(|| {
            DataError::format(&names_file, "missing (and no labels.csv beside it)")
        })?;
        let list = |split: &str| -> Result<Vec<Sample>> {
            let file = base.join(format!("modelnet40_{split}.txt"));
            let mut out = Vec::new();
            for (i, line) in read_text(&file)?.lines().enumerate() {
                let shape = line.trim();
                if shape.is_empty() {
                    continue;
                }
                let class = shape.rsplit_once('_').map(|(c, _)| c).unwrap_or("");
                let label = names.iter().position(|n| n == class).ok_or_else(|| {
                    DataError::format(&file, format!("line {}: unknown class in `{shape}`", i + 1))
                })?;
                let txt = base.join(class).join(format!("{shape}.txt"));
                let gz = base.join(class).join(format!("{shape}.txt.gz"));
                let path = if !txt.exists() && gz.exists() {
                    gz
                } else {
                    txt
                };
                out.push(file_sample(path, label));
            }
            Ok(out)
        };
        (names.clone(), list("train")?, list("test")?)
    };
    if train.is_empty() && test.is_empty() {
        return Err(DataError::format(root, "no ModelNet40 shapes listed"));
    }
    Ok(Dataset {
        name: "ModelNet40".into(),
        class_names,
        train,
        test,
        category_parts: None,
        num_parts: None,
        normalize: true,
    })
}

/// The point count in the official cache names (`N_POINTS` of the ModelNet40 configs).
pub const MODELNET40_CACHE_POINTS: usize = 8192;

/// `modelnet40_{split}_8192pts_fps.dat`: the official loader's FPS cache of one split.
pub fn modelnet40_cache(base: &Path, split: &str) -> PathBuf {
    base.join(format!(
        "modelnet40_{split}_{MODELNET40_CACHE_POINTS}pts_fps.dat"
    ))
}

/// The class names of `modelnet40_shape_names.txt`, one a line, in label order.
pub(in crate::data) fn read_shape_names(file: &Path) -> Result<Vec<String>> {
    Ok(read_text(file)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Number of non-empty lines of a shape list, `None` when the list is absent (the caches
/// are usable on their own).
fn listed_shapes(file: &Path) -> Result<Option<usize>> {
    if !file.is_file() {
        return Ok(None);
    }
    let n = read_text(file)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    Ok(Some(n))
}

/// Reads an official ModelNet40 cache, `pickle.dump([list_of_points, list_of_labels])`
/// with float32 `(N, 6)` points (xyz + normals) and int32 `(1,)` labels. Only xyz is kept,
/// as the official loader does with `USE_NORMALS: False`; `Dataset::load` normalises.
/// `listed`: the shape count of the split's txt list, which the cache must match (the
/// official `__len__` is the list's length, so a shorter cache fails there too).
fn read_modelnet40_cache(
    file: &Path,
    num_classes: usize,
    listed: Option<usize>,
) -> Result<Vec<Sample>> {
    let value = read_pickle(file)?;
    let bad = |m: String| DataError::format(file, m);
    let top = value.as_seq().ok_or_else(|| {
        bad(format!(
            "expected [list_of_points, list_of_labels], found a {}",
            value.type_name()
        ))
    })?;
    let [points, labels] = top else {
        return Err(bad(format!(
            "expected [list_of_points, list_of_labels], found a sequence of {} items",
            top.len()
        )));
    };
    let (Some(points), Some(labels)) = (points.as_seq(), labels.as_seq()) else {
        return Err(bad(format!(
            "expected two lists, found a {} and a {}",
            points.type_name(),
            labels.type_name()
        )));
    };
    if points.len() != labels.len() {
        return Err(bad(format!(
            "{} point clouds but {} labels",
            points.len(),
            labels.len()
        )));
    }
    if let Some(n) = listed
        && n != points.len()
    {
        return Err(bad(format!(
            "{} shapes, but the split's shape list names {n}",
            points.len()
        )));
    }
    let mut out = Vec::with_capacity(points.len());
    for (i, (p, l)) in points.iter().zip(labels).enumerate() {
        let positions = pickled_xyz(p, &format!("shape {i}"), &bad)?;
        let raw = l.as_int().ok_or_else(|| {
            bad(format!(
                "shape {i}: expected an integer label, found a {}",
                l.type_name()
            ))
        })?;
        let label = usize::try_from(raw)
            .ok()
            .filter(|&c| c < num_classes)
            .ok_or_else(|| {
                bad(format!(
                    "shape {i}: label {raw} is out of range for the {num_classes} classes \
                     of modelnet40_shape_names.txt"
                ))
            })?;
        let mut cloud = PointCloud::from_positions(positions);
        cloud.class_label = Some(label);
        cloud.source = Some(file.to_path_buf());
        out.push(memory_sample(cloud));
    }
    Ok(out)
}

/// The xyz columns of one pickled points array as the official caches store it, and the
/// few-shot folds made from them: float32 `(N, 6)`, xyz + normals. Only xyz is kept, as
/// the official loaders do with `USE_NORMALS: False`. `what` names the shape in errors.
pub(in crate::data) fn pickled_xyz(
    v: &Value,
    what: &str,
    bad: &dyn Fn(String) -> DataError,
) -> Result<Vec<[f32; 3]>> {
    let a = v.as_array().ok_or_else(|| {
        bad(format!(
            "{what}: expected a NumPy array of points, found a {}",
            v.type_name()
        ))
    })?;
    if a.dtype.kind != DtypeKind::Float || a.shape.len() != 2 || a.shape[1] < 3 {
        return Err(bad(format!(
            "{what}: points are a {:?} array of {}, expected (N, 6) float32",
            a.shape,
            a.dtype.name()
        )));
    }
    let cols = a.shape[1];
    let positions: Vec<[f32; 3]> = a
        .to_f32_vec()
        .chunks_exact(cols)
        .map(|r| [r[0], r[1], r[2]])
        .collect();
    if positions.is_empty() {
        return Err(bad(format!("{what}: no points")));
    }
    if positions.iter().flatten().any(|v| !v.is_finite()) {
        return Err(bad(format!("{what}: a coordinate is not finite")));
    }
    Ok(positions)
}
