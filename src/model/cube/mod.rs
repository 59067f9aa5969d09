//! The model's backend extensions as CubeCL kernels, for every cubecl runtime (wgpu here:
//! Vulkan, Metal, DX12, or Mesa's lavapipe): `norm` for `model::norm` (LayerNorm, TFTS),
//! `softmax` for `model::softmax`, `attention` for `model::attention`, `grouping` for
//! `model::grouping::select` (FPS, kNN). Each is what `CubeBackend` runs for the extension's
//! operation; under burn's fusion each is one opaque operation in the fused stream.
//!
//! The row kernels give each row one workgroup of [`ROW_THREADS`] threads, which stride over
//! the row and reduce through shared memory. They take contiguous f32 rows with 32-bit
//! indices; the extensions fall back to burn's ops for anything else.

pub mod attention;
pub mod grouping;
pub mod norm;
pub mod softmax;

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Threads per row in the row kernels: a power of two (the shared-memory reduction halves it).
const ROW_THREADS: u32 = 64;
/// Workgroups per grid dimension (WebGPU's guaranteed minimum).
const MAX_GROUPS: u32 = 65_535;

/// Sum (or with `max` the largest) of every thread's `value` in the workgroup, through
/// `scratch` (one slot per thread); every thread gets the result.
#[cube]
fn block_reduce(scratch: &mut Shared<[f32]>, value: f32, #[comptime] max: bool) -> f32 {
    let tid = UNIT_POS_X as usize;
    scratch[tid] = value;
    sync_cube();
    let mut stride = (CUBE_DIM_X / 2) as usize;
    while stride > 0 {
        if tid < stride {
            if max {
                scratch[tid] = f32::max(scratch[tid], scratch[tid + stride]);
            } else {
                scratch[tid] += scratch[tid + stride];
            }
        }
        sync_cube();
        stride /= 2;
    }
    let total = scratch[0];
    // nobody may overwrite slot 0 before everyone has read it
    sync_cube();
    total
}

/// [`block_reduce`]'s sum.
#[cube]
fn block_sum(scratch: &mut Shared<[f32]>, value: f32) -> f32 {
    block_reduce(scratch, value, false)
}

/// [`block_reduce`]'s maximum.
#[cube]
fn block_max(scratch: &mut Shared<[f32]>, value: f32) -> f32 {
    block_reduce(scratch, value, true)
}

/// The row this workgroup owns (the grid may be two-dimensional for many rows).
#[cube]
fn row_index() -> usize {
    (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize
}

/// A grid of one workgroup per row.
fn row_grid(rows: usize) -> CubeCount {
    let rows = rows as u32;
    let x = rows.min(MAX_GROUPS);
    CubeCount::Static(x, rows.div_ceil(x), 1)
}

/// `(rows, n)` of a contiguous `[…, n]` tensor.
fn rows_and_width(t: &CubeTensor) -> (usize, usize) {
    let shape = t.shape();
    let n = shape.last().copied().unwrap_or(1).max(1);
    (shape.num_elements() / n, n)
}

/// Whether a row kernel takes `x`: f32, at least one row, and every index within 32 bits.
pub fn fits_rows(x: &CubeTensor) -> bool {
    let (rows, n) = rows_and_width(x);
    x.dtype == DType::F32 && rows > 0 && rows * n < u32::MAX as usize
}

fn empty_like(t: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_dtype(t.client.clone(), t.device.clone(), shape, DType::F32)
}
