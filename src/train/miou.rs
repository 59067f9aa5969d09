//! Part-segmentation metrics with the Point-MAE / PointNet++ convention (dapt-spec.md §5.3).
//!
//! * A point's prediction is the arg-max over the log-probabilities **restricted to the part
//!   ids of the shape's category** (the category is known at test time).
//! * Shape IoU: for each part of the category, |pred ∩ gt| / |pred ∪ gt|, and 1 when the
//!   part is absent from both; the mean over the category's parts.
//! * Instance mIoU: mean shape IoU over all shapes. Class mIoU: mean over categories of the
//!   per-category mean shape IoU. The official script averages over all 16 categories because
//!   the full test split contains every one; on a partial data set (one category, a subset)
//!   a category with no shapes has no IoU at all, so we average over the categories present.
//! * Point accuracy (`overall_accuracy` in the metrics) counts restricted predictions.

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MiouError {
    #[error("object category {0} is not in the part table")]
    UnknownCategory(usize),
    #[error("category {0} has no parts")]
    NoParts(usize),
    #[error("{pred} predictions for {truth} labelled points")]
    Length { pred: usize, truth: usize },
    #[error("{values} log-probabilities are not {points} rows of {parts}")]
    Shape {
        values: usize,
        points: usize,
        parts: usize,
    },
}

/// Arg-max of one point's scores over `parts` only (earliest part on ties); `None` when
/// `parts` is empty or names a part outside `scores`.
pub fn restricted_argmax(scores: &[f32], parts: &[usize]) -> Option<usize> {
    let (&first, rest) = parts.split_first()?;
    let mut best = first;
    let mut best_v = *scores.get(first)?;
    for &p in rest {
        let v = *scores.get(p)?;
        if v > best_v {
            best = p;
            best_v = v;
        }
    }
    Some(best)
}

/// Restricted predictions for every point of one shape: `scores` holds `n` rows of `num_parts`.
pub fn predict_parts(
    scores: &[f32],
    num_parts: usize,
    parts: &[usize],
) -> Result<Vec<usize>, MiouError> {
    if num_parts == 0 || !scores.len().is_multiple_of(num_parts) {
        return Err(MiouError::Shape {
            values: scores.len(),
            points: scores.len() / num_parts.max(1),
            parts: num_parts,
        });
    }
    if parts.is_empty() || parts.iter().any(|&p| p >= num_parts) {
        return Err(MiouError::Shape {
            values: scores.len(),
            points: scores.len() / num_parts,
            parts: num_parts,
        });
    }
    // `parts` was checked against `num_parts` above, so every row has an arg-max
    Ok(scores
        .chunks_exact(num_parts)
        .filter_map(|row| restricted_argmax(row, parts))
        .collect())
}

/// IoU of one shape over its category's parts (1 for a part absent from both).
pub fn shape_iou(pred: &[usize], truth: &[usize], parts: &[usize]) -> Result<f64, MiouError> {
    if pred.len() != truth.len() {
        return Err(MiouError::Length {
            pred: pred.len(),
            truth: truth.len(),
        });
    }
    if parts.is_empty() {
        return Err(MiouError::NoParts(0));
    }
    let mut sum = 0.0;
    for &part in parts {
        let mut inter = 0usize;
        let mut union = 0usize;
        for (&p, &t) in pred.iter().zip(truth) {
            let (a, b) = (p == part, t == part);
            inter += usize::from(a && b);
            union += usize::from(a || b);
        }
        sum += if union == 0 {
            1.0
        } else {
            inter as f64 / union as f64
        };
    }
    Ok(sum / parts.len() as f64)
}

/// One row of the per-category table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryIou {
    pub category: usize,
    pub name: String,
    pub shapes: usize,
    /// Mean shape IoU of the category; `None` when it has no shapes.
    pub miou: Option<f64>,
}

/// Accumulates shape IoUs over an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MiouAccumulator {
    pub category_parts: Vec<Vec<usize>>,
    pub category_names: Vec<String>,
    /// `[category]` the IoU of each shape seen.
    pub shape_ious: Vec<Vec<f64>>,
    pub correct_points: u64,
    pub total_points: u64,
}

impl MiouAccumulator {
    pub fn new(category_parts: Vec<Vec<usize>>, category_names: Vec<String>) -> Self {
        let k = category_parts.len();
        Self {
            category_parts,
            category_names,
            shape_ious: vec![Vec::new(); k],
            correct_points: 0,
            total_points: 0,
        }
    }

    /// The part ids of `category`.
    pub fn parts(&self, category: usize) -> Result<&[usize], MiouError> {
        let parts = self
            .category_parts
            .get(category)
            .ok_or(MiouError::UnknownCategory(category))?;
        if parts.is_empty() {
            return Err(MiouError::NoParts(category));
        }
        Ok(parts)
    }

    /// Adds one shape from its (already restricted) predictions. Returns the shape IoU.
    pub fn add_predictions(
        &mut self,
        category: usize,
        pred: &[usize],
        truth: &[usize],
    ) -> Result<f64, MiouError> {
        let iou = shape_iou(pred, truth, self.parts(category)?)?;
        self.shape_ious[category].push(iou);
        self.correct_points += pred.iter().zip(truth).filter(|(p, t)| p == t).count() as u64;
        self.total_points += truth.len() as u64;
        Ok(iou)
    }

    /// Adds one shape from its per-point scores (`n` rows of `num_parts`); returns the
    /// restricted predictions.
    pub fn add_scores(
        &mut self,
        category: usize,
        scores: &[f32],
        num_parts: usize,
        truth: &[usize],
    ) -> Result<Vec<usize>, MiouError> {
        let pred = predict_parts(scores, num_parts, self.parts(category)?)?;
        self.add_predictions(category, &pred, truth)?;
        Ok(pred)
    }

    pub fn shapes(&self) -> usize {
        self.shape_ious.iter().map(Vec::len).sum()
    }

    /// Mean shape IoU over all shapes (0 when none).
    pub fn instance_miou(&self) -> f64 {
        let n = self.shapes();
        if n == 0 {
            return 0.0;
        }
        self.shape_ious.iter().flatten().sum::<f64>() / n as f64
    }

    /// Mean over the categories present of their mean shape IoU (0 when none).
    pub fn class_miou(&self) -> f64 {
        let per: Vec<f64> = self
            .per_category()
            .into_iter()
            .filter_map(|c| c.miou)
            .collect();
        if per.is_empty() {
            0.0
        } else {
            per.iter().sum::<f64>() / per.len() as f64
        }
    }

    /// Fraction of points whose restricted prediction is right.
    pub fn point_accuracy(&self) -> f64 {
        if self.total_points == 0 {
            0.0
        } else {
            self.correct_points as f64 / self.total_points as f64
        }
    }

    pub fn per_category(&self) -> Vec<CategoryIou> {
        self.shape_ious
            .iter()
            .enumerate()
            .map(|(i, v)| CategoryIou {
                category: i,
                name: self
                    .category_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("category_{i}")),
                shapes: v.len(),
                miou: (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc() -> MiouAccumulator {
        // two categories: parts {0,1} and {2,3,4}
        MiouAccumulator::new(
            vec![vec![0, 1], vec![2, 3, 4]],
            vec!["a".into(), "b".into()],
        )
    }

    #[test]
    fn shape_iou_by_hand() {
        // part 0: inter 2 (pts 0,1), union 3 (pts 0,1,2) → 2/3; part 1: inter 1, union 2 → 1/2
        let pred = [0, 0, 0, 1];
        let truth = [0, 0, 1, 1];
        let iou = shape_iou(&pred, &truth, &[0, 1]).unwrap();
        assert!((iou - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
        // a part absent from both counts as 1: part 4 never appears
        let iou = shape_iou(&[2, 3], &[2, 3], &[2, 3, 4]).unwrap();
        assert!((iou - 1.0).abs() < 1e-12);
        // predicted but absent from the truth counts as 0
        let iou = shape_iou(&[2, 4], &[2, 3], &[2, 3, 4]).unwrap();
        assert!((iou - (1.0 + 0.0 + 0.0) / 3.0).abs() < 1e-12);
        assert!(shape_iou(&[0], &[0, 1], &[0, 1]).is_err());
    }

    #[test]
    fn prediction_is_restricted_to_the_category() {
        // part 4 scores highest overall but belongs to the other category
        let scores = [0.1, 0.3, 0.0, 0.0, 0.9, 0.5, 0.2, 0.0, 0.0, 0.9];
        assert_eq!(predict_parts(&scores, 5, &[0, 1]).unwrap(), vec![1, 0]);
        assert_eq!(predict_parts(&scores, 5, &[2, 3, 4]).unwrap(), vec![4, 4]);
        assert!(predict_parts(&scores, 5, &[7]).is_err());
        assert!(predict_parts(&scores[..9], 5, &[0]).is_err());
        assert_eq!(restricted_argmax(&scores[..5], &[]), None);
        assert_eq!(restricted_argmax(&scores[..5], &[1, 9]), None);
        assert_eq!(restricted_argmax(&[0.5, 0.5], &[1, 0]), Some(1));
    }

    #[test]
    fn instance_and_class_miou_differ_when_categories_are_unbalanced() {
        let mut m = acc();
        m.add_predictions(0, &[0, 1], &[0, 1]).unwrap(); // 1.0
        m.add_predictions(0, &[0, 0], &[0, 1]).unwrap(); // (1/2 + 0)/2 = 0.25
        m.add_predictions(0, &[1, 1], &[1, 1]).unwrap(); // 1.0 (part 0 absent from both)
        m.add_predictions(1, &[3, 3], &[2, 2]).unwrap(); // 0, 0, 1 (part 4 absent) → 1/3
        let inst = (1.0 + 0.25 + 1.0 + 1.0 / 3.0) / 4.0;
        let class = ((1.0 + 0.25 + 1.0) / 3.0 + 1.0 / 3.0) / 2.0;
        assert!((m.instance_miou() - inst).abs() < 1e-12);
        assert!((m.class_miou() - class).abs() < 1e-12);
        assert!((m.point_accuracy() - 5.0 / 8.0).abs() < 1e-12);
        let table = m.per_category();
        assert_eq!(table[0].shapes, 3);
        assert_eq!(table[1].name, "b");
        assert_eq!(
            m.add_predictions(5, &[0], &[0]),
            Err(MiouError::UnknownCategory(5))
        );
    }

    #[test]
    fn absent_categories_are_left_out_of_the_class_mean() {
        let mut m = acc();
        m.add_predictions(1, &[2, 3], &[2, 4]).unwrap(); // 1, 0, 0 → 1/3
        assert_eq!(m.per_category()[0].miou, None);
        assert!((m.class_miou() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(MiouAccumulator::new(vec![], vec![]).class_miou(), 0.0);
    }
}
