//! Inference below training: what `dapt predict`, `dapt eval` and the viewer need to run a
//! trained model (test-time sampling, logits, scales, segmentation loading), with no
//! optimiser, run directory or schedule. `train` builds on it.

pub mod classify;
pub mod sampling;
pub mod segment;
