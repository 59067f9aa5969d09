//! Training and evaluation engine: the official recipe, run directories, checkpoints, resume,
//! and a typed event stream consumed by the CLI and the app.

pub mod events;

pub use events::{CheckpointKind, EpochMetrics, ScaleSnapshot, TrainEvent};
