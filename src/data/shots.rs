//! Few-shot training splits: K labelled shapes per class out of a data set's training split.
//!
//! This is how a user with many unlabelled scans and a handful of labels works (pre-train on
//! everything, fine-tune on the few), and how a pre-trained backbone's value shows: the fewer
//! the labels, the more the backbone's features have to carry. The shapes are drawn with a
//! seed so that runs compared against each other (pre-trained vs random backbone, DAPT vs
//! full fine-tuning) see the same K shapes, and different seeds see different draws.

use super::{Dataset, Rng};

/// Why a few-shot split cannot be drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShotsError {
    #[error("--shots must be at least 1")]
    Zero,
}

/// A class that has fewer training shapes than the shots asked for; it is used whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortClass {
    pub name: String,
    pub shapes: usize,
}

/// Domain-separation constant: the draw must not repeat the stream the run's seed also feeds
/// into augmentation and initialisation.
const SHOTS_STREAM: u64 = 0x5805_7a11_d0c5_0001;

impl Dataset {
    /// Keeps at most `k` training shapes of every class, drawn with `seed`, in their original
    /// order; the test split is untouched. Real data sets are unbalanced (a class with 4
    /// shapes next to one with 50), so a class with fewer than `k` is kept whole rather than
    /// refused; those classes are returned so the caller can say so.
    pub fn keep_shots(&mut self, k: usize, seed: u64) -> Result<Vec<ShortClass>, ShotsError> {
        if k == 0 {
            return Err(ShotsError::Zero);
        }
        let classes = self.num_classes().max(
            self.train
                .iter()
                .map(|s| s.label + 1)
                .max()
                .unwrap_or_default(),
        );
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, s) in self.train.iter().enumerate() {
            by_class[s.label].push(i);
        }
        let mut rng = Rng::new(seed ^ SHOTS_STREAM);
        let mut keep = vec![false; self.train.len()];
        let mut short = Vec::new();
        for (label, members) in by_class.iter().enumerate() {
            if members.len() < k {
                short.push(ShortClass {
                    name: self
                        .class_names
                        .get(label)
                        .cloned()
                        .unwrap_or_else(|| format!("#{label}")),
                    shapes: members.len(),
                });
            }
            for j in rng.choose_distinct(members.len(), k) {
                keep[members[j]] = true;
            }
        }
        let mut keep = keep.into_iter();
        self.train.retain(|_| keep.next().unwrap_or(false));
        Ok(short)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SyntheticConfig;

    fn set() -> Dataset {
        Dataset::synthetic(&SyntheticConfig {
            train_per_class: 6,
            test_per_class: 2,
            points: 64,
            ..SyntheticConfig::default()
        })
    }

    fn train_points(d: &Dataset) -> Vec<(usize, Vec<[f32; 3]>)> {
        d.train
            .iter()
            .map(|s| match &s.source {
                crate::data::SampleSource::Memory(c) => (s.label, c.positions.clone()),
                crate::data::SampleSource::File(_) => unreachable!("synthetic is in memory"),
            })
            .collect()
    }

    #[test]
    fn keeps_k_per_class_and_the_whole_test_split() {
        let mut d = set();
        let all = train_points(&d);
        d.keep_shots(2, 7).unwrap();
        assert_eq!(d.train.len(), 2 * d.num_classes());
        assert_eq!(d.test.len(), 2 * d.num_classes());
        for c in 0..d.num_classes() {
            assert_eq!(d.train.iter().filter(|s| s.label == c).count(), 2);
        }
        // kept shapes are shapes of the original split, still in its order
        let kept = train_points(&d);
        let positions: Vec<usize> = kept
            .iter()
            .map(|k| all.iter().position(|a| a == k).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    }

    #[test]
    fn the_seed_decides_the_draw() {
        let draw = |seed| {
            let mut d = set();
            d.keep_shots(3, seed).unwrap();
            train_points(&d)
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn a_class_with_fewer_shapes_is_kept_whole_and_reported() {
        let mut d = set();
        // sphere loses 4 of its 6 shapes; then K = 3 leaves it short
        d.train.retain({
            let mut spheres = 0;
            move |s| {
                spheres += usize::from(s.label == 0);
                s.label != 0 || spheres <= 2
            }
        });
        let short = d.keep_shots(3, 0).unwrap();
        assert_eq!(
            short,
            vec![ShortClass {
                name: "sphere".into(),
                shapes: 2
            }]
        );
        assert_eq!(d.train.iter().filter(|s| s.label == 0).count(), 2);
        assert_eq!(d.train.len(), 2 + 3 * (d.num_classes() - 1));
        assert_eq!(d.keep_shots(0, 0), Err(ShotsError::Zero));
    }
}
