//! DAPT Studio: DAPT (Dynamic Adapter meets Prompt Tuning, CVPR 2024) fine-tuning of
//! pretrained Point-MAE point-cloud transformers, on wgpu GPUs and on the CPU.
//!
//! Layers (dependencies point down only): `cli`/`app` → `train` → `infer` → `model` → `gpu` → `data`.
//! `render` is the standalone wgpu point renderer used by `app`.

pub mod app;
pub mod atomic_file;
pub mod backend;
pub mod cli;
pub mod data;
pub mod gpu;
pub mod heap;
pub mod infer;
pub mod launches;
pub mod model;
pub mod phases;
pub mod readback;
pub mod render;
pub mod train;
