//! `model::norm`'s operations as CubeCL kernels.
//!
//! Without them, training on wgpu runs LayerNorm and TFTS as burn's ops: under autodiff each
//! LayerNorm is two reductions and ~9 element-wise launches forward, more backward, and each
//! TFTS's parameter gradients are a multiply and two reductions. Here:
//! - forward, LayerNorm or scale-and-shift: one launch, one workgroup per row, the row's mean
//!   and variance reduced in shared memory;
//! - LayerNorm's input gradient: one launch, the same shape;
//! - the parameters' gradients, `Σ g·x̂` and `Σ g` per column: one launch of per-chunk partial
//!   sums (adjacent threads read adjacent columns) and two sums of the partials; LayerNorm's
//!   adds one launch for the rows' statistics.
//!
//! The kernels take contiguous f32 rows; other dtypes use `model::norm`'s op formulas on this
//! backend.

use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::Tensor as Buffer;
use cubecl::prelude::*;

use super::{
    MAX_GROUPS, ROW_THREADS, block_sum, empty_like, fits_rows, row_grid, row_index, rows_and_width,
};
use crate::model::norm::LAYER_NORM_EPS;

/// Rows each thread of the column kernel sums.
const CHUNK_ROWS: usize = 64;

/// `(mean, 1/√(var + eps))` of row `base..base + n`, every thread of the workgroup taking part.
#[cube]
fn row_stats(x: &Buffer<f32>, base: usize, n: usize, scratch: &mut Shared<[f32]>) -> (f32, f32) {
    let tid = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    let mut acc = 0.0f32;
    let mut i = tid;
    while i < n {
        acc += x[base + i];
        i += threads;
    }
    let mean = block_sum(scratch, acc) / f32::cast_from(n);
    let mut sq = 0.0f32;
    let mut j = tid;
    while j < n {
        let d = x[base + j] - mean;
        sq += d * d;
        j += threads;
    }
    let var = block_sum(scratch, sq) / f32::cast_from(n);
    (mean, 1.0f32 / f32::sqrt(var + LAYER_NORM_EPS))
}

/// `out = (normalise ? x̂ : x)·scale + shift`, one workgroup per row.
#[cube(launch)]
fn affine_rows(
    x: &Buffer<f32>,
    scale: &Buffer<f32>,
    shift: &Buffer<f32>,
    out: &mut Buffer<f32>,
    rows: u32,
    n: u32,
    #[comptime] normalise: bool,
) {
    let row = row_index();
    if row >= rows as usize {
        terminate!();
    }
    let n = n as usize;
    let base = row * n;
    let mut scratch = Shared::<[f32]>::new_slice(ROW_THREADS as usize);
    let mut mean = 0.0f32;
    let mut rstd = 1.0f32;
    if normalise {
        let (m, r) = row_stats(x, base, n, &mut scratch);
        mean = m;
        rstd = r;
    }
    let mut i = UNIT_POS_X as usize;
    while i < n {
        out[base + i] = (x[base + i] - mean) * rstd * scale[i] + shift[i];
        i += CUBE_DIM_X as usize;
    }
}

/// LayerNorm's input gradient, `rstd·(gŝ − mean(gŝ) − x̂·mean(gŝ·x̂))`, one workgroup per row.
#[cube(launch)]
fn layer_norm_x_grad(
    x: &Buffer<f32>,
    scale: &Buffer<f32>,
    grad: &Buffer<f32>,
    out: &mut Buffer<f32>,
    rows: u32,
    n: u32,
) {
    let row = row_index();
    if row >= rows as usize {
        terminate!();
    }
    let n = n as usize;
    let base = row * n;
    let threads = CUBE_DIM_X as usize;
    let mut scratch = Shared::<[f32]>::new_slice(ROW_THREADS as usize);
    let (mean, rstd) = row_stats(x, base, n, &mut scratch);
    let mut gs = 0.0f32;
    let mut gsx = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < n {
        let g = grad[base + i] * scale[i];
        gs += g;
        gsx += g * (x[base + i] - mean) * rstd;
        i += threads;
    }
    let mean_gs = block_sum(&mut scratch, gs) / f32::cast_from(n);
    let mean_gsx = block_sum(&mut scratch, gsx) / f32::cast_from(n);
    let mut j = UNIT_POS_X as usize;
    while j < n {
        let xhat = (x[base + j] - mean) * rstd;
        out[base + j] = rstd * (grad[base + j] * scale[j] - mean_gs - xhat * mean_gsx);
        j += threads;
    }
}

/// Each row's `(mean, rstd)` into `stats` (`[rows, 2]`), one workgroup per row.
#[cube(launch)]
fn row_stats_kernel(x: &Buffer<f32>, stats: &mut Buffer<f32>, rows: u32, n: u32) {
    let row = row_index();
    if row >= rows as usize {
        terminate!();
    }
    let n = n as usize;
    let mut scratch = Shared::<[f32]>::new_slice(ROW_THREADS as usize);
    let (mean, rstd) = row_stats(x, row * n, n, &mut scratch);
    if UNIT_POS_X == 0 {
        stats[2 * row] = mean;
        stats[2 * row + 1] = rstd;
    }
}

/// Per chunk of `CHUNK_ROWS` rows and per column `j`: `Σ g·h(x)` into `sum_gx[chunk, j]` and
/// `Σ g` into `sum_g[chunk, j]`, where `h(x) = (x − mean)·rstd` from `stats` when
/// `normalise`, `x` otherwise.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn column_partials(
    x: &Buffer<f32>,
    grad: &Buffer<f32>,
    stats: &Buffer<f32>,
    sum_gx: &mut Buffer<f32>,
    sum_g: &mut Buffer<f32>,
    rows: u32,
    n: u32,
    #[comptime] normalise: bool,
) {
    let n = n as usize;
    let j = ABSOLUTE_POS_X as usize;
    let chunk = ABSOLUTE_POS_Y as usize;
    if j >= n {
        terminate!();
    }
    let first = chunk * CHUNK_ROWS;
    let mut end = first + CHUNK_ROWS;
    if end > rows as usize {
        end = rows as usize;
    }
    let mut gx = 0.0f32;
    let mut gsum = 0.0f32;
    let mut r = first;
    while r < end {
        let g = grad[r * n + j];
        let mut h = x[r * n + j];
        if normalise {
            h = (h - stats[2 * r]) * stats[2 * r + 1];
        }
        gx += g * h;
        gsum += g;
        r += 1;
    }
    sum_gx[chunk * n + j] = gx;
    sum_g[chunk * n + j] = gsum;
}

/// Whether the kernels take these tensors: f32, rows of the parameters' width, and sizes
/// that fit the kernels' 32-bit indices.
pub fn fits(x: &CubeTensor, params: &[&CubeTensor], grad: Option<&CubeTensor>) -> bool {
    let (rows, n) = rows_and_width(x);
    fits_rows(x)
        && params
            .iter()
            .all(|p| p.dtype == DType::F32 && p.shape().num_elements() == n)
        && grad.is_none_or(|g| g.dtype == DType::F32 && g.shape() == x.shape())
        && rows.div_ceil(CHUNK_ROWS) <= MAX_GROUPS as usize
}

/// LayerNorm (`normalise`) or scale-and-shift of the rows of `x`.
pub fn affine(x: CubeTensor, scale: CubeTensor, shift: CubeTensor, normalise: bool) -> CubeTensor {
    let (x, scale, shift) = (
        into_contiguous(x),
        into_contiguous(scale),
        into_contiguous(shift),
    );
    let (rows, n) = rows_and_width(&x);
    let out = empty_like(&x, x.shape());
    affine_rows::launch(
        &x.client.clone(),
        row_grid(rows),
        CubeDim::new_1d(ROW_THREADS),
        x.into_tensor_arg(),
        scale.into_tensor_arg(),
        shift.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows as u32,
        n as u32,
        normalise,
    );
    out
}

/// LayerNorm's input gradient.
pub fn layer_norm_x_backward(x: CubeTensor, scale: CubeTensor, grad: CubeTensor) -> CubeTensor {
    let (x, scale, grad) = (
        into_contiguous(x),
        into_contiguous(scale),
        into_contiguous(grad),
    );
    let (rows, n) = rows_and_width(&x);
    let out = empty_like(&x, x.shape());
    layer_norm_x_grad::launch(
        &x.client.clone(),
        row_grid(rows),
        CubeDim::new_1d(ROW_THREADS),
        x.into_tensor_arg(),
        scale.into_tensor_arg(),
        grad.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows as u32,
        n as u32,
    );
    out
}

/// `(Σ g·x̂, Σ g)` (`normalise`) or `(Σ g·x, Σ g)` over every row, as two `[n]` tensors.
pub fn param_backward(
    x: CubeTensor,
    grad: CubeTensor,
    normalise: bool,
) -> (CubeTensor, CubeTensor) {
    let (x, grad) = (into_contiguous(x), into_contiguous(grad));
    let (rows, n) = rows_and_width(&x);
    let client = x.client.clone();
    let stats = if normalise {
        let stats = empty_like(&x, Shape::new([rows, 2]));
        row_stats_kernel::launch(
            &client,
            row_grid(rows),
            CubeDim::new_1d(ROW_THREADS),
            x.clone().into_tensor_arg(),
            stats.clone().into_tensor_arg(),
            rows as u32,
            n as u32,
        );
        stats
    } else {
        // never read (the kernel only reads `stats` when normalising): binds the input again
        // rather than allocating a buffer per call, as `cube::softmax`'s forward does
        x.clone()
    };
    let chunks = rows.div_ceil(CHUNK_ROWS);
    let sum_gx = empty_like(&x, Shape::new([chunks, n]));
    let sum_g = empty_like(&x, Shape::new([chunks, n]));
    let threads = 64u32;
    column_partials::launch(
        &client,
        CubeCount::Static((n as u32).div_ceil(threads), chunks as u32, 1),
        CubeDim::new_1d(threads),
        x.into_tensor_arg(),
        grad.into_tensor_arg(),
        stats.into_tensor_arg(),
        sum_gx.clone().into_tensor_arg(),
        sum_g.clone().into_tensor_arg(),
        rows as u32,
        n as u32,
        normalise,
    );
    let total = |partial: CubeTensor| {
        CubeBackend::float_reshape(CubeBackend::float_sum_dim(partial, 0), Shape::new([n]))
    };
    (total(sum_gx), total(sum_g))
}
