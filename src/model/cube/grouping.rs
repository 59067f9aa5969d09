//! Farthest point sampling and k-nearest-neighbour selection as CubeCL kernels, one launch
//! each, for `model::grouping::select`.
//!
//! burn's arg-max and arg-min (without autotune, cubek-reduce's `Unit` routine) give each
//! output one thread that loops over the whole reduced axis, so FPS written in tensor ops ran
//! `m - 1` rounds of a gather, an element-wise kernel and an arg-max with one thread per cloud,
//! and kNN `k` rounds of an arg-min and a mask. Here:
//!
//! - FPS gives each cloud one workgroup of [`FPS_THREADS`] threads that runs every round: each
//!   thread keeps the running minimum distance of its points in a scratch buffer and proposes
//!   its best, and the workgroup picks the winner in shared memory (the official kernel's
//!   design, with 512 threads there);
//! - kNN gives each query one workgroup of [`ROW_THREADS`] threads and selects the `k` nearest
//!   in `k` rounds, each taking the smallest `(distance, index)` after the previous pick, so it
//!   needs no scratch: distances are recomputed, bit for bit the same each round.
//!
//! Both keep the CPU kernels' rules (`gpu::cpu`): distances `dx*dx + dy*dy + dz*dz` in the
//! CPU's order, FPS's `|p|² <= 1e-3` points scored -1 (never updated, picked only when nothing
//! else is), ties to the lowest index. Indices are written as i32.

use cubecl::prelude::Tensor as Buffer;
use cubecl::prelude::*;

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::{ROW_THREADS, row_grid, row_index};
use crate::gpu::cpu::FPS_ORIGIN_EPS;

/// Threads per cloud in the FPS kernel: a power of two, WebGPU's guaranteed workgroup limit.
const FPS_THREADS: u32 = 256;

/// Whether `(v1, i1)` comes before `(v2, i2)`: the larger value (with `min`, the smaller), the
/// lower index on equal values. The index `none` marks an empty slot, which every candidate
/// beats and which beats nothing.
#[cube]
fn beats(v1: f32, i1: u32, v2: f32, i2: u32, none: u32, #[comptime] min: bool) -> bool {
    let mut first = false;
    if i1 != none {
        if i2 == none {
            first = true;
        } else {
            let mut strictly = v1 > v2;
            if min {
                strictly = v1 < v2;
            }
            first = strictly || (v1 == v2 && i1 < i2);
        }
    }
    first
}

/// The workgroup's best `(value, index)` of every thread's candidate, by [`beats`]; every
/// thread gets it.
#[cube]
fn block_best(
    vals: &mut Shared<[f32]>,
    idxs: &mut Shared<[u32]>,
    value: f32,
    index: u32,
    none: u32,
    #[comptime] min: bool,
) -> (f32, u32) {
    let tid = UNIT_POS_X as usize;
    vals[tid] = value;
    idxs[tid] = index;
    sync_cube();
    let mut stride = (CUBE_DIM_X / 2) as usize;
    while stride > 0 {
        if tid < stride {
            let v = vals[tid + stride];
            let i = idxs[tid + stride];
            if beats(v, i, vals[tid], idxs[tid], none, min) {
                vals[tid] = v;
                idxs[tid] = i;
            }
        }
        sync_cube();
        stride /= 2;
    }
    let best = (vals[0], idxs[0]);
    // nobody may overwrite slot 0 before everyone has read it
    sync_cube();
    best
}

/// FPS of `m` indices for each cloud of `points` (`[b, n, 3]`, one workgroup per cloud);
/// `temp` (`[b, n]`) holds each point's running minimum distance, -1 for ineligible points.
#[cube(launch)]
fn fps_kernel(
    points: &Buffer<f32>,
    temp: &mut Buffer<f32>,
    out: &mut Buffer<i32>,
    n: u32,
    m: u32,
    eps: f32,
) {
    let cloud = CUBE_POS_X as usize;
    let none = n;
    let n = n as usize;
    let m = m as usize;
    let tid = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    let base = cloud * n;
    let mut vals = Shared::<[f32]>::new_slice(FPS_THREADS as usize);
    let mut idxs = Shared::<[u32]>::new_slice(FPS_THREADS as usize);
    let mut i = tid;
    while i < n {
        let p = (base + i) * 3;
        let (x, y, z) = (points[p], points[p + 1], points[p + 2]);
        if x * x + y * y + z * z > eps {
            temp[base + i] = f32::new(1e10);
        } else {
            temp[base + i] = f32::new(-1.0);
        }
        i += threads;
    }
    if tid == 0 {
        out[cloud * m] = 0;
    }
    let mut last = 0usize;
    let mut j = 1usize;
    while j < m {
        let lp = (base + last) * 3;
        let (x0, y0, z0) = (points[lp], points[lp + 1], points[lp + 2]);
        let mut best = f32::new(-2.0);
        let mut best_i = none;
        let mut i = tid;
        while i < n {
            let t = temp[base + i];
            let mut score = t;
            // eligible points hold a distance (>= 0), the others -1
            if t >= 0.0 {
                let p = (base + i) * 3;
                let dx = points[p] - x0;
                let dy = points[p + 1] - y0;
                let dz = points[p + 2] - z0;
                score = f32::min(t, dx * dx + dy * dy + dz * dz);
                temp[base + i] = score;
            }
            // in index order, so a strict `>` keeps this thread's lowest index of a tie
            if score > best {
                best = score;
                best_i = i as u32;
            }
            i += threads;
        }
        let (_, winner) = block_best(&mut vals, &mut idxs, best, best_i, none, false);
        last = winner as usize;
        if tid == 0 {
            out[cloud * m + j] = winner as i32;
        }
        j += 1;
    }
}

/// The `k` nearest of `refs` (`[b, n, 3]`) to each of `queries` (`[b, g, 3]`, one workgroup
/// per query), ascending by `(distance, index)`.
#[cube(launch)]
fn knn_kernel(
    refs: &Buffer<f32>,
    queries: &Buffer<f32>,
    out: &mut Buffer<i32>,
    n: u32,
    g: u32,
    k: u32,
    rows: u32,
) {
    let row = row_index();
    if row >= rows as usize {
        terminate!();
    }
    let none = n;
    let n = n as usize;
    let k = k as usize;
    let tid = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    let base = (row / g as usize) * n;
    let q = row * 3;
    let (qx, qy, qz) = (queries[q], queries[q + 1], queries[q + 2]);
    let mut vals = Shared::<[f32]>::new_slice(ROW_THREADS as usize);
    let mut idxs = Shared::<[u32]>::new_slice(ROW_THREADS as usize);
    // the previous pick; `none` before the first round
    let mut prev_d = f32::new(0.0);
    let mut prev_i = none;
    let mut r = 0usize;
    while r < k {
        let mut best = f32::new(0.0);
        let mut best_i = none;
        let mut i = tid;
        while i < n {
            let p = (base + i) * 3;
            let dx = refs[p] - qx;
            let dy = refs[p + 1] - qy;
            let dz = refs[p + 2] - qz;
            let d = dx * dx + dy * dy + dz * dz;
            let iu = i as u32;
            let after = prev_i == none || d > prev_d || (d == prev_d && iu > prev_i);
            if after && beats(d, iu, best, best_i, none, true) {
                best = d;
                best_i = iu;
            }
            i += threads;
        }
        let (d, winner) = block_best(&mut vals, &mut idxs, best, best_i, none, true);
        prev_d = d;
        prev_i = winner;
        if tid == 0 {
            // only a non-finite distance leaves no candidate: keep the index in range
            out[row * k + r] = u32::min(winner, none - 1) as i32;
        }
        r += 1;
    }
}

fn int_out(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_dtype(like.client.clone(), like.device.clone(), shape, DType::I32)
}

/// FPS of `m` indices per cloud of f32 `points` `[b, n, 3]`: `[b, m]` i32. The caller holds
/// to `model::grouping::select`'s bounds (`b` within one grid dimension, `n, m >= 1`, indices
/// within 32 bits).
pub fn fps(points: CubeTensor, m: usize) -> CubeTensor {
    let points = into_contiguous(points);
    let shape = points.meta.shape().clone();
    let (b, n) = (shape[0], shape[1]);
    let temp = empty_device_dtype(
        points.client.clone(),
        points.device.clone(),
        Shape::new([b, n]),
        DType::F32,
    );
    let out = int_out(&points, Shape::new([b, m]));
    fps_kernel::launch(
        &points.client.clone(),
        CubeCount::Static(b as u32, 1, 1),
        CubeDim::new_1d(FPS_THREADS),
        points.into_tensor_arg(),
        temp.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        n as u32,
        m as u32,
        FPS_ORIGIN_EPS,
    );
    out
}

/// The `k` nearest of `refs` `[b, n, 3]` to each of `queries` `[b, g, 3]` (`1 <= k <= n`):
/// `[b, g, k]` i32, within the same bounds.
pub fn knn(refs: CubeTensor, queries: CubeTensor, k: usize) -> CubeTensor {
    let refs = into_contiguous(refs);
    let queries = into_contiguous(queries);
    let (b, n) = (refs.meta.shape()[0], refs.meta.shape()[1]);
    let g = queries.meta.shape()[1];
    let out = int_out(&refs, Shape::new([b, g, k]));
    knn_kernel::launch(
        &refs.client.clone(),
        row_grid(b * g),
        CubeDim::new_1d(ROW_THREADS),
        refs.into_tensor_arg(),
        queries.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        n as u32,
        g as u32,
        k as u32,
        (b * g) as u32,
    );
    out
}
