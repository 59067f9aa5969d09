//! The app's seam to the model: an [`Analyzer`] turns a cloud into predictions and dynamic
//! scales ([`CloudAnalysis`]). The app calls it on a worker thread, never on the UI thread.
//! Also: reducing per-patch dynamic scales onto points (ux.md §1.8).

use serde::{Deserialize, Serialize};

use crate::data::PointCloud;
use crate::train::ScaleSnapshot;

/// What a model says about one cloud.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloudAnalysis {
    pub class_names: Vec<String>,
    /// One probability per class name.
    pub probabilities: Vec<f32>,
    /// Patch centres, `[patch][xyz]`.
    pub centers: Vec<[f32; 3]>,
    /// Point indices per patch.
    pub groups: Vec<Vec<usize>>,
    /// `[block][patch]` dynamic scale of each patch token.
    pub patch_scales: Vec<Vec<f32>>,
    /// `[block][prompt]` dynamic scale of the prompts present at that block.
    pub prompt_scales: Vec<Vec<f32>>,
    /// `[block]` dynamic scale of the cls token.
    pub cls_scales: Vec<f32>,
    /// Per-point predicted part (segmentation models only).
    pub part_pred: Option<Vec<usize>>,
}

impl CloudAnalysis {
    /// Class indices sorted by probability, best first, at most `k`.
    pub fn top_k(&self, k: usize) -> Vec<(usize, f32)> {
        let mut idx: Vec<(usize, f32)> = self.probabilities.iter().copied().enumerate().collect();
        idx.sort_by(|a, b| b.1.total_cmp(&a.1));
        idx.truncate(k);
        idx
    }

    pub fn predicted_class(&self) -> Option<usize> {
        self.top_k(1).first().map(|p| p.0)
    }

    /// The scale part of the analysis, as the heatmap code consumes it.
    pub fn scales(&self) -> ScaleData {
        ScaleData {
            centers: self.centers.clone(),
            groups: self.groups.clone(),
            patch: self.patch_scales.clone(),
            prompts: self.prompt_scales.clone(),
            cls: self.cls_scales.clone(),
        }
    }
}

/// A model the app can run on a cloud. Implementations must be cheap to share between threads.
pub trait Analyzer: Send + Sync {
    /// Shown in the prediction panel, e.g. "DAPT ScanObjectNN (best.pth)".
    fn name(&self) -> String;
    fn analyze(&self, cloud: &PointCloud) -> Result<CloudAnalysis, String>;
}

/// Dynamic scales of one cloud, from an analysis or from a training snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScaleData {
    pub centers: Vec<[f32; 3]>,
    pub groups: Vec<Vec<usize>>,
    pub patch: Vec<Vec<f32>>,
    pub prompts: Vec<Vec<f32>>,
    pub cls: Vec<f32>,
}

impl From<&ScaleSnapshot> for ScaleData {
    fn from(s: &ScaleSnapshot) -> Self {
        Self {
            centers: s.centers.clone(),
            groups: s.groups.clone(),
            patch: s.patch.clone(),
            prompts: s.prompts.clone(),
            cls: s.cls.clone(),
        }
    }
}

/// Which block(s) of the transformer the heatmap shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockSelect {
    Block(usize),
    #[default]
    Mean,
    Max,
}

impl BlockSelect {
    pub fn label(self) -> String {
        match self {
            BlockSelect::Block(b) => format!("block {b}"),
            BlockSelect::Mean => "mean over blocks".into(),
            BlockSelect::Max => "max over blocks".into(),
        }
    }
}

/// How per-patch values become per-point values (patches overlap, so this is a choice).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PointReduction {
    /// Largest value over the patches containing the point.
    #[default]
    Max,
    /// Mean over the patches containing the point.
    Mean,
    /// Value of the nearest patch centre (every point gets one).
    NearestCenter,
}

impl PointReduction {
    pub const ALL: [PointReduction; 3] = [
        PointReduction::Max,
        PointReduction::Mean,
        PointReduction::NearestCenter,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PointReduction::Max => "max over containing patches",
            PointReduction::Mean => "mean over containing patches",
            PointReduction::NearestCenter => "nearest patch centre",
        }
    }
}

impl ScaleData {
    pub fn num_blocks(&self) -> usize {
        self.patch.len()
    }

    /// Per-patch value for `select`; empty when there are no scales.
    pub fn patch_values(&self, select: BlockSelect) -> Vec<f32> {
        reduce_blocks(&self.patch, select)
    }

    /// Per-prompt value for `select` (prompts present in fewer blocks are reduced over those).
    pub fn prompt_values(&self, select: BlockSelect) -> Vec<f32> {
        reduce_blocks(&self.prompts, select)
    }

    /// Per-point values of `select` reduced with `reduction`; NaN for points in no patch.
    pub fn point_values(
        &self,
        positions: &[[f32; 3]],
        select: BlockSelect,
        reduction: PointReduction,
    ) -> Vec<f32> {
        let per_patch = self.patch_values(select);
        let n = positions.len();
        if per_patch.is_empty() {
            return vec![f32::NAN; n];
        }
        match reduction {
            PointReduction::NearestCenter => positions
                .iter()
                .map(|p| {
                    let mut best = (f32::INFINITY, f32::NAN);
                    for (c, v) in self.centers.iter().zip(&per_patch) {
                        let d = (0..3).map(|k| (p[k] - c[k]).powi(2)).sum::<f32>();
                        if d < best.0 {
                            best = (d, *v);
                        }
                    }
                    best.1
                })
                .collect(),
            PointReduction::Max | PointReduction::Mean => {
                let mut acc = vec![(0.0f32, 0u32, f32::NEG_INFINITY); n];
                for (group, v) in self.groups.iter().zip(&per_patch) {
                    for &i in group {
                        if let Some(a) = acc.get_mut(i) {
                            a.0 += v;
                            a.1 += 1;
                            a.2 = a.2.max(*v);
                        }
                    }
                }
                acc.into_iter()
                    .map(|(sum, count, max)| match (count, reduction) {
                        (0, _) => f32::NAN,
                        (_, PointReduction::Max) => max,
                        _ => sum / count as f32,
                    })
                    .collect()
            }
        }
    }

    /// Patches containing point `i`.
    pub fn patches_of(&self, i: usize) -> Vec<usize> {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.contains(&i))
            .map(|(k, _)| k)
            .collect()
    }
}

fn reduce_blocks(per_block: &[Vec<f32>], select: BlockSelect) -> Vec<f32> {
    match select {
        BlockSelect::Block(b) => per_block.get(b).cloned().unwrap_or_default(),
        BlockSelect::Mean | BlockSelect::Max => {
            let width = per_block.iter().map(Vec::len).max().unwrap_or(0);
            (0..width)
                .map(|j| {
                    let vals = per_block.iter().filter_map(|row| row.get(j).copied());
                    if select == BlockSelect::Max {
                        vals.fold(f32::NEG_INFINITY, f32::max)
                    } else {
                        let (s, c) = vals.fold((0.0, 0), |(s, c), v| (s + v, c + 1));
                        s / c.max(1) as f32
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> ScaleData {
        ScaleData {
            centers: vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
            groups: vec![vec![0, 1], vec![1, 2]],
            patch: vec![vec![1.0, 3.0], vec![3.0, 5.0]],
            prompts: vec![vec![0.5], vec![0.5, 1.5]],
            cls: vec![0.1, 0.2],
        }
    }

    #[test]
    fn block_reductions() {
        let d = data();
        assert_eq!(d.patch_values(BlockSelect::Block(1)), vec![3.0, 5.0]);
        assert_eq!(d.patch_values(BlockSelect::Mean), vec![2.0, 4.0]);
        assert_eq!(d.patch_values(BlockSelect::Max), vec![3.0, 5.0]);
        assert_eq!(d.prompt_values(BlockSelect::Mean), vec![0.5, 1.5]);
        assert!(d.patch_values(BlockSelect::Block(9)).is_empty());
    }

    #[test]
    fn point_reductions() {
        let d = data();
        let pts = [
            [0.0, 0.0, 0.0],
            [0.6, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [5.0, 0.0, 0.0],
        ];
        let max = d.point_values(&pts, BlockSelect::Block(0), PointReduction::Max);
        assert_eq!(&max[..3], &[1.0, 3.0, 3.0]);
        assert!(max[3].is_nan(), "a point in no patch has no value");
        let mean = d.point_values(&pts, BlockSelect::Block(0), PointReduction::Mean);
        assert_eq!(&mean[..3], &[1.0, 2.0, 3.0]);
        let near = d.point_values(&pts, BlockSelect::Block(0), PointReduction::NearestCenter);
        assert_eq!(near, vec![1.0, 3.0, 3.0, 3.0]);
        assert_eq!(d.patches_of(1), vec![0, 1]);
    }

    #[test]
    fn top_k_is_sorted() {
        let a = CloudAnalysis {
            class_names: vec!["a".into(), "b".into(), "c".into()],
            probabilities: vec![0.2, 0.7, 0.1],
            ..Default::default()
        };
        assert_eq!(a.top_k(2), vec![(1, 0.7), (0, 0.2)]);
        assert_eq!(a.predicted_class(), Some(1));
    }
}
