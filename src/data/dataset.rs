//! Data sets for training, evaluation and the app: the [`Dataset`] type (a class list and
//! the official train/test split of its samples), the built-in synthetic set, and, in the
//! submodules, [`DataSpec`] and one reader per on-disk layout: ModelNet40, ScanObjectNN,
//! ShapeNetPart, ShapeNet-55 and class-per-folder sets (dapt-spec.md §2.1; the few-shot
//! folds are `data::fewshot`). File-backed sets only list their files; clouds are read on
//! demand by [`Dataset::load`] (ModelNet40 alone has 12,311 files).

mod folder;
mod labels_csv;
mod listing;
mod modelnet40;
mod scanobjectnn;
mod shapenet55;
mod shapenetpart;
mod shapenetpart_categories;
mod spec;

use std::path::PathBuf;
use std::sync::Arc;

use super::error::Result;
use super::io::{ReadOptions, read_cloud};
use super::synthetic::{self, SyntheticConfig};
use super::transform::pc_normalize;
use super::{PointCloud, Rng};

pub use modelnet40::{MODELNET40_CACHE_POINTS, modelnet40_cache};
pub(super) use modelnet40::{pickled_xyz, read_shape_names};
pub use scanobjectnn::SCANOBJECTNN_CLASSES;
pub use shapenetpart_categories::SHAPENETPART_CATEGORIES;
pub use spec::DataSpec;

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
        let wrap = |clouds: Vec<PointCloud>| clouds.into_iter().map(memory_sample).collect();
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

fn file_sample(path: PathBuf, label: usize) -> Sample {
    Sample {
        source: SampleSource::File(path),
        label,
    }
}

/// A sample held in memory, labelled with the cloud's `class_label` (0 when it has none).
pub(super) fn memory_sample(cloud: PointCloud) -> Sample {
    Sample {
        label: cloud.class_label.unwrap_or(0),
        source: SampleSource::Memory(Arc::new(cloud)),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
