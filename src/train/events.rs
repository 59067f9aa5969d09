//! The typed event stream a training run emits; the CLI and the app both consume it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Metrics of one epoch of training or of one evaluation, as written to `metrics.jsonl`.
/// Accuracies are fractions in 0..=1.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// `"train"` or `"test"`.
    pub split: String,
    pub wall_secs: f64,
    pub lr: f64,
    pub loss: f64,
    pub overall_accuracy: f64,
    pub mean_class_accuracy: f64,
    /// Segmentation runs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_miou: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_miou: Option<f64>,
}

pub use crate::infer::classify::ScaleSnapshot;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CheckpointKind {
    Last,
    Best,
}

#[derive(Clone, Debug)]
pub enum TrainEvent {
    Started {
        run_dir: PathBuf,
        backend: String,
        start_epoch: usize,
        total_epochs: usize,
        steps_per_epoch: usize,
        trainable_params: usize,
        total_params: usize,
    },
    Step {
        epoch: usize,
        step: usize,
        steps_per_epoch: usize,
        loss: f64,
        /// Running training accuracy of the epoch so far (0..=1); `None` for pre-training.
        accuracy: Option<f64>,
        lr: f64,
        samples_per_sec: f64,
    },
    /// One line of `metrics.jsonl` (training epoch or evaluation).
    Metrics(EpochMetrics),
    TokenScales {
        epoch: usize,
        step: usize,
        snapshot: ScaleSnapshot,
    },
    CheckpointSaved {
        kind: CheckpointKind,
        path: PathBuf,
    },
    /// Stopped at a safe point because the stop flag was set; the last checkpoint is saved.
    Stopped {
        epoch: usize,
    },
    Finished {
        best_accuracy: f64,
        best_epoch: usize,
        run_dir: PathBuf,
    },
    Failed {
        message: String,
    },
    /// Something the user should know that is not an error (e.g. what a backbone load did).
    Note {
        message: String,
    },
}
