//! `model::softmax`'s last-dimension softmax and its gradient as CubeCL kernels.
//!
//! Under autodiff burn differentiates softmax as max, subtract, `exp`, sum and divide, each an
//! operation of its own with its own backward, and keeps their outputs for the backward pass.
//! Here the forward is one launch (one workgroup per row: the row's maximum and sum reduced in
//! shared memory) and the backward one launch that recomputes `y` from the input and writes
//! `y·(g − Σ g·y)`.

use cubecl::prelude::Tensor as Buffer;
use cubecl::prelude::*;

use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use super::{ROW_THREADS, block_max, block_sum, empty_like, row_grid, row_index, rows_and_width};

/// `(max, Σ exp(x − max))` of row `base..base + n`, every thread of the workgroup taking part.
#[cube]
fn row_max_sum(x: &Buffer<f32>, base: usize, n: usize, scratch: &mut Shared<[f32]>) -> (f32, f32) {
    let tid = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    // WGSL has no infinite literal: start from the row's first value
    let mut m = x[base];
    let mut i = tid;
    while i < n {
        m = f32::max(m, x[base + i]);
        i += threads;
    }
    let max = block_max(scratch, m);
    let mut s = 0.0f32;
    let mut j = tid;
    while j < n {
        s += f32::exp(x[base + j] - max);
        j += threads;
    }
    (max, block_sum(scratch, s))
}

/// `out = softmax(x)` per row, or with `backward` its input gradient `y·(g − Σ g·y)`.
#[cube(launch)]
fn softmax_rows(
    x: &Buffer<f32>,
    grad: &Buffer<f32>,
    out: &mut Buffer<f32>,
    rows: u32,
    n: u32,
    #[comptime] backward: bool,
) {
    let row = row_index();
    if row >= rows as usize {
        terminate!();
    }
    let n = n as usize;
    let base = row * n;
    let threads = CUBE_DIM_X as usize;
    let mut scratch = Shared::<[f32]>::new_slice(ROW_THREADS as usize);
    let (max, sum) = row_max_sum(x, base, n, &mut scratch);
    let inv = 1.0f32 / sum;
    let mut dot = 0.0f32;
    if backward {
        let mut d = 0.0f32;
        let mut i = UNIT_POS_X as usize;
        while i < n {
            d += grad[base + i] * f32::exp(x[base + i] - max) * inv;
            i += threads;
        }
        dot = block_sum(&mut scratch, d);
    }
    let mut j = UNIT_POS_X as usize;
    while j < n {
        let y = f32::exp(x[base + j] - max) * inv;
        if backward {
            out[base + j] = y * (grad[base + j] - dot);
        } else {
            out[base + j] = y;
        }
        j += threads;
    }
}

fn launch(x: CubeTensor, grad: Option<CubeTensor>) -> CubeTensor {
    let x = into_contiguous(x);
    let (rows, n) = rows_and_width(&x);
    let out = empty_like(&x, x.meta.shape().clone());
    let backward = grad.is_some();
    // the forward never reads `grad`: it binds the input a second time
    let grad = grad.map(into_contiguous).unwrap_or_else(|| x.clone());
    softmax_rows::launch(
        &x.client.clone(),
        row_grid(rows),
        CubeDim::new_1d(ROW_THREADS),
        x.into_tensor_arg(),
        grad.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows as u32,
        n as u32,
        backward,
    );
    out
}

/// Softmax over the last dimension of contiguous-able f32 rows (see [`super::fits_rows`]).
pub fn forward(x: CubeTensor) -> CubeTensor {
    launch(x, None)
}

/// The input's gradient of [`forward`], given the input and the output's gradient (same
/// shape).
pub fn backward(x: CubeTensor, grad: CubeTensor) -> CubeTensor {
    launch(x, Some(grad))
}
