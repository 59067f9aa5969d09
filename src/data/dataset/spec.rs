//! [`DataSpec`]: which data set to open, as written on the command line or in a config,
//! its parser and `Display`, layout detection for a bare path, and dispatch to the layout
//! readers.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Dataset;
use super::folder::open_folder;
use super::listing::{h5_files, subdirs};
use super::modelnet40::{open_modelnet40, open_modelnet40_splits};
use super::scanobjectnn::open_scanobjectnn;
use super::shapenet55::open_shapenet55;
use super::shapenetpart::{open_shapenetpart, part_split_files};
use crate::data::error::{DataError, Result};
use crate::data::fewshot;
use crate::data::synthetic::{Rotation, SyntheticConfig};

/// Which data set to open, as written on the command line or in a config.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DataSpec {
    Synthetic(SyntheticConfig),
    ModelNet40(PathBuf),
    ScanObjectNN(PathBuf),
    ShapeNetPart(PathBuf),
    ShapeNet55(PathBuf),
    Folder(PathBuf),
    /// One official few-shot fold file, `ModelNetFewshot/{W}way_{K}shot/{fold}.pkl`
    /// (a root or setting folder is accepted here and resolved by `dapt train --fewshot`).
    ModelNet40FewShot(PathBuf),
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Synthetic(c) => {
                let d = SyntheticConfig::default();
                if *c == d {
                    write!(f, "synthetic")
                } else {
                    write!(
                        f,
                        "synthetic:seed={},train={},test={},points={}",
                        c.seed, c.train_per_class, c.test_per_class, c.points
                    )?;
                    if c.rotation != d.rotation {
                        write!(f, ",rotate={}", c.rotation.as_str())?;
                    }
                    Ok(())
                }
            }
            Self::ModelNet40(p) => write!(f, "modelnet40:{}", p.display()),
            Self::ScanObjectNN(p) => write!(f, "scanobjectnn:{}", p.display()),
            Self::ShapeNetPart(p) => write!(f, "shapenetpart:{}", p.display()),
            Self::ShapeNet55(p) => write!(f, "shapenet55:{}", p.display()),
            Self::Folder(p) => write!(f, "folder:{}", p.display()),
            Self::ModelNet40FewShot(p) => write!(f, "modelnet40fewshot:{}", p.display()),
        }
    }
}

impl DataSpec {
    /// `synthetic[:seed=S,train=N,test=N,points=N,rotate=upright|any]`, `modelnet40:PATH`, `scanobjectnn:PATH`,
    /// `shapenetpart:PATH`, `shapenet55:PATH`, `folder:PATH`, `modelnet40fewshot:PATH`, or a
    /// bare path whose layout is detected.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("synthetic") {
            return Ok(Self::Synthetic(SyntheticConfig::default()));
        }
        if let Some((prefix, rest)) = s.split_once(':') {
            let path = PathBuf::from(rest);
            match prefix.to_ascii_lowercase().as_str() {
                "synthetic" => return parse_synthetic(rest).map(Self::Synthetic),
                "modelnet40" => return Ok(Self::ModelNet40(path)),
                "scanobjectnn" => return Ok(Self::ScanObjectNN(path)),
                "shapenetpart" => return Ok(Self::ShapeNetPart(path)),
                "shapenet55" => return Ok(Self::ShapeNet55(path)),
                "folder" => return Ok(Self::Folder(path)),
                "modelnet40fewshot" => return Ok(Self::ModelNet40FewShot(path)),
                // anything else (e.g. a Windows drive letter) is a bare path
                _ => {}
            }
        }
        Self::detect(Path::new(s))
    }

    /// Guesses the layout of a file or directory.
    pub fn detect(path: &Path) -> Result<Self> {
        let p = path.to_path_buf();
        if path.is_file() {
            let h5 = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("h5"));
            return if h5 {
                Ok(Self::ScanObjectNN(p))
            } else if fewshot::looks_like_fewshot(path) {
                Ok(Self::ModelNet40FewShot(p))
            } else {
                Err(DataError::unsupported(
                    path,
                    "a single file is not a data set (only a ScanObjectNN .h5 file or a \
                     few-shot .pkl fold is)",
                ))
            };
        }
        if !path.is_dir() {
            return Err(DataError::format(path, "no such file or directory"));
        }
        let has = |rel: &str| path.join(rel).exists();
        if has("modelnet40_shape_names.txt") || has("modelnet40_normal_resampled") {
            return Ok(Self::ModelNet40(p));
        }
        if has("synsetoffset2category.txt") || has("train_test_split") {
            return Ok(Self::ShapeNetPart(p));
        }
        if !h5_files(path, "training_").is_empty() {
            return Ok(Self::ScanObjectNN(p));
        }
        if (has("train.txt") && has("shapenet_pc")) || has("ShapeNet-55") {
            return Ok(Self::ShapeNet55(p));
        }
        if !part_split_files(path).is_empty() {
            return Ok(Self::ShapeNetPart(p));
        }
        // before the class-folder guess: a few-shot root is a folder of folders too
        if fewshot::looks_like_fewshot(path) {
            return Ok(Self::ModelNet40FewShot(p));
        }
        if has("labels.csv") || !subdirs(path).is_empty() {
            return Ok(Self::Folder(p));
        }
        Err(DataError::format(
            path,
            "could not detect a data-set layout: looked for modelnet40_shape_names.txt, \
             synsetoffset2category.txt, training_*.h5, train.txt + shapenet_pc, \
             test/ or val/ ShapeNetPart txt files, {W}way_{K}shot/N.pkl few-shot folds, \
             labels.csv, or class subfolders",
        ))
    }

    /// [`DataSpec::open`] for evaluation: the test split is what matters, so in-memory
    /// training data that costs a large read (the 1.9 GB ModelNet40 training cache) is
    /// skipped and the train split may be empty. Other sets open as usual.
    pub fn open_test(&self) -> Result<Dataset> {
        match self {
            Self::ModelNet40(p) => open_modelnet40_splits(p, false),
            _ => self.open(),
        }
    }

    /// Opens the data set (file-backed sets list their files without reading them).
    pub fn open(&self) -> Result<Dataset> {
        match self {
            Self::Synthetic(c) => Ok(Dataset::synthetic(c)),
            Self::ModelNet40(p) => open_modelnet40(p),
            Self::ScanObjectNN(p) => open_scanobjectnn(p),
            Self::ShapeNetPart(p) => open_shapenetpart(p),
            Self::ShapeNet55(p) => open_shapenet55(p),
            Self::Folder(p) => open_folder(p),
            Self::ModelNet40FewShot(p) if p.is_dir() => Err(DataError::format(
                p,
                "a few-shot root or setting folder: name one fold file \
                 (…/5way_10shot/0.pkl), or run every fold with `dapt train --fewshot 5way10shot`",
            )),
            Self::ModelNet40FewShot(p) => fewshot::open_fold(p),
        }
    }
}

fn parse_synthetic(rest: &str) -> Result<SyntheticConfig> {
    let mut c = SyntheticConfig::default();
    let bad = |m: String| DataError::format(Path::new("synthetic"), m);
    for kv in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad(format!("expected key=value, got `{kv}`")))?;
        if k.trim() == "rotate" {
            c.rotation = match v.trim() {
                "upright" => Rotation::Upright,
                "any" => Rotation::Any,
                other => {
                    return Err(bad(format!(
                        "rotate must be `upright` or `any`, not `{other}`"
                    )));
                }
            };
            continue;
        }
        let n: u64 = v
            .trim()
            .parse()
            .map_err(|_| bad(format!("`{v}` is not a non-negative integer")))?;
        let as_usize = |n: u64| usize::try_from(n).map_err(|_| bad(format!("{n} is too large")));
        match k.trim() {
            "seed" => c.seed = n,
            "train" => c.train_per_class = as_usize(n)?,
            "test" => c.test_per_class = as_usize(n)?,
            "points" => c.points = as_usize(n)?,
            other => {
                return Err(bad(format!(
                    "unknown key `{other}` (seed, train, test, points, rotate)"
                )));
            }
        }
    }
    if c.points == 0 {
        return Err(bad("points must be at least 1".into()));
    }
    Ok(c)
}
