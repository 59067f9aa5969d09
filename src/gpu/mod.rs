//! Sampling kernels (farthest point sampling, k-nearest neighbours) in two twins: a CPU
//! reference with the official CUDA semantics and WGSL compute shaders run through wgpu.
//!
//! The GPU twins return exactly the CPU's indices (as `u32`), so either can be used anywhere;
//! the tests in `tests/gpu_sampling.rs` hold them to that.

pub mod context;
pub mod cpu;
pub mod fps;
pub mod knn;

pub use context::{GpuContext, GpuError};
pub use fps::fps_gpu;
pub use knn::{KNN_MAX_K, knn_gpu};
