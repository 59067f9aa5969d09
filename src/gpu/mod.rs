//! Sampling kernels (farthest point sampling, k-nearest neighbours) in two twins: a CPU
//! reference with the official CUDA semantics and WGSL compute shaders run through wgpu.

pub mod cpu;
