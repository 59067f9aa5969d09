//! Training-mode BatchNorm's batch statistics (biased variance and mean per channel of a
//! `[rows, c]` input) as two threaded passes on burn-flex, forward and backward.
//!
//! burn's `var_mean_bias` makes a centred copy and its square, each the size of the input,
//! and reduces them column by column: for the patch encoder's `[points, 512]` input (128 MiB
//! at batch 32) that is most of BatchNorm's 4.8% of a DAPT step, whose frozen encoder still
//! runs its BatchNorms in training mode (dapt-spec.md §8). Here each rayon task sums a block
//! of rows into per-channel partial sums, first of `x`, then of `(x − mean)²`; the sums are
//! kept in f64, as PyTorch's CPU kernel accumulates them. Under autodiff (full fine-tuning)
//! the node keeps the input and computes `∂/∂x` in one more pass. Every other backend keeps
//! `var_mean_bias`.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Shape, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::unary_node;

/// Rows per rayon task: enough to pay for a task and its partial sums.
const BLOCK_ROWS: usize = 256;

/// The statistics of a BatchNorm batch as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait BatchStats: Backend {
    /// `x` `[rows, c]` → `[2, c]`: the biased variance of each channel (row 0) and its mean
    /// (row 1).
    fn batch_var_mean(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `∂/∂x` given `x`, its statistics (the forward's `[2, c]` output) and their gradient.
    fn batch_var_mean_backward(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// `(variance, mean)` of each column of `x` (`[rows, c]`, each `[1, c]`), the variance biased
/// (divided by `rows`): the threaded passes on burn-flex for f32, burn's `var_mean_bias`
/// everywhere else.
pub fn var_mean(x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let [rows, c] = x.dims();
    if rows > 0 && x.dtype() == DType::F32 && super::on_flex(&x.device()) {
        let stats =
            Tensor::<2>::from_dispatch(<Dispatch as BatchStats>::batch_var_mean(x.into_dispatch()));
        (stats.clone().slice([0..1, 0..c]), stats.slice([1..2, 0..c]))
    } else {
        x.var_mean_bias(0)
    }
}

/// Per-channel sums over all rows, threaded over blocks of rows: `add(acc, row)` adds one
/// row into the `c` f64 accumulators. Each accumulator is one column, so the caller's loop
/// over a row vectorises across columns without changing any column's order of addition.
fn column_sums(x: &[f32], c: usize, add: impl Fn(&mut [f64], &[f32]) + Sync) -> Vec<f64> {
    let partial = |block: &[f32]| {
        let mut acc = vec![0.0f64; c];
        for row in block.chunks_exact(c) {
            add(&mut acc, row);
        }
        acc
    };
    let merge = |mut a: Vec<f64>, b: Vec<f64>| {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
        a
    };
    x.par_chunks(BLOCK_ROWS * c)
        .map(partial)
        .reduce(|| vec![0.0f64; c], merge)
}

/// `[rows, c]` of a contiguous f32 burn-flex tensor with at least one row, and its values.
fn flex_rows(x: &FlexTensor) -> Option<(usize, usize, &[f32])> {
    let shape = x.layout().shape();
    if shape.num_dims() != 2 || shape[0] == 0 || shape[1] == 0 {
        return None;
    }
    Some((shape[0], shape[1], unary_node::flex_f32(x)?))
}

/// The per-channel mean and biased variance of `values` (`rows × c`), in f64.
fn stats(values: &[f32], rows: usize, c: usize) -> (Vec<f64>, Vec<f64>) {
    let n = rows as f64;
    let mean: Vec<f64> = column_sums(values, c, |acc, row| {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += f64::from(v);
        }
    })
    .into_iter()
    .map(|s| s / n)
    .collect();
    let var = column_sums(values, c, |acc, row| {
        // zipped with the means rather than indexed, so there is no bounds check per element
        // and the loop vectorises (indexed, it was a scalar f64 loop: 1% of a DAPT step)
        for ((a, &v), &m) in acc.iter_mut().zip(row).zip(&mean) {
            let d = f64::from(v) - m;
            *a += d * d;
        }
    })
    .into_iter()
    .map(|s| s / n)
    .collect();
    (mean, var)
}

impl BatchStats for Flex {
    fn batch_var_mean(x: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let Some((rows, c, values)) = flex_rows(&x) else {
            // not ours to take (another dtype or rank): burn-flex's own ops
            let mean = Flex::float_mean_dim(x.clone(), 0);
            let centred = Flex::float_sub(x, mean.clone());
            let var = Flex::float_mean_dim(Flex::float_mul(centred.clone(), centred), 0);
            return Flex::float_cat(vec![var, mean], 0);
        };
        let (mean, var) = stats(values, rows, c);
        let out: Vec<f32> = var.iter().chain(&mean).map(|&v| v as f32).collect();
        unary_node::flex_shaped(out, Shape::new([2, c]))
    }

    fn batch_var_mean_backward(x: FlexTensor, stats: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let (stats, grad) = (stats.to_contiguous(), grad.to_contiguous());
        let Some((rows, c, values)) = flex_rows(&x) else {
            return backward_by_ops(x, stats, grad);
        };
        let (Some(st), Some(g)) = (stats_of(&stats, c), stats_of(&grad, c)) else {
            return backward_by_ops(x, stats, grad);
        };
        // var = Σ(x − μ)²/n (the μ term's own derivative sums to zero), μ = Σx/n:
        // ∂/∂x = 2(x − μ)·g_var/n + g_mean/n, μ the forward's own (no pass over x to redo it)
        let n = rows as f64;
        let (gv, gm) = g.split_at(c);
        let mean = &st[c..];
        let two_gv: Vec<f32> = gv
            .iter()
            .map(|&v| (2.0 * f64::from(v) / n) as f32)
            .collect();
        let gm_n: Vec<f32> = gm.iter().map(|&v| (f64::from(v) / n) as f32).collect();
        let mut out = vec![0.0f32; rows * c];
        out.par_chunks_mut(BLOCK_ROWS * c)
            .zip(values.par_chunks(BLOCK_ROWS * c))
            .for_each(|(o, xs)| {
                for (orow, xrow) in o.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
                    for j in 0..c {
                        orow[j] = (xrow[j] - mean[j]) * two_gv[j] + gm_n[j];
                    }
                }
            });
        unary_node::flex_shaped(out, x.layout().shape().clone())
    }
}

/// The values of a `[2, c]` f32 statistics tensor (or its gradient), or `None`.
fn stats_of(t: &FlexTensor, c: usize) -> Option<&[f32]> {
    unary_node::flex_f32(t).filter(|v| v.len() == 2 * c)
}

/// The gradient from burn-flex's own ops, for what the pass does not take (another dtype).
fn backward_by_ops(x: FlexTensor, stats: FlexTensor, grad: FlexTensor) -> FlexTensor {
    let rows = x.layout().shape()[0] as f64;
    let c = stats.layout().shape()[1];
    let row = |t: &FlexTensor, i: usize| {
        Flex::float_slice(t.clone(), &[(i..i + 1).into(), (0..c).into()])
    };
    let (mean, gv, gm) = (row(&stats, 1), row(&grad, 0), row(&grad, 1));
    let centred = Flex::float_sub(x, mean);
    let scaled = Flex::float_mul(centred, Flex::float_mul_scalar(gv, (2.0 / rows).into()));
    Flex::float_add(scaled, Flex::float_mul_scalar(gm, (1.0 / rows).into()))
}

/// The autodiff node: one parent; state: its id (the input, kept for backward) and the
/// `[2, c]` statistics the forward computed.
#[derive(Debug)]
struct StatsNode;

impl<B: BatchStats> Backward<B, 1> for StatsNode {
    type State = (NodeId, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (id, stats) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(id);
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::batch_var_mean_backward(x, stats, grad)
        });
    }
}

impl<B: Backend + BatchStats, C: CheckpointStrategy> BatchStats for Autodiff<B, C> {
    fn batch_var_mean(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // a reduction: compute-bound, as burn's, so checkpointing keeps the input it needs
        match StatsNode
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let id = prep.checkpoint(&x);
                let stats = B::batch_var_mean(x.into_primitive());
                prep.finish((id, stats.clone()), stats)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::batch_var_mean(x.into_primitive())),
        }
    }

    fn batch_var_mean_backward(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unary_node::untracked::<B, C>(B::batch_var_mean_backward(
            x.into_primitive(),
            stats.into_primitive(),
            grad.into_primitive(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    use crate::model::test_util::{close, values};

    #[test]
    fn the_statistics_match_burns_and_an_f64_reference() {
        let device = Device::flex();
        // one block and many, an offset far from zero (where f32 sums lose digits)
        for (rows, c, offset) in [(3, 5, 0.0), (4000, 48, 100.0), (1, 3, 1.0)] {
            let x = Tensor::<2>::random([rows, c], Distribution::Normal(offset, 2.0), &device);
            let (var, mean) = var_mean(x.clone());
            let (want_var, want_mean) = x.clone().var_mean_bias(0);
            close(&values(mean), &values(want_mean), 1e-5, "mean");
            close(&values(var.clone()), &values(want_var), 1e-4, "variance");
            // against f64, column by column
            let v = values(x);
            for j in 0..c {
                let col: Vec<f64> = (0..rows).map(|r| f64::from(v[r * c + j])).collect();
                let m = col.iter().sum::<f64>() / rows as f64;
                let s = col.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / rows as f64;
                let got = f64::from(values(var.clone().slice([0..1, j..j + 1]))[0]);
                assert!(
                    (got - s).abs() <= 1e-6 * (1.0 + s),
                    "column {j}: {got} against {s}"
                );
            }
        }
    }

    #[test]
    fn the_gradient_matches_burns_with_and_without_checkpointing() {
        let (rows, c) = (700, 6);
        let base = Tensor::<2>::random([rows, c], Distribution::Normal(1.0, 2.0), &Device::flex());
        let wv = TensorData::new((0..c).map(|j| j as f32 - 2.5).collect::<Vec<_>>(), [1, c]);
        let wm = TensorData::new(
            (0..c).map(|j| 0.3 * j as f32 + 1.0).collect::<Vec<_>>(),
            [1, c],
        );
        let plain = Device::flex().autodiff();
        for ad in [plain.clone(), plain.gradient_checkpointing()] {
            let run = |f: fn(Tensor<2>) -> (Tensor<2>, Tensor<2>)| {
                let x = Tensor::<2>::from_data(base.clone().into_data(), &ad).require_grad();
                let (var, mean) = f(x.clone() * 1.5);
                let loss = (var * Tensor::from_data(wv.clone(), &ad)).sum()
                    + (mean * Tensor::from_data(wm.clone(), &ad)).sum();
                let grads = loss.backward();
                x.grad(&grads).map(values).unwrap_or_default()
            };
            let ours = run(var_mean);
            let want = run(|x| x.var_mean_bias(0));
            assert!(!ours.is_empty(), "no gradient reached the input");
            close(&ours, &want, 1e-4, "input gradient");
        }
    }

    #[test]
    fn the_ops_fallback_gradient_matches_the_pass() {
        let (rows, c) = (300, 5);
        let of = |t: Tensor<2>| FlexTensor::from_data(t.into_data());
        let x = Tensor::<2>::random([rows, c], Distribution::Normal(1.0, 2.0), &Device::flex());
        let g = Tensor::<2>::random([2, c], Distribution::Default, &Device::flex());
        let stats = <Flex as BatchStats>::batch_var_mean(of(x.clone()));
        let pass = <Flex as BatchStats>::batch_var_mean_backward(
            of(x.clone()),
            stats.clone(),
            of(g.clone()),
        );
        let ops = backward_by_ops(of(x), stats, of(g));
        let values = |t: FlexTensor| t.into_data().try_to_vec::<f32>().unwrap_or_default();
        let (a, b) = (values(pass), values(ops));
        assert_eq!(a.len(), rows * c, "the pass's gradient is complete");
        close(&a, &b, 1e-5, "fallback gradient");
    }
}
