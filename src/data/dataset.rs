//! Data sets for training, evaluation and the app: the built-in synthetic set and loaders
//! for ModelNet40, ScanObjectNN, ShapeNetPart, ShapeNet-55 and class-per-folder layouts
//! (dapt-spec.md §2.1). File-backed sets only list their files; clouds are read on demand
//! by [`Dataset::load`] (ModelNet40 alone has 12,311 files).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{DataError, Result};
use super::h5::read_h5;
use super::io::{ReadOptions, is_supported, read_cloud};
use super::pickle::{DtypeKind, read_pickle};
use super::synthetic::{self, SyntheticConfig};
use super::transform::pc_normalize;
use super::{PointCloud, Rng};

/// What a model is trained to predict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Task {
    Classification,
    PartSegmentation,
}

/// Where a sample's points live.
#[derive(Clone, Debug)]
pub enum SampleSource {
    Memory(Arc<PointCloud>),
    File(PathBuf),
}

/// One shape of a data set.
#[derive(Clone, Debug)]
pub struct Sample {
    pub source: SampleSource,
    /// Class index (classification) or object category (part segmentation).
    pub label: usize,
}

/// A labelled data set with its official train/test split.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub class_names: Vec<String>,
    pub train: Vec<Sample>,
    pub test: Vec<Sample>,
    /// Part segmentation: the global part ids of each category.
    pub category_parts: Option<Vec<Vec<usize>>>,
    pub num_parts: Option<usize>,
    /// Whether the official loader applies `pc_normalize` to this data set.
    pub normalize: bool,
}

impl Dataset {
    /// The sample's cloud, normalised when the data set asks for it, with `class_label` set.
    pub fn load(&self, sample: &Sample, opts: &ReadOptions) -> Result<PointCloud> {
        let mut cloud = match &sample.source {
            SampleSource::Memory(c) => PointCloud::clone(c),
            SampleSource::File(p) => read_cloud(p, opts)?,
        };
        if self.normalize {
            pc_normalize(&mut cloud.positions);
        }
        cloud.class_label = Some(sample.label);
        Ok(cloud)
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Part segmentation needs per-category part tables; classification needs classes.
    pub fn supports(&self, task: Task) -> bool {
        match task {
            Task::Classification => !self.class_names.is_empty(),
            Task::PartSegmentation => self.category_parts.is_some() && self.num_parts.is_some(),
        }
    }

    /// The synthetic set, held in memory.
    pub fn synthetic(cfg: &SyntheticConfig) -> Self {
        let set = synthetic::generate(cfg);
        let wrap = |clouds: Vec<PointCloud>| {
            clouds
                .into_iter()
                .map(|c| Sample {
                    label: c.class_label.unwrap_or(0),
                    source: SampleSource::Memory(Arc::new(c)),
                })
                .collect()
        };
        Self {
            name: format!("synthetic (seed {})", cfg.seed),
            class_names: set.class_names,
            train: wrap(set.train),
            test: wrap(set.test),
            num_parts: Some(synthetic::num_parts()),
            category_parts: Some(set.category_parts),
            // generated clouds are already normalised
            normalize: false,
        }
    }
}

/// The 16 ShapeNetPart categories (in the official label order) and their global part ids.
pub const SHAPENETPART_CATEGORIES: [(&str, &str, &[usize]); 16] = [
    ("Airplane", "02691156", &[0, 1, 2, 3]),
    ("Bag", "02773838", &[4, 5]),
    ("Cap", "02954340", &[6, 7]),
    ("Car", "02958343", &[8, 9, 10, 11]),
    ("Chair", "03001627", &[12, 13, 14, 15]),
    ("Earphone", "03261776", &[16, 17, 18]),
    ("Guitar", "03467517", &[19, 20, 21]),
    ("Knife", "03624134", &[22, 23]),
    ("Lamp", "03636649", &[24, 25, 26, 27]),
    ("Laptop", "03642806", &[28, 29]),
    ("Motorbike", "03790512", &[30, 31, 32, 33, 34, 35]),
    ("Mug", "03797390", &[36, 37]),
    ("Pistol", "03948459", &[38, 39, 40]),
    ("Rocket", "04099429", &[41, 42, 43]),
    ("Skateboard", "04225987", &[44, 45, 46]),
    ("Table", "04379243", &[47, 48, 49]),
];

/// ScanObjectNN's 15 classes in label order.
pub const SCANOBJECTNN_CLASSES: [&str; 15] = [
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
    "pillow", "sink", "sofa", "toilet",
];

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
                    )
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
    /// `synthetic[:seed=S,train=N,test=N,points=N]`, `modelnet40:PATH`, `scanobjectnn:PATH`,
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
            } else if super::fewshot::looks_like_fewshot(path) {
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
        if super::fewshot::looks_like_fewshot(path) {
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
            Self::ModelNet40FewShot(p) => super::fewshot::open_fold(p),
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
                    "unknown key `{other}` (seed, train, test, points)"
                )));
            }
        }
    }
    if c.points == 0 {
        return Err(bad("points must be at least 1".into()));
    }
    Ok(c)
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    sorted_entries(dir)
        .into_iter()
        .filter(|p| p.is_dir() && !is_hidden(p))
        .collect()
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn h5_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
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
fn cloud_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
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

fn file_sample(path: PathBuf, label: usize) -> Sample {
    Sample {
        source: SampleSource::File(path),
        label,
    }
}

/// Splits a class's files 80/20, the same way every time.
fn split_80_20(files: Vec<PathBuf>, label: usize, train: &mut Vec<Sample>, test: &mut Vec<Sample>) {
    let n = files.len();
    let n_test = if n >= 2 {
        ((n as f64 * 0.2).round() as usize).max(1)
    } else {
        0
    };
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(0xDA7A_5B11 ^ label as u64).shuffle(&mut order);
    let mut is_test = vec![false; n];
    for &i in order.iter().take(n_test) {
        is_test[i] = true;
    }
    for (i, f) in files.into_iter().enumerate() {
        if is_test[i] {
            test.push(file_sample(f, label));
        } else {
            train.push(file_sample(f, label));
        }
    }
}

/// Splits one CSV line, honouring double quotes.
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(ch),
        }
    }
    out.push(cur.trim().to_string());
    out
}

/// A `labels.csv` row: file, class name, split when given.
struct CsvRow {
    path: PathBuf,
    class: String,
    split: Option<String>,
}

/// Reads `labels.csv` with a `path` column, a class column (`class`, `coarse_class`,
/// `label` or `category`) and an optional `split`/`official_split` column. Paths are taken
/// relative to the CSV's folder, or to its parent when that is where they resolve (the
/// shared furniture sample writes `cc0-demo/...` inside `cc0-demo/labels.csv`).
fn read_labels_csv(csv: &Path) -> Result<Vec<CsvRow>> {
    let text = read_text(csv)?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, head) = lines
        .next()
        .ok_or_else(|| DataError::format(csv, "empty CSV"))?;
    let head: Vec<String> = csv_fields(head.trim_start_matches('\u{feff}'))
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let col = |names: &[&str]| names.iter().find_map(|n| head.iter().position(|h| h == n));
    let pc = col(&["path", "file", "filename"])
        .ok_or_else(|| DataError::format(csv, "no `path` column in the header"))?;
    let cc = col(&["class", "coarse_class", "label", "category"]).ok_or_else(|| {
        DataError::format(
            csv,
            "no class column (class, coarse_class, label or category)",
        )
    })?;
    let sc = col(&["split", "official_split"]);
    let dir = csv.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut base: Option<PathBuf> = None;
    let mut rows = Vec::new();
    for (i, line) in lines {
        let f = csv_fields(line);
        let get = |c: usize| f.get(c).map(String::as_str).unwrap_or("");
        let (rel, class) = (get(pc), get(cc));
        if rel.is_empty() {
            return Err(DataError::format(
                csv,
                format!("line {}: empty path", i + 1),
            ));
        }
        if class.is_empty() {
            // unlabelled rows (the furniture list has many) are not part of the data set
            continue;
        }
        let base = base.get_or_insert_with(|| {
            let parent = dir.parent().map(Path::to_path_buf);
            match parent {
                Some(p) if !dir.join(rel).exists() && p.join(rel).exists() => p,
                _ => dir.clone(),
            }
        });
        rows.push(CsvRow {
            path: base.join(rel),
            class: class.to_string(),
            split: sc
                .map(|c| get(c).to_ascii_lowercase())
                .filter(|s| !s.is_empty()),
        });
    }
    if rows.is_empty() {
        return Err(DataError::format(csv, "no labelled rows"));
    }
    Ok(rows)
}

fn is_test_split(s: &str) -> Option<bool> {
    match s {
        "train" | "trainval" | "training" | "val" | "valid" | "validation" => Some(false),
        "test" | "testing" => Some(true),
        _ => None,
    }
}

/// Turns CSV rows into samples; `names` fixes the class order when given.
fn csv_dataset(
    csv: &Path,
    rows: Vec<CsvRow>,
    names: Option<Vec<String>>,
) -> Result<(Vec<String>, Vec<Sample>, Vec<Sample>)> {
    let names = names.unwrap_or_else(|| {
        let mut v: Vec<String> = rows.iter().map(|r| r.class.clone()).collect();
        v.sort();
        v.dedup();
        v
    });
    let mut train = Vec::new();
    let mut test = Vec::new();
    let mut unsplit: Vec<Vec<PathBuf>> = vec![Vec::new(); names.len()];
    for r in rows {
        let label = names.iter().position(|n| *n == r.class).ok_or_else(|| {
            DataError::format(csv, format!("class `{}` is not in the class list", r.class))
        })?;
        match r.split.as_deref() {
            None => unsplit[label].push(r.path),
            Some(s) => match is_test_split(s) {
                Some(true) => test.push(file_sample(r.path, label)),
                Some(false) => train.push(file_sample(r.path, label)),
                None => {
                    return Err(DataError::format(csv, format!("unknown split `{s}`")));
                }
            },
        }
    }
    for (label, files) in unsplit.into_iter().enumerate() {
        split_80_20(files, label, &mut train, &mut test);
    }
    Ok((names, train, test))
}

fn open_modelnet40(root: &Path) -> Result<Dataset> {
    open_modelnet40_splits(root, true)
}

/// `with_train: false` leaves the training cache unread (the txt path only lists files).
fn open_modelnet40_splits(root: &Path, with_train: bool) -> Result<Dataset> {
    let base = if root.join("modelnet40_normal_resampled").is_dir() {
        root.join("modelnet40_normal_resampled")
    } else {
        root.to_path_buf()
    };
    let names_file = base.join("modelnet40_shape_names.txt");
    let names: Option<Vec<String>> = if names_file.is_file() {
        Some(
            read_text(&names_file)?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        )
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
        let a = p.as_array().ok_or_else(|| {
            bad(format!(
                "shape {i}: expected a NumPy array of points, found a {}",
                p.type_name()
            ))
        })?;
        if a.dtype.kind != DtypeKind::Float || a.shape.len() != 2 || a.shape[1] < 3 {
            return Err(bad(format!(
                "shape {i}: points are a {:?} array of {}, expected (N, 6) float32",
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
            return Err(bad(format!("shape {i}: no points")));
        }
        if positions.iter().flatten().any(|v| !v.is_finite()) {
            return Err(bad(format!("shape {i}: a coordinate is not finite")));
        }
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
        out.push(Sample {
            source: SampleSource::Memory(Arc::new(cloud)),
            label,
        });
    }
    Ok(out)
}

fn open_scanobjectnn(path: &Path) -> Result<Dataset> {
    let train_file = if path.is_file() {
        path.to_path_buf()
    } else {
        let plain = path.join("training_objectdataset.h5");
        if plain.is_file() {
            plain
        } else {
            let found = h5_files(path, "training_");
            match found.len() {
                1 => found.into_iter().next().unwrap_or_default(),
                0 => {
                    return Err(DataError::format(
                        path,
                        "no training_*.h5 file in this folder",
                    ));
                }
                _ => {
                    return Err(DataError::format(
                        path,
                        "several training_*.h5 files; name the one to use",
                    ));
                }
            }
        }
    };
    let fname = train_file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let (train_name, test_name) = if let Some(rest) = fname.strip_prefix("training_") {
        (fname.clone(), format!("test_{rest}"))
    } else if let Some(rest) = fname.strip_prefix("test_") {
        (format!("training_{rest}"), fname.clone())
    } else {
        return Err(DataError::format(
            &train_file,
            "expected a training_*.h5 or test_*.h5 file name",
        ));
    };
    let dir = train_file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let variant = if fname.contains("augmentedrot_scale75") {
        "PB_T50_RS"
    } else if folder.contains("nobg") {
        "OBJ_ONLY"
    } else {
        "OBJ_BG"
    };
    let to_samples = |clouds: Vec<PointCloud>| -> Vec<Sample> {
        clouds
            .into_iter()
            .map(|c| Sample {
                label: c.class_label.unwrap_or(0),
                source: SampleSource::Memory(Arc::new(c)),
            })
            .collect()
    };
    let train = to_samples(read_h5(&dir.join(train_name))?);
    let test = to_samples(read_h5(&dir.join(test_name))?);
    let max = train
        .iter()
        .chain(&test)
        .map(|s| s.label)
        .max()
        .unwrap_or(0);
    let class_names = if max < SCANOBJECTNN_CLASSES.len() {
        SCANOBJECTNN_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..=max).map(|i| format!("class_{i}")).collect()
    };
    Ok(Dataset {
        name: format!("ScanObjectNN {variant}"),
        class_names,
        train,
        test,
        category_parts: None,
        num_parts: None,
        normalize: false,
    })
}

/// Files directly inside `train/`, `val/` or `test/` whose name starts with a ShapeNetPart
/// category (`cap_test_00.txt`), with their split and category.
fn part_split_files(root: &Path) -> Vec<(PathBuf, bool, usize)> {
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
            if let Some(cat) = SHAPENETPART_CATEGORIES
                .iter()
                .position(|(name, _, _)| name.eq_ignore_ascii_case(prefix))
            {
                out.push((p, test, cat));
            }
        }
    }
    out
}

fn open_shapenetpart(root: &Path) -> Result<Dataset> {
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
            let cat = SHAPENETPART_CATEGORIES
                .iter()
                .position(|(n, _, _)| n.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
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

fn open_shapenet55(root: &Path) -> Result<Dataset> {
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

fn open_folder(root: &Path) -> Result<Dataset> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_honour_quotes() {
        assert_eq!(
            csv_fields(r#"a/b.obj, chair ,"Chair, ""red""",x"#),
            vec!["a/b.obj", "chair", r#"Chair, "red""#, "x"]
        );
        assert_eq!(csv_fields(""), vec![""]);
    }

    #[test]
    fn split_is_80_20_and_keeps_a_test_shape_for_small_classes() {
        for (n, want) in [(1, 0), (2, 1), (5, 1), (10, 2), (12, 2)] {
            let files: Vec<PathBuf> = (0..n).map(|i| PathBuf::from(format!("{i}"))).collect();
            let (mut train, mut test) = (Vec::new(), Vec::new());
            split_80_20(files, 3, &mut train, &mut test);
            assert_eq!((train.len(), test.len()), (n - want, want), "n={n}");
            assert!(train.iter().chain(&test).all(|s| s.label == 3));
        }
    }

    #[test]
    fn shapenetpart_table_has_50_disjoint_parts() {
        let mut all: Vec<usize> = SHAPENETPART_CATEGORIES
            .iter()
            .flat_map(|(_, _, p)| p.iter().copied())
            .collect();
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
    }
}
