//! Training and evaluation engine: the official recipe, run directories, checkpoints, resume,
//! and a typed event stream consumed by the CLI and the app.

use std::path::PathBuf;

pub mod batch;
pub mod classification;
pub mod config;
pub mod demo_backbone;
pub mod driver;
pub mod eval;
pub mod events;
pub mod metrics;
pub mod miou;
pub mod optim;
pub mod partseg;
pub mod pretrain;
pub mod recompute;
pub mod reconstruct;
pub mod run_dir;
pub mod schedule;

/// The classification task's module under its former name.
pub use self::classification as engine;
pub use classification::{RunSummary, run};
pub use config::{Mode, TrainConfig};
pub use events::{CheckpointKind, EpochMetrics, ScaleSnapshot, TrainEvent};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "epoch {epoch} could not be saved in {run_dir}; the epochs saved before it are intact \
         and `--resume` continues from them: {source}"
    )]
    Save {
        epoch: usize,
        run_dir: PathBuf,
        source: Box<TrainError>,
    },
    #[error(
        "training diverged: the loss became {loss} at epoch {epoch}, step {step}; the last good checkpoint is kept (try a lower --lr)"
    )]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
    },
}

impl TrainError {
    pub fn data(msg: impl Into<String>) -> Self {
        TrainError::Config(msg.into())
    }
}
