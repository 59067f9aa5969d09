//! timm `CosineLRScheduler` stepped once per epoch, as the official recipe uses it
//! (dapt-spec.md §7): linear warm-up from `warmup_lr_init`, cosine to `min_lr`, and the
//! one-epoch lag of `scheduler.step(epoch)` being called at the end of each epoch.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    pub base_lr: f64,
    pub min_lr: f64,
    pub warmup_lr_init: f64,
    pub warmup_epochs: usize,
    /// `t_initial`: the cosine period in epochs.
    pub t_initial: usize,
}

impl CosineSchedule {
    /// The official fine-tuning recipe for `epochs` epochs.
    pub fn official(base_lr: f64, epochs: usize, warmup_epochs: usize) -> Self {
        Self {
            base_lr,
            min_lr: 1e-6,
            warmup_lr_init: 1e-6,
            warmup_epochs,
            t_initial: epochs.max(1),
        }
    }

    /// timm's value for scheduler time `t`.
    pub fn at(&self, t: usize) -> f64 {
        if t < self.warmup_epochs {
            let step = (self.base_lr - self.warmup_lr_init) / self.warmup_epochs as f64;
            return self.warmup_lr_init + t as f64 * step;
        }
        if t >= self.t_initial {
            return self.min_lr;
        }
        let frac = t as f64 / self.t_initial as f64;
        self.min_lr
            + 0.5 * (self.base_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * frac).cos())
    }

    /// The learning rate actually used during epoch `e` (0-based): the value set by
    /// `step(e - 1)` at the end of the previous epoch, and the warm-up start for epoch 0.
    pub fn lr_for_epoch(&self, e: usize) -> f64 {
        self.at(e.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_values_of_the_official_recipe() {
        let s = CosineSchedule::official(5e-4, 300, 10);
        let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol;
        assert_eq!(s.lr_for_epoch(0), 1e-6);
        assert_eq!(s.lr_for_epoch(1), 1e-6);
        assert!(close(s.lr_for_epoch(2), 5.09e-5, 1e-7));
        assert!(close(s.lr_for_epoch(10), 4.50e-4, 1e-6));
        assert!(close(s.lr_for_epoch(11), 4.99e-4, 1e-6));
        assert!(close(s.lr_for_epoch(150), 2.53e-4, 1e-6));
        assert!(close(s.lr_for_epoch(299), 1.06e-6, 1e-8));
        assert_eq!(s.at(300), 1e-6);
    }
}
