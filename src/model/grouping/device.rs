//! Grouping as device kernels: FPS, kNN and the neighbourhood gather written as burn tensor
//! operations, so a batch of clouds uploaded once is grouped where the network runs and
//! nothing comes back to the host. Each round is an exact selection, not a sort, so the
//! official rules of the CPU kernels (`gpu::cpu`) hold:
//!
//! - FPS starts at index 0, never updates nor picks points with `|p|² <= 1e-3` (their score
//!   is -1, below any distance), and once the eligible points run out picks the lowest
//!   eligible index again (distance 0), or index 0 when none is eligible;
//! - FPS takes the arg-max and kNN the arg-min of each round; burn's arg reductions return
//!   the lowest index among equal values (cubek-reduce breaks ties by coordinate whatever
//!   its reduction order), so ties go to the lowest index as in the CPU kernels;
//! - distances are `dx*dx + dy*dy + dz*dz` in the CPU's order. A GPU shader compiler may
//!   fuse a multiply and an add into one FMA (nvcc does so in the official CUDA kernels), so
//!   a distance can differ from the CPU's in the last bit and a near-tie within one rounding
//!   can resolve the other way. Exact ties (grids, duplicates) are unaffected; the tests
//!   hold the device kernels to the CPU's indices on both backends.
//!
//! Cost: [`fps`] and [`knn`] are one operation each ([`super::select`]): one CubeCL kernel
//! launch on wgpu (`model::cube::grouping`), the host kernels on burn-flex. Their tensor-op
//! forms, [`fps_by_ops`] (`m - 1` rounds of a gather, a fused element-wise kernel and an
//! arg-max) and [`knn_by_ops`] (`k` rounds of an arg-min and a mask), take what the operation
//! does not (another dtype, sizes beyond 32-bit indices) and are tested against the CPU too.

use burn::tensor::{Device, Int, Tensor};

use crate::gpu::cpu::FPS_ORIGIN_EPS;

/// The x, y and z planes of `[b, n, 3]` points, each `[b, n]`.
fn planes(points: &Tensor<3>) -> [Tensor<2>; 3] {
    let [b, n, _] = points.dims();
    [0, 1, 2].map(|c| points.clone().slice_dim(2, c..c + 1).reshape([b, n]))
}

/// `0..n` along the last dimension of a `dims`-shaped integer tensor.
fn iota<const D: usize>(dims: [usize; D], device: &Device) -> Tensor<D, Int> {
    let n = dims[D - 1];
    let mut shape = [1; D];
    shape[D - 1] = n;
    Tensor::<1, Int>::arange(0..n as i64, device)
        .reshape(shape)
        .expand(dims)
}

/// Farthest point sampling of `m` indices per cloud of `points` `[b, n, 3]`: `[b, m]`. One
/// operation ([`super::select`]: one kernel launch on a GPU) where it takes the input, the
/// tensor-op rounds of [`fps_by_ops`] otherwise.
pub fn fps(points: &Tensor<3>, m: usize) -> Tensor<2, Int> {
    super::select::fps(points, m).unwrap_or_else(|| fps_by_ops(points, m))
}

/// [`fps`] as `m - 1` rounds of tensor operations (gather, element-wise, arg-max).
pub fn fps_by_ops(points: &Tensor<3>, m: usize) -> Tensor<2, Int> {
    let [b, n, _] = points.dims();
    let device = points.device();
    let [x, y, z] = planes(points);
    let norm = x.clone() * x.clone() + y.clone() * y.clone() + z.clone() * z.clone();
    let ineligible = norm.lower_equal_elem(FPS_ORIGIN_EPS);
    let mut temp = Tensor::<2>::full([b, n], 1e10, &device);
    let mut old = Tensor::<2, Int>::zeros([b, 1], &device);
    let mut picks = Vec::with_capacity(m);
    picks.push(old.clone());
    for _ in 1..m {
        // one gather for the three coordinates of the last pick
        let c = points
            .clone()
            .gather(1, old.reshape([b, 1, 1]).expand([b, 1, 3]));
        let at = |p: &Tensor<2>, k: usize| {
            p.clone()
                - c.clone()
                    .slice_dim(2, k..k + 1)
                    .reshape([b, 1])
                    .expand([b, n])
        };
        let (dx, dy, dz) = (at(&x, 0), at(&y, 1), at(&z, 2));
        let d = dx.clone() * dx + dy.clone() * dy + dz.clone() * dz;
        temp = temp.min_pair(d);
        // burn's arg-max gives the lowest index of equal maxima (cubek-reduce compares
        // coordinates on ties; burn-flex scans in order); the tests hold both to it
        old = temp.clone().mask_fill(ineligible.clone(), -1.0).argmax(1);
        picks.push(old.clone());
    }
    picks.truncate(m);
    Tensor::cat(picks, 1)
}

/// The `k` nearest of `refs` `[b, n, 3]` to each of `queries` `[b, g, 3]`, ascending by
/// distance, ties to the lower index: `[b, g, min(k, n)]`. One operation ([`super::select`])
/// where it takes the input, the tensor-op rounds of [`knn_by_ops`] otherwise.
pub fn knn(refs: &Tensor<3>, queries: &Tensor<3>, k: usize) -> Tensor<3, Int> {
    super::select::knn(refs, queries, k).unwrap_or_else(|| knn_by_ops(refs, queries, k))
}

/// [`knn`] as `k` rounds of tensor operations (arg-min, mask).
pub fn knn_by_ops(refs: &Tensor<3>, queries: &Tensor<3>, k: usize) -> Tensor<3, Int> {
    let [b, n, _] = refs.dims();
    let [_, g, _] = queries.dims();
    let device = refs.device();
    let r = planes(refs).map(|p| p.reshape([b, 1, n]).expand([b, g, n]));
    let q = planes(queries).map(|p| p.reshape([b, g, 1]).expand([b, g, n]));
    let [rx, ry, rz] = r;
    let [qx, qy, qz] = q;
    let (dx, dy, dz) = (rx - qx, ry - qy, rz - qz);
    let mut d = dx.clone() * dx + dy.clone() * dy + dz.clone() * dz;
    let idx = iota([b, g, n], &device);
    let mut out = Vec::with_capacity(k);
    for _ in 0..k.min(n) {
        // the lowest index of equal minima, as the CPU's sort by (distance, index)
        let i = d.clone().argmin(2);
        let taken = idx.clone().equal(i.clone().expand([b, g, n]));
        d = d.mask_fill(taken, f32::INFINITY);
        out.push(i);
    }
    Tensor::cat(out, 2)
}

/// The points of `points` `[b, n, 3]` at `idx` `[b, s]`: `[b, s, 3]`.
pub fn gather_points(points: &Tensor<3>, idx: Tensor<2, Int>) -> Tensor<3> {
    let [_, s] = idx.dims();
    let b = points.dims()[0];
    let planes = planes(points).map(|p| p.gather(1, idx.clone()).reshape([b, s, 1]));
    Tensor::cat(planes.into(), 2)
}

/// Dense `[b, n, g]` inverse-distance weights of each of `points` `[b, n, 3]` to its 3
/// nearest `centers` `[b, g, 3]`: the device form of
/// [`crate::model::partseg::interpolation_matrix`], with its rules. Distances are the
/// official `-2 p·c + |p|² + |c|²` in the CPU's order; the nearest three are taken in three
/// arg-min rounds (ties to the lower index, as the CPU keeps the earlier centre); a row whose
/// weights are not finite (a point exactly on a centre, where `d + 1e-8` is 0) gives that
/// centre all the weight. Nothing is read back.
pub fn interpolation(points: &Tensor<3>, centers: &Tensor<3>) -> Tensor<3> {
    let [b, n, _] = points.dims();
    let [_, g, _] = centers.dims();
    let device = points.device();
    let [px, py, pz] = planes(points);
    let [cx, cy, cz] = planes(centers);
    let p2 = px.clone() * px.clone() + py.clone() * py.clone() + pz.clone() * pz.clone();
    let c2 = cx.clone() * cx.clone() + cy.clone() * cy.clone() + cz.clone() * cz.clone();
    let col = |t: Tensor<2>| t.reshape([b, n, 1]).expand([b, n, g]);
    let row = |t: Tensor<2>| t.reshape([b, 1, g]).expand([b, n, g]);
    let dot = col(px) * row(cx) + col(py) * row(cy) + col(pz) * row(cz);
    let mut d = dot * -2.0 + col(p2) + row(c2);
    let idx = iota([b, n, g], &device);
    let k = g.min(3);
    let mut picks = Vec::with_capacity(k);
    for _ in 0..k {
        let i = d.clone().argmin(2); // [b, n, 1]
        let dist = d.clone().gather(2, i.clone());
        let onehot = idx.clone().equal(i.expand([b, n, g]));
        d = d.mask_fill(onehot.clone(), f32::INFINITY);
        picks.push((onehot.float(), dist));
    }
    let Some((nearest, _)) = picks.first().cloned() else {
        return Tensor::zeros([b, n, g], &device);
    };
    if k == 1 {
        return nearest;
    }
    let recips: Vec<Tensor<3>> = picks
        .iter()
        .map(|(_, d)| (d.clone() + 1e-8).recip())
        .collect();
    let mut norm = recips[0].clone();
    for r in &recips[1..] {
        norm = norm + r.clone();
    }
    let mut bad = norm
        .clone()
        .is_finite()
        .bool_not()
        .bool_or(norm.clone().equal_elem(0.0));
    for r in &recips {
        bad = bad.bool_or(r.clone().is_finite().bool_not());
    }
    let mut weights = Tensor::<3>::zeros([b, n, g], &device);
    for ((onehot, _), r) in picks.into_iter().zip(recips) {
        weights = weights + onehot * (r / norm.clone()).expand([b, n, g]);
    }
    weights.mask_where(bad.expand([b, n, g]), nearest)
}
