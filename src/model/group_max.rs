//! The patch encoder's max-pool, `[groups, m, c] → [groups, c]`, as one threaded pass on
//! burn-flex, forward and backward.
//!
//! burn-flex reduces a middle dimension one output element at a time, a scalar strided loop
//! with a NaN test per element: 4% of a DAPT step and 7.5% of an inference step on two cores
//! (BENCHMARKS.md, "The encoder's max-pool"), for the encoder's two pools over
//! `[b·g, 32, 256]` and `[b·g, 32, 384]`. Here each group's `m` rows are folded into a
//! running maximum row by row, contiguous along the channels, one rayon task per block of
//! groups. The rule is burn-flex's: a NaN wins and stays, and among equal values the first
//! row wins (so the gradient goes where burn's `max_dim` sends it). Under autodiff the node
//! keeps only the winning rows' indices, as burn's does, never the input. Every other backend
//! (wgpu) keeps `max_dim`.

use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, IntDType, Shape, Tensor, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::unary_node;

/// Below this many input elements one thread does the whole pool.
const PARALLEL_MIN: usize = 1 << 16;

/// The max-pool over the middle dimension of a `[groups, m, c]` tensor, with the index of the
/// winning row for backward.
#[backend_extension(Flex, Autodiff)]
pub trait GroupMax: Backend {
    /// `[groups, m, c]` → `[groups, c]`, the largest of each group's `m` rows per channel.
    fn group_max(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The same, with the winning row of each output (`0..m`, i32).
    fn group_max_indexed(x: FloatTensor<Self>) -> (FloatTensor<Self>, IntTensor<Self>);
    /// The input's gradient `[groups, m, c]`: each output's gradient at its winning row, zero
    /// elsewhere.
    fn group_max_backward(
        rows: IntTensor<Self>,
        grad: FloatTensor<Self>,
        m: usize,
    ) -> FloatTensor<Self>;
}

/// The max over dimension 1 of `x` (`[groups, m, c]` → `[groups, c]`): the threaded pool on
/// burn-flex for f32, burn's `max_dim` everywhere else.
pub fn group_max(x: Tensor<3>) -> Tensor<2> {
    let [g, m, c] = x.dims();
    if m > 0 && x.dtype() == DType::F32 && super::on_flex(&x.device()) {
        Tensor::from_dispatch(<Dispatch as GroupMax>::group_max(x.into_dispatch()))
    } else {
        x.max_dim(1).reshape([g, c])
    }
}

/// Whether `candidate` replaces `best`: burn-flex's `max_dim` rule (NaN wins and stays; a tie
/// keeps the earlier row). Bitwise, not short-circuit, so the loops below stay branch-free
/// and vectorise.
#[inline(always)]
fn replaces(candidate: f32, best: f32) -> bool {
    !best.is_nan() & (candidate.is_nan() | (candidate > best))
}

/// Folds `row` into the running maximum `best`.
#[inline(always)]
fn fold_loop(best: &mut [f32], row: &[f32]) {
    for (b, &v) in best.iter_mut().zip(row) {
        *b = if replaces(v, *b) { v } else { *b };
    }
}

/// Folds row `r` into `best`, recording in `win` where each maximum came from.
#[inline(always)]
fn fold_indexed_loop(best: &mut [f32], win: &mut [i32], row: &[f32], r: i32) {
    for ((b, i), &v) in best.iter_mut().zip(win.iter_mut()).zip(row) {
        let take = replaces(v, *b);
        *b = if take { v } else { *b };
        *i = if take { r } else { *i };
    }
}

/// The loops compiled for the widest vectors the CPU has, chosen at run time.
#[cfg(target_arch = "x86_64")]
mod wide {
    #[target_feature(enable = "avx512f")]
    pub fn fold_avx512(best: &mut [f32], row: &[f32]) {
        super::fold_loop(best, row)
    }

    #[target_feature(enable = "avx2")]
    pub fn fold_avx2(best: &mut [f32], row: &[f32]) {
        super::fold_loop(best, row)
    }

    #[target_feature(enable = "avx512f")]
    pub fn fold_indexed_avx512(best: &mut [f32], win: &mut [i32], row: &[f32], r: i32) {
        super::fold_indexed_loop(best, win, row, r)
    }

    #[target_feature(enable = "avx2")]
    pub fn fold_indexed_avx2(best: &mut [f32], win: &mut [i32], row: &[f32], r: i32) {
        super::fold_indexed_loop(best, win, row, r)
    }
}

type Fold = fn(&mut [f32], &[f32]);
type FoldIndexed = fn(&mut [f32], &mut [i32], &[f32], i32);

/// The fastest fold this CPU runs.
fn folds() -> (Fold, FoldIndexed) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return (
                |b, row| unsafe { wide::fold_avx512(b, row) },
                |b, w, row, r| unsafe { wide::fold_indexed_avx512(b, w, row, r) },
            );
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return (
                |b, row| unsafe { wide::fold_avx2(b, row) },
                |b, w, row, r| unsafe { wide::fold_indexed_avx2(b, w, row, r) },
            );
        }
    }
    (fold_loop, fold_indexed_loop)
}

/// Groups per rayon task: about `PARALLEL_MIN / 4` input elements.
fn groups_per_task(m: usize, c: usize) -> usize {
    (PARALLEL_MIN / 4 / (m * c).max(1)).max(1)
}

/// Pools `x` (`groups · m · c` values) into `out` (`groups · c`), and the winning rows into
/// `rows` when given.
fn pool(x: &[f32], m: usize, c: usize, out: &mut [f32], rows: Option<&mut [i32]>) {
    let (fold, fold_indexed) = folds();
    let per_group = |g: usize, best: &mut [f32], mut win: Option<&mut [i32]>| {
        let base = g * m * c;
        best.copy_from_slice(&x[base..base + c]);
        if let Some(w) = win.as_deref_mut() {
            w.fill(0);
        }
        for r in 1..m {
            let row = &x[base + r * c..base + (r + 1) * c];
            match win.as_deref_mut() {
                Some(w) => fold_indexed(best, w, row, r as i32),
                None => fold(best, row),
            }
        }
    };
    let task = groups_per_task(m, c);
    let parallel = x.len() >= PARALLEL_MIN;
    match rows {
        Some(rows) if parallel => out
            .par_chunks_mut(task * c)
            .zip(rows.par_chunks_mut(task * c))
            .enumerate()
            .for_each(|(t, (o, w))| {
                for (j, (b, i)) in o.chunks_mut(c).zip(w.chunks_mut(c)).enumerate() {
                    per_group(t * task + j, b, Some(i));
                }
            }),
        Some(rows) => {
            for (g, (b, i)) in out.chunks_mut(c).zip(rows.chunks_mut(c)).enumerate() {
                per_group(g, b, Some(i));
            }
        }
        None if parallel => out.par_chunks_mut(task * c).enumerate().for_each(|(t, o)| {
            for (j, b) in o.chunks_mut(c).enumerate() {
                per_group(t * task + j, b, None);
            }
        }),
        None => {
            for (g, b) in out.chunks_mut(c).enumerate() {
                per_group(g, b, None);
            }
        }
    }
}

/// `[groups, m, c]` of a contiguous f32 burn-flex tensor, or `None` (the kernel then leaves it
/// to burn-flex's own ops).
fn flex_dims(x: &FlexTensor) -> Option<[usize; 3]> {
    let shape = x.layout().shape();
    if shape.num_dims() != 3 || shape[1] == 0 || x.dtype() != DType::F32 {
        return None;
    }
    Some([shape[0], shape[1], shape[2]])
}

/// burn-flex's own ops, for what the kernel does not take.
fn by_ops(x: FlexTensor) -> (FlexTensor, Shape) {
    let shape = x.layout().shape().clone();
    let out = Shape::new([shape[0], shape[2]]);
    (Flex::float_max_dim(x, 1), out)
}

impl GroupMax for Flex {
    fn group_max(x: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let (Some([g, m, c]), Some(values)) = (flex_dims(&x), unary_node::flex_f32(&x)) else {
            let (max, shape) = by_ops(x);
            return Flex::float_reshape(max, shape);
        };
        let mut out = vec![0.0f32; g * c];
        pool(values, m, c, &mut out, None);
        unary_node::flex_shaped(out, Shape::new([g, c]))
    }

    fn group_max_indexed(x: FlexTensor) -> (FlexTensor, FlexTensor) {
        let x = x.to_contiguous();
        let (Some([g, m, c]), Some(values)) = (flex_dims(&x), unary_node::flex_f32(&x)) else {
            let shape = x.layout().shape().clone();
            let out = Shape::new([shape[0], shape[2]]);
            let (max, rows) = Flex::float_max_dim_with_indices(x, 1, IntDType::I32);
            return (
                Flex::float_reshape(max, out.clone()),
                <Flex as burn::backend::ops::IntTensorOps<Flex>>::int_reshape(rows, out),
            );
        };
        let mut out = vec![0.0f32; g * c];
        let mut rows = vec![0i32; g * c];
        pool(values, m, c, &mut out, Some(&mut rows));
        (
            unary_node::flex_shaped(out, Shape::new([g, c])),
            FlexTensor::from_data(TensorData::new(rows, [g, c])),
        )
    }

    fn group_max_backward(rows: FlexTensor, grad: FlexTensor, m: usize) -> FlexTensor {
        let rows = rows.to_contiguous();
        let grad = grad.to_contiguous();
        let shape = grad.layout().shape().clone();
        let (g, c) = (shape[0], shape[1]);
        let mut out = vec![0.0f32; g * m * c];
        // the indices are ours (i32, from `group_max_indexed`) unless burn's fallback made
        // them; read either
        let Some(index) = winning_rows(&rows) else {
            return zeros_like_input(g, m, c);
        };
        let Some(gs) = unary_node::flex_f32(&grad) else {
            return zeros_like_input(g, m, c);
        };
        let scatter = |group: usize, dst: &mut [f32]| {
            for j in 0..c {
                let r = index[group * c + j];
                if (0..m as i64).contains(&i64::from(r)) {
                    dst[r as usize * c + j] = gs[group * c + j];
                }
            }
        };
        if out.len() >= PARALLEL_MIN {
            out.par_chunks_mut(m * c)
                .enumerate()
                .for_each(|(group, dst)| scatter(group, dst));
        } else {
            for (group, dst) in out.chunks_mut(m * c).enumerate() {
                scatter(group, dst);
            }
        }
        unary_node::flex_shaped(out, Shape::new([g, m, c]))
    }
}

/// The winning rows as i32, whichever integer type the pool made them in: ours are i32,
/// burn's fallback may give i64 (a value past i32's range becomes -1, out of every range the
/// readers accept). `None` for any other dtype.
pub(super) fn winning_rows(rows: &FlexTensor) -> Option<Cow<'_, [i32]>> {
    if let Some(r) = rows.as_slice::<i32>() {
        return Some(Cow::Borrowed(r));
    }
    let wide = rows.as_slice::<i64>()?;
    Some(Cow::Owned(
        wide.iter()
            .map(|&v| i32::try_from(v).unwrap_or(-1))
            .collect(),
    ))
}

/// A zero gradient for an input of `[g, m, c]` (only for index or gradient tensors of a dtype
/// this module never makes).
fn zeros_like_input(g: usize, m: usize, c: usize) -> FlexTensor {
    unary_node::flex_shaped(vec![0.0; g * m * c], Shape::new([g, m, c]))
}

/// The autodiff node: one parent; state: the winning rows and the pooled dimension's size.
#[derive(Debug)]
struct PoolNode;

impl<B: GroupMax> Backward<B, 1> for PoolNode {
    type State = (IntTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (rows, m) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::group_max_backward(rows, grad, m)
        });
    }
}

impl<B: Backend + GroupMax, C: CheckpointStrategy> GroupMax for Autodiff<B, C> {
    fn group_max(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // compute-bound, as burn's `max_dim`: the state is the indices, never the input
        match PoolNode.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let m = x.primitive().shape()[1];
                let (max, rows) = B::group_max_indexed(x.into_primitive());
                prep.finish((rows, m), max)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::group_max(x.into_primitive())),
        }
    }

    fn group_max_indexed(x: FloatTensor<Self>) -> (FloatTensor<Self>, IntTensor<Self>) {
        match PoolNode.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let m = x.primitive().shape()[1];
                let (max, rows) = B::group_max_indexed(x.into_primitive());
                (prep.finish((rows.clone(), m), max), rows)
            }
            OpsKind::UnTracked(prep) => {
                let (max, rows) = B::group_max_indexed(x.into_primitive());
                (prep.finish(max), rows)
            }
        }
    }

    fn group_max_backward(
        rows: IntTensor<Self>,
        grad: FloatTensor<Self>,
        m: usize,
    ) -> FloatTensor<Self> {
        unary_node::untracked::<B, C>(B::group_max_backward(rows, grad.into_primitive(), m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    use crate::model::test_util::{same_bits, values};

    /// Inputs with ties (small integers), and for `special` a NaN and infinities.
    fn inputs(g: usize, m: usize, c: usize, special: bool, device: &Device) -> Tensor<3> {
        let x = Tensor::<3>::random([g, m, c], Distribution::Uniform(-4.0, 4.0), device).round();
        if !special {
            return x;
        }
        let mut v = values(x);
        v[1] = f32::NAN;
        v[c + 2] = f32::INFINITY;
        if v.len() > 2 * c + 3 {
            v[2 * c + 3] = f32::NEG_INFINITY;
        }
        Tensor::<3>::from_data(TensorData::new(v, [g, m, c]), device)
    }

    fn burns(x: Tensor<3>) -> Tensor<2> {
        let [g, _, c] = x.dims();
        x.max_dim(1).reshape([g, c])
    }

    #[test]
    fn the_pool_matches_max_dim_with_ties_nan_and_threads() {
        let device = Device::flex();
        // one thread and many, one row per group, a strided view
        for (g, m, c, special) in [(3, 5, 7, true), (1, 1, 4, false), (300, 32, 40, true)] {
            let x = inputs(g, m, c, special, &device);
            same_bits(
                &values(group_max(x.clone())),
                &values(burns(x.clone())),
                "contiguous",
            );
            let t = x.swap_dims(0, 2).swap_dims(0, 2);
            same_bits(&values(group_max(t.clone())), &values(burns(t)), "view");
        }
    }

    #[test]
    fn the_gradient_goes_where_burns_goes_with_and_without_checkpointing() {
        for (g, m, c) in [(4, 6, 5), (300, 32, 40)] {
            let base = inputs(g, m, c, false, &Device::flex());
            let weights = Tensor::<2>::random([g, c], Distribution::Default, &Device::flex());
            let plain = Device::flex().autodiff();
            for ad in [plain.clone(), plain.gradient_checkpointing()] {
                let run = |f: fn(Tensor<3>) -> Tensor<2>| {
                    let x = Tensor::<3>::from_data(base.clone().into_data(), &ad).require_grad();
                    let w = Tensor::<2>::from_data(weights.clone().into_data(), &ad);
                    // tracked ops either side, as in the encoder
                    let y = f(x.clone() * 2.0) * w;
                    let out = values(y.clone().inner());
                    let grads = y.sum().backward();
                    (out, x.grad(&grads).map(values).unwrap_or_default())
                };
                let (ours, ours_grad) = run(group_max);
                let (want, want_grad) = run(burns);
                same_bits(&ours, &want, "output");
                assert!(!ours_grad.is_empty(), "no gradient reached the input");
                same_bits(&ours_grad, &want_grad, "gradient");
            }
        }
    }

    #[test]
    fn an_untracked_input_under_autodiff_is_pooled_without_a_node() {
        let ad = Device::flex().autodiff();
        let x = inputs(5, 8, 3, true, &ad);
        same_bits(
            &values(group_max(x.clone()).inner()),
            &values(burns(x).inner()),
            "pooled",
        );
    }
}
