//! Classification metrics: overall and mean class accuracy, confusion matrix.

use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    pub classes: usize,
    /// `[truth][prediction]` counts.
    pub counts: Vec<Vec<u64>>,
}

impl Confusion {
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![vec![0; classes]; classes],
        }
    }

    pub fn add(&mut self, truth: usize, pred: usize) {
        if truth < self.classes && pred < self.classes {
            self.counts[truth][pred] += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Fraction of correct predictions (0 when empty).
    pub fn overall_accuracy(&self) -> f64 {
        let t = self.total();
        if t == 0 {
            return 0.0;
        }
        (0..self.classes).map(|i| self.counts[i][i]).sum::<u64>() as f64 / t as f64
    }

    /// Per-class accuracy (recall); `None` for classes absent from the truth.
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        (0..self.classes)
            .map(|i| {
                let n: u64 = self.counts[i].iter().sum();
                (n > 0).then(|| self.counts[i][i] as f64 / n as f64)
            })
            .collect()
    }

    /// Mean of the per-class accuracies over the classes present in the truth.
    pub fn mean_class_accuracy(&self) -> f64 {
        let v: Vec<f64> = self.per_class_accuracy().into_iter().flatten().collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }
}

/// The `[truth][prediction]` counts of one batch as a `[classes, classes]` tensor on the
/// logits' device: `onehot(labels)ᵀ · onehot(argmax(logits))`, so a training step can
/// accumulate its confusion matrix without reading the logits back.
pub fn confusion_tensor(logits: Tensor<2>, labels: &[usize]) -> Tensor<2> {
    let [b, k] = logits.dims();
    let device = logits.device();
    let mut truth = vec![0f32; b * k];
    for (i, &l) in labels.iter().enumerate().take(b) {
        if l < k {
            truth[i * k + l] = 1.0;
        }
    }
    let truth = Tensor::<2>::from_data(TensorData::new(truth, [b, k]), &device);
    let classes = Tensor::<1, Int>::arange(0..k as i64, &device)
        .reshape([1, k])
        .expand([b, k]);
    let pred = logits.argmax(1).expand([b, k]).equal(classes).float();
    truth.transpose().matmul(pred)
}

impl Confusion {
    /// Adds a `[classes][classes]` count matrix read back from [`confusion_tensor`].
    pub fn add_counts(&mut self, counts: &[f32]) {
        let k = self.classes;
        for (t, row) in counts.chunks(k).take(k).enumerate() {
            for (p, &c) in row.iter().enumerate() {
                self.counts[t][p] += c.round().max(0.0) as u64;
            }
        }
    }
}

/// Probabilities from logits (max-subtracted for stability).
pub use crate::infer::classify::softmax;

pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracies_on_a_hand_made_case() {
        let mut c = Confusion::new(3);
        // class 0: 3 of 4 right; class 1: 1 of 1; class 2 absent
        for (t, p) in [(0, 0), (0, 0), (0, 0), (0, 1), (1, 1)] {
            c.add(t, p);
        }
        assert!((c.overall_accuracy() - 0.8).abs() < 1e-12);
        assert!((c.mean_class_accuracy() - 0.875).abs() < 1e-12);
        assert_eq!(c.per_class_accuracy()[2], None);
        assert_eq!(argmax(&[0.1, 0.7, 0.7]), 1);
    }
}
