//! `model::attention`'s attention core as CubeCL kernels: q, k and v read in place from the
//! qkv rows `[b, t, 3c]`, the output written as `[b, t, c]`, the gradient as `[b, t, 3c]`.
//!
//! One workgroup per query row `(b, h, i)` computes the row's scores, its softmax (reduced in
//! shared memory) and `P·v` for the row; the probabilities go through a `[b·h·t, t]` scratch
//! buffer, the size of the scores burn's own path materialises. Backward is two launches: per
//! query row, `P`, `dS = P ⊙ (dP − Σ dP ⊙ P)` (kept in scratch) and `dq = dS·k/√dh`; then per
//! key row, `dk = dSᵀ·q/√dh` and `dv = Pᵀ·dO`, each into its own columns of the gradient.

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use cubecl::prelude::Tensor as Buffer;
use cubecl::prelude::*;

use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use super::{ROW_THREADS, block_max, block_sum, empty_like, row_grid, row_index};

/// The sizes a kernel needs, as launch scalars.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    c: usize,
    heads: usize,
}

impl Dims {
    fn of(qkv: &CubeTensor, heads: usize) -> Option<Self> {
        let shape = qkv.shape();
        if shape.num_dims() != 3 || heads == 0 {
            return None;
        }
        let (b, t, c3) = (shape[0], shape[1], shape[2]);
        (t > 0 && b > 0 && c3 > 0 && c3 % (3 * heads) == 0).then_some(Self {
            b,
            t,
            c: c3 / 3,
            heads,
        })
    }

    fn rows(&self) -> usize {
        self.b * self.heads * self.t
    }
}

/// Whether the kernels take `qkv` split into `heads`: f32 `[b, t, 3c]`, and every index (the
/// `[b·h·t, t]` scratch's included) within 32 bits.
pub fn fits(qkv: &CubeTensor, heads: usize) -> bool {
    Dims::of(qkv, heads).is_some_and(|d| {
        qkv.dtype == DType::F32
            && d.rows()
                .checked_mul(d.t)
                .is_some_and(|n| n < u32::MAX as usize)
            && (d.b * d.t)
                .checked_mul(3 * d.c)
                .is_some_and(|n| n < u32::MAX as usize)
            && d.rows() <= (super::MAX_GROUPS as usize) * (super::MAX_GROUPS as usize)
    })
}

/// The query row this workgroup owns: `(row, sample, head, token)`.
#[cube]
fn query_row(t: usize, heads: usize) -> (usize, usize, usize, usize) {
    let row = row_index();
    let i = row % t;
    let bh = row / t;
    (row, bh / heads, bh % heads, i)
}

/// `p[row, ·] = softmax(q_i·kᵀ·scale)` for one query row, every thread taking part; `qi` and
/// `kbase` are the offsets of `q_i` and of token 0's k in qkv.
#[cube]
#[allow(clippy::too_many_arguments)]
fn probabilities(
    qkv: &Buffer<f32>,
    p: &mut Buffer<f32>,
    prow: usize,
    qi: usize,
    kbase: usize,
    t: usize,
    c3: usize,
    dh: usize,
    scale: f32,
    scratch: &mut Shared<[f32]>,
) {
    let threads = CUBE_DIM_X as usize;
    // WGSL has no infinite literal: the most negative finite f32 stands in
    let mut m = f32::new(-3.4e38);
    let mut j = UNIT_POS_X as usize;
    while j < t {
        let kj = kbase + j * c3;
        let mut dot = 0.0f32;
        for d in 0..dh {
            dot += qkv[qi + d] * qkv[kj + d];
        }
        let s = dot * scale;
        p[prow + j] = s;
        m = f32::max(m, s);
        j += threads;
    }
    let max = block_max(scratch, m);
    let mut acc = 0.0f32;
    let mut j2 = UNIT_POS_X as usize;
    while j2 < t {
        let e = f32::exp(p[prow + j2] - max);
        p[prow + j2] = e;
        acc += e;
        j2 += threads;
    }
    let inv = 1.0f32 / block_sum(scratch, acc);
    let mut j3 = UNIT_POS_X as usize;
    while j3 < t {
        p[prow + j3] *= inv;
        j3 += threads;
    }
    // every thread's entries of the row (storage, not shared memory), visible to all
    sync_storage();
}

/// The query row this workgroup owns, its probabilities computed into `p`:
/// `(sample, head, token, offset of the row in p)`.
#[cube]
fn query_probabilities(
    qkv: &Buffer<f32>,
    p: &mut Buffer<f32>,
    t: usize,
    c: usize,
    heads: usize,
    scale: f32,
    scratch: &mut Shared<[f32]>,
) -> (usize, usize, usize, usize) {
    let dh = c / heads;
    let c3 = 3 * c;
    let (row, b, h, i) = query_row(t, heads);
    let base = b * t * c3;
    let prow = row * t;
    probabilities(
        qkv,
        p,
        prow,
        base + i * c3 + h * dh,
        base + c + h * dh,
        t,
        c3,
        dh,
        scale,
        scratch,
    );
    (b, h, i, prow)
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn attention_forward(
    qkv: &Buffer<f32>,
    p: &mut Buffer<f32>,
    out: &mut Buffer<f32>,
    rows: u32,
    t: u32,
    c: u32,
    heads: u32,
    scale: f32,
) {
    if row_index() >= rows as usize {
        terminate!();
    }
    let (t, c, heads) = (t as usize, c as usize, heads as usize);
    let dh = c / heads;
    let c3 = 3 * c;
    let mut scratch = Shared::<[f32]>::new_slice(ROW_THREADS as usize);
    let (b, h, i, prow) = query_probabilities(qkv, p, t, c, heads, scale, &mut scratch);
    let base = b * t * c3;
    let vbase = base + 2 * c + h * dh;
    let mut d = UNIT_POS_X as usize;
    while d < dh {
        let mut acc = 0.0f32;
        for j in 0..t {
            acc += p[prow + j] * qkv[vbase + j * c3 + d];
        }
        out[(b * t + i) * c + h * dh + d] = acc;
        d += CUBE_DIM_X as usize;
    }
}

/// Per query row: `P` and `dS` into scratch, `dq` into the gradient.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn attention_backward_queries(
    qkv: &Buffer<f32>,
    dout: &Buffer<f32>,
    p: &mut Buffer<f32>,
    ds: &mut Buffer<f32>,
    dqkv: &mut Buffer<f32>,
    rows: u32,
    t: u32,
    c: u32,
    heads: u32,
    scale: f32,
) {
    if row_index() >= rows as usize {
        terminate!();
    }
    let (t, c, heads) = (t as usize, c as usize, heads as usize);
    let dh = c / heads;
    let c3 = 3 * c;
    let threads = CUBE_DIM_X as usize;
    let mut scratch = Shared::<[f32]>::new_slice(ROW_THREADS as usize);
    let (b, h, i, prow) = query_probabilities(qkv, p, t, c, heads, scale, &mut scratch);
    let base = b * t * c3;
    // dP_j = dO_i·v_j, then Σ_j P_j·dP_j
    let orow = (b * t + i) * c + h * dh;
    let vbase = base + 2 * c + h * dh;
    let mut dot = 0.0f32;
    let mut j = UNIT_POS_X as usize;
    while j < t {
        let mut dp = 0.0f32;
        for d in 0..dh {
            dp += dout[orow + d] * qkv[vbase + j * c3 + d];
        }
        ds[prow + j] = dp;
        dot += dp * p[prow + j];
        j += threads;
    }
    let total = block_sum(&mut scratch, dot);
    let mut j2 = UNIT_POS_X as usize;
    while j2 < t {
        ds[prow + j2] = p[prow + j2] * (ds[prow + j2] - total);
        j2 += threads;
    }
    sync_storage();
    let kbase = base + c + h * dh;
    let mut d2 = UNIT_POS_X as usize;
    while d2 < dh {
        let mut acc = 0.0f32;
        for j3 in 0..t {
            acc += ds[prow + j3] * qkv[kbase + j3 * c3 + d2];
        }
        dqkv[base + i * c3 + h * dh + d2] = acc * scale;
        d2 += threads;
    }
}

/// Per key row `(b, h, j)`: `dk_j = Σ_i dS_ij·q_i·scale` and `dv_j = Σ_i P_ij·dO_i`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn attention_backward_keys(
    qkv: &Buffer<f32>,
    dout: &Buffer<f32>,
    p: &Buffer<f32>,
    ds: &Buffer<f32>,
    dqkv: &mut Buffer<f32>,
    rows: u32,
    t: u32,
    c: u32,
    heads: u32,
    scale: f32,
) {
    if row_index() >= rows as usize {
        terminate!();
    }
    let (t, c, heads) = (t as usize, c as usize, heads as usize);
    let dh = c / heads;
    let c3 = 3 * c;
    let (_, b, h, j) = query_row(t, heads);
    let base = b * t * c3;
    // the first query row of this (sample, head) in the scratch buffers
    let first = ((b * heads + h) * t) * t;
    let mut d = UNIT_POS_X as usize;
    while d < dh {
        let mut dk = 0.0f32;
        let mut dv = 0.0f32;
        for i in 0..t {
            let at = first + i * t + j;
            dk += ds[at] * qkv[base + i * c3 + h * dh + d];
            dv += p[at] * dout[(b * t + i) * c + h * dh + d];
        }
        dqkv[base + j * c3 + c + h * dh + d] = dk * scale;
        dqkv[base + j * c3 + 2 * c + h * dh + d] = dv;
        d += CUBE_DIM_X as usize;
    }
}

fn scale_of(d: &Dims) -> f32 {
    ((d.c / d.heads) as f32).powf(-0.5)
}

/// The attention core of `qkv` (see [`fits`]).
pub fn forward(qkv: CubeTensor, heads: usize) -> Option<CubeTensor> {
    let qkv = into_contiguous(qkv);
    let d = Dims::of(&qkv, heads)?;
    let p = empty_like(&qkv, Shape::new([d.rows(), d.t]));
    let out = empty_like(&qkv, Shape::new([d.b, d.t, d.c]));
    attention_forward::launch(
        &qkv.client.clone(),
        row_grid(d.rows()),
        CubeDim::new_1d(ROW_THREADS),
        qkv.into_tensor_arg(),
        p.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        d.rows() as u32,
        d.t as u32,
        d.c as u32,
        d.heads as u32,
        scale_of(&d),
    );
    Some(out)
}

/// The gradient of `qkv` given the output's gradient `grad` (`[b, t, c]`).
pub fn backward(qkv: CubeTensor, grad: CubeTensor, heads: usize) -> Option<CubeTensor> {
    let (qkv, grad) = (into_contiguous(qkv), into_contiguous(grad));
    let d = Dims::of(&qkv, heads)?;
    if grad.dtype != DType::F32 || grad.shape() != Shape::new([d.b, d.t, d.c]) {
        return None;
    }
    let client = qkv.client.clone();
    let p = empty_like(&qkv, Shape::new([d.rows(), d.t]));
    let ds = empty_like(&qkv, Shape::new([d.rows(), d.t]));
    let dqkv = empty_like(&qkv, qkv.shape());
    let (rows, t, c, h) = (d.rows() as u32, d.t as u32, d.c as u32, d.heads as u32);
    attention_backward_queries::launch(
        &client,
        row_grid(d.rows()),
        CubeDim::new_1d(ROW_THREADS),
        qkv.clone().into_tensor_arg(),
        grad.clone().into_tensor_arg(),
        p.clone().into_tensor_arg(),
        ds.clone().into_tensor_arg(),
        dqkv.clone().into_tensor_arg(),
        rows,
        t,
        c,
        h,
        scale_of(&d),
    );
    attention_backward_keys::launch(
        &client,
        row_grid(d.rows()),
        CubeDim::new_1d(ROW_THREADS),
        qkv.into_tensor_arg(),
        grad.into_tensor_arg(),
        p.into_tensor_arg(),
        ds.into_tensor_arg(),
        dqkv.clone().into_tensor_arg(),
        rows,
        t,
        c,
        h,
        scale_of(&d),
    );
    Some(dqkv)
}
