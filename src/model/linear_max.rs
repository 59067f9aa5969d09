//! The patch encoder's last product of each stage and the max-pool after it, `[g·m, k]` rows
//! through `x·W + b` into `[g, m, n]`, then the largest of each group's `m` rows: `[g, n]`, as one
//! burn-flex operation whose backward touches only the rows that won.
//!
//! The pooled output's gradient reaches one row per group and channel, so the gradient of the
//! product before it, `[g·m, n]`, is zero in `m - 1` of every `m` places. As two operations,
//! backward built that tensor and ran both products over it: `xᵀ·dY` for the weight and `dY·Wᵀ`
//! for the input, 4·g·m·k·n FLOP. At the ModelNet40 config (batch 32, g·m = 65,536 rows) that is
//! 51.5 GFLOP for `second_conv.3` (512→384) and 8.6 for `first_conv.3` (128→256): a sixth of a
//! full fine-tuning step's arithmetic, spent on zeros. Here each group and channel adds its one
//! term: the winning row of `x` scaled by the gradient into the weight's column, and the weight's
//! column scaled by it into the winning row's input gradient, 4·g·k·n FLOP in all (`m` = 32 times
//! fewer). The forward is the row-block product and the threaded pool, as before; the node keeps
//! `x` (only for the weight's gradient), `W` (only for the input's) and the winning rows. Every
//! other backend (wgpu) keeps the two operations.

use std::borrow::Cow;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Shape, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::group_max::{GroupMax, group_max, winning_rows};
use super::linear::{Linear, Matrix, RowLinear, transposed};
use super::unary_node;

/// Groups per rayon task in backward: a few hundred thousand multiply-adds each.
const GROUPS_PER_TASK: usize = 16;

/// `x·W + b` pooled over groups of `m` rows, with a backward that visits only the winners.
#[backend_extension(Flex, Autodiff)]
pub trait LinearMax: Backend {
    /// `x` `[g·m, k]`, `W` `[k, n]`, `b` `[n]` → `[g, n]`, the largest of each group's `m` rows
    /// of `x·W + b` per channel.
    fn linear_max(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        m: usize,
    ) -> FloatTensor<Self>;
    /// The same, with the winning row of each output (`0..m`, i32).
    fn linear_max_indexed(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        m: usize,
    ) -> (FloatTensor<Self>, IntTensor<Self>);
    /// The input's gradient `[g·m, k]`: each output's gradient times the weight's column, at
    /// its winning row; zero in rows that won nothing.
    fn linear_max_x_backward(
        weight: FloatTensor<Self>,
        rows: IntTensor<Self>,
        grad: FloatTensor<Self>,
        m: usize,
    ) -> FloatTensor<Self>;
    /// The weight's gradient `[k, n]`: column `c` is the sum over groups of the winning row of
    /// `x` times the output's gradient.
    fn linear_max_weight_backward(
        x: FloatTensor<Self>,
        rows: IntTensor<Self>,
        grad: FloatTensor<Self>,
        m: usize,
    ) -> FloatTensor<Self>;
}

/// `layer(x)` pooled over each group of `m` consecutive rows: `[g·m, k]` → `[g, n]`. One
/// operation on burn-flex for f32 with a bias; the layer and `group_max` everywhere else.
pub fn linear_max(x: Tensor<2>, layer: &Linear, m: usize) -> Tensor<2> {
    let [rows, _] = x.dims();
    let fits = m > 0 && rows > 0 && rows % m == 0;
    if let Some(bias) = &layer.bias
        && fits
        && x.dtype() == DType::F32
        && super::on_flex(&x.device())
    {
        return Tensor::from_dispatch(<Dispatch as LinearMax>::linear_max(
            x.into_dispatch(),
            layer.weight.val().into_dispatch(),
            bias.val().into_dispatch(),
            m,
        ));
    }
    let y = layer.forward(x);
    let n = y.dims()[1];
    group_max(y.reshape([rows / m.max(1), m.max(1), n]))
}

/// `x·W + b` as `[g, m, n]`, by the row-block product.
fn product(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, m: usize) -> FlexTensor {
    let y = <Flex as RowLinear>::row_linear_bias(x, weight, bias);
    let shape = y.layout().shape().clone();
    let (rows, n) = (shape[0], shape[shape.num_dims() - 1]);
    Flex::float_reshape(y, Shape::new([rows / m, m, n]))
}

/// `dst += s · src`.
#[inline(always)]
fn axpy_loop(dst: &mut [f32], s: f32, src: &[f32]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d += s * v;
    }
}

/// The loop compiled for the widest vectors the CPU has, chosen at run time.
#[cfg(target_arch = "x86_64")]
mod wide {
    #[target_feature(enable = "avx512f")]
    pub fn axpy_avx512(dst: &mut [f32], s: f32, src: &[f32]) {
        super::axpy_loop(dst, s, src)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn axpy_avx2(dst: &mut [f32], s: f32, src: &[f32]) {
        super::axpy_loop(dst, s, src)
    }
}

type Axpy = fn(&mut [f32], f32, &[f32]);

/// The fastest `dst += s · src` this CPU runs.
fn axpy() -> Axpy {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return |d, s, v| unsafe { wide::axpy_avx512(d, s, v) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return |d, s, v| unsafe { wide::axpy_avx2(d, s, v) };
        }
    }
    axpy_loop
}

/// What both backward passes read: the winners and the output's gradient, `[g, n]` each.
struct Sparse<'a> {
    rows: Cow<'a, [i32]>,
    grad: &'a [f32],
    groups: usize,
    n: usize,
    m: usize,
}

impl<'a> Sparse<'a> {
    fn of(rows: &'a FlexTensor, grad: &'a FlexTensor, m: usize) -> Option<Self> {
        let shape = grad.layout().shape();
        if shape.num_dims() != 2 || m == 0 {
            return None;
        }
        let (groups, n) = (shape[0], shape[1]);
        let (rows, grad) = (winning_rows(rows)?, unary_node::flex_f32(grad)?);
        (rows.len() == groups * n && grad.len() == groups * n).then_some(Self {
            rows,
            grad,
            groups,
            n,
            m,
        })
    }

    /// `(channel, winning row within the group, gradient)` of group `g`, skipping indices
    /// outside `0..m` (none come from the pool).
    fn terms(&self, g: usize) -> impl Iterator<Item = (usize, usize, f32)> + '_ {
        let base = g * self.n;
        (0..self.n).filter_map(move |c| {
            let r = self.rows[base + c];
            (r >= 0 && (r as usize) < self.m).then(|| (c, r as usize, self.grad[base + c]))
        })
    }
}

/// `dx`: for every group, each channel's gradient times `Wᵀ`'s row `c` (contiguous, `k` long)
/// into the winning row. Groups own disjoint rows, so tasks split by group.
fn x_backward(wt: &[f32], k: usize, sparse: &Sparse) -> Vec<f32> {
    let axpy = axpy();
    let block = sparse.m * k;
    let mut dx = vec![0.0f32; sparse.groups * block];
    dx.par_chunks_mut(GROUPS_PER_TASK * block)
        .enumerate()
        .for_each(|(task, dst)| {
            for (j, group) in dst.chunks_mut(block).enumerate() {
                for (c, r, s) in sparse.terms(task * GROUPS_PER_TASK + j) {
                    axpy(&mut group[r * k..(r + 1) * k], s, &wt[c * k..(c + 1) * k]);
                }
            }
        });
    dx
}

/// `dW` `[k, n]`: per task a `[n, k]` partial (`Wᵀ`'s layout, so each term is one contiguous
/// row), the partials summed, then transposed.
fn weight_backward(x: &[f32], k: usize, sparse: &Sparse) -> Vec<f32> {
    let axpy = axpy();
    let n = sparse.n;
    let tasks = rayon::current_num_threads().clamp(1, sparse.groups.max(1));
    let per_task = sparse.groups.div_ceil(tasks);
    let wt = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let mut acc = vec![0.0f32; n * k];
            for g in t * per_task..((t + 1) * per_task).min(sparse.groups) {
                let group = &x[g * sparse.m * k..];
                for (c, r, s) in sparse.terms(g) {
                    axpy(&mut acc[c * k..(c + 1) * k], s, &group[r * k..(r + 1) * k]);
                }
            }
            acc
        })
        .reduce(|| vec![0.0f32; n * k], unary_node::add_partials);
    transposed(&Matrix::row_major(&wt, n, k))
}

impl LinearMax for Flex {
    fn linear_max(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, m: usize) -> FlexTensor {
        <Flex as GroupMax>::group_max(product(x, weight, bias, m))
    }

    fn linear_max_indexed(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        m: usize,
    ) -> (FlexTensor, FlexTensor) {
        <Flex as GroupMax>::group_max_indexed(product(x, weight, bias, m))
    }

    fn linear_max_x_backward(
        weight: FlexTensor,
        rows: FlexTensor,
        grad: FlexTensor,
        m: usize,
    ) -> FlexTensor {
        let (rows, grad) = (rows.to_contiguous(), grad.to_contiguous());
        let (Some(w), Some(sparse)) = (Matrix::of(&weight), Sparse::of(&rows, &grad, m)) else {
            return ops::x_backward(weight, rows, grad, m);
        };
        if w.cols != sparse.n {
            return ops::x_backward(weight, rows, grad, m);
        }
        let k = w.rows;
        let dx = x_backward(&transposed(&w), k, &sparse);
        unary_node::flex_shaped(dx, Shape::new([sparse.groups * m, k]))
    }

    fn linear_max_weight_backward(
        x: FlexTensor,
        rows: FlexTensor,
        grad: FlexTensor,
        m: usize,
    ) -> FlexTensor {
        let (x, rows, grad) = (
            x.to_contiguous(),
            rows.to_contiguous(),
            grad.to_contiguous(),
        );
        let shape = x.layout().shape().clone();
        let (Some(xs), Some(sparse)) = (unary_node::flex_f32(&x), Sparse::of(&rows, &grad, m))
        else {
            return ops::weight_backward(x, rows, grad, m);
        };
        if shape.num_dims() != 2 || shape[0] != sparse.groups * m || xs.len() != shape[0] * shape[1]
        {
            return ops::weight_backward(x, rows, grad, m);
        }
        let k = shape[1];
        let dw = weight_backward(xs, k, &sparse);
        unary_node::flex_shaped(dw, Shape::new([k, sparse.n]))
    }
}

/// The two operations' backward as burn-flex ops (the pool's scatter, then the products), for
/// what the sparse passes do not take.
mod ops {
    use super::*;

    fn dense_grad(rows: FlexTensor, grad: FlexTensor, m: usize) -> FlexTensor {
        let y = <Flex as GroupMax>::group_max_backward(rows, grad, m);
        let shape = y.layout().shape().clone();
        Flex::float_reshape(y, Shape::new([shape[0] * m, shape[2]]))
    }

    pub(super) fn x_backward(
        weight: FlexTensor,
        rows: FlexTensor,
        grad: FlexTensor,
        m: usize,
    ) -> FlexTensor {
        <Flex as RowLinear>::row_linear_x_backward(weight, dense_grad(rows, grad, m))
    }

    pub(super) fn weight_backward(
        x: FlexTensor,
        rows: FlexTensor,
        grad: FlexTensor,
        m: usize,
    ) -> FlexTensor {
        <Flex as RowLinear>::row_linear_weight_backward(x, dense_grad(rows, grad, m))
    }
}

/// The autodiff node over `x`, `W` and `b`; state: `x` (for the weight's gradient), `W` (for
/// the input's), the winning rows and `m`.
#[derive(Debug)]
struct MaxNode;

type MaxState<B> = (Option<NodeId>, Option<NodeId>, IntTensor<B>, usize);

impl<B: LinearMax> Backward<B, 3> for MaxNode {
    type State = MaxState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, rows, m) = ops.state;
        let x = x.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        let weight = weight.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        if let (Some(node), Some(weight)) = (node_x, weight) {
            let dx = B::linear_max_x_backward(weight, rows.clone(), grad.clone(), m);
            grads.register::<B>(node.id, dx);
        }
        if let (Some(node), Some(x)) = (node_weight, x) {
            let dw = B::linear_max_weight_backward(x, rows, grad.clone(), m);
            grads.register::<B>(node.id, dw);
        }
        if let Some(node) = node_bias {
            grads.register::<B>(node.id, B::linear_bias_backward(grad));
        }
    }
}

impl<B: Backend + LinearMax, C: CheckpointStrategy> LinearMax for Autodiff<B, C> {
    fn linear_max(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        m: usize,
    ) -> FloatTensor<Self> {
        let (x_tracked, weight_tracked) = (x.is_tracked(), weight.is_tracked());
        let nodes = [x.node(), weight.node(), bias.node()];
        // compute-bound (the product): the state is what the sparse backward reads
        match MaxNode.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let x_id = weight_tracked.then(|| prep.checkpoint(&x));
                let weight_id = x_tracked.then(|| prep.checkpoint(&weight));
                let (out, rows) = B::linear_max_indexed(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                    m,
                );
                prep.finish((x_id, weight_id, rows, m), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::linear_max(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                m,
            )),
        }
    }

    fn linear_max_indexed(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        m: usize,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        // only the node above asks for the indices, on the inner backend; here they come
        // without a node of their own
        let (out, rows) = B::linear_max_indexed(
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            m,
        );
        (unary_node::untracked::<B, C>(out), rows)
    }

    fn linear_max_x_backward(
        weight: FloatTensor<Self>,
        rows: IntTensor<Self>,
        grad: FloatTensor<Self>,
        m: usize,
    ) -> FloatTensor<Self> {
        unary_node::untracked::<B, C>(B::linear_max_x_backward(
            weight.into_primitive(),
            rows,
            grad.into_primitive(),
            m,
        ))
    }

    fn linear_max_weight_backward(
        x: FloatTensor<Self>,
        rows: IntTensor<Self>,
        grad: FloatTensor<Self>,
        m: usize,
    ) -> FloatTensor<Self> {
        unary_node::untracked::<B, C>(B::linear_max_weight_backward(
            x.into_primitive(),
            rows,
            grad.into_primitive(),
            m,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Device, Distribution, TensorData};

    use crate::model::test_util::{LayerRun, close, values};

    /// Winning rows `[g, n]` as i64, as burn's own pool gives them.
    fn wide_rows(rows: &[i32], g: usize, n: usize) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(
            rows.iter().map(|&r| i64::from(r)).collect::<Vec<_>>(),
            [g, n],
        ))
    }

    fn flex<const D: usize>(t: Tensor<D>) -> FlexTensor {
        FlexTensor::from_data(t.into_data())
    }

    /// Output and gradients of `sum(pool(layer(x·1.5))·r)` on autodiff burn-flex, through the
    /// fused operation or the layer and `group_max`.
    fn run(
        fused: bool,
        layer: &Linear,
        x: &Tensor<2>,
        r: &Tensor<2>,
        m: usize,
        ad: &Device,
    ) -> LayerRun {
        let leaf = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), ad).require_grad();
        let xa = leaf(x.clone());
        let wa = leaf(layer.weight.val());
        let ba = layer
            .bias
            .as_ref()
            .map(|b| Tensor::<1>::from_data(b.val().into_data(), ad).require_grad());
        let tracked = Linear {
            weight: Param::from_tensor(wa.clone()),
            bias: ba.clone().map(Param::from_tensor),
        };
        // a tracked op before and after, as in the encoder
        let input = xa.clone() * 1.5;
        let y = if fused {
            linear_max(input, &tracked, m)
        } else {
            let [rows, _] = input.dims();
            let y = tracked.forward(input);
            let n = y.dims()[1];
            group_max(y.reshape([rows / m, m, n]))
        };
        let y = y * Tensor::<2>::from_data(r.clone().into_data(), ad);
        LayerRun::backward(y, &xa, &wa, ba)
    }

    #[test]
    fn the_sparse_backward_matches_the_dense_one_with_and_without_checkpointing() {
        let device = Device::flex();
        // one task and many, one row per group, a channel count past a vector's width
        for (g, m, k, n) in [(3, 4, 5, 7), (70, 32, 24, 40), (5, 1, 3, 17)] {
            let layer = Linear::new(k, n, true, &device);
            let x = Tensor::<2>::random([g * m, k], Distribution::Default, &device);
            let r = Tensor::<2>::random([g, n], Distribution::Normal(0.0, 1.0), &device);
            let plain = device.clone().autodiff();
            let want = run(false, &layer, &x, &r, m, &plain);
            for ad in [plain.clone(), plain.clone().gradient_checkpointing()] {
                let got = run(true, &layer, &x, &r, m, &ad);
                close(&got.out, &want.out, 1e-6, "output");
                for (what, a, b) in [
                    ("input", &got.dx, &want.dx),
                    ("weight", &got.dw, &want.dw),
                    ("bias", &got.db, &want.db),
                ] {
                    assert!(!a.is_empty(), "no {what} gradient");
                    close(a, b, 1e-5, what);
                }
            }
            // inference, and an untracked input under autodiff
            let plain_out = values(linear_max(x.clone(), &layer, m));
            let [rows, _] = x.dims();
            let by_two = values(group_max(layer.forward(x.clone()).reshape([
                rows / m,
                m,
                n,
            ])));
            close(&plain_out, &by_two, 1e-6, "inference");
        }
    }

    #[test]
    fn a_frozen_layer_passes_only_the_input_gradient_and_a_frozen_input_only_the_weights() {
        let device = Device::flex();
        let (g, m, k, n) = (6, 8, 5, 9);
        let layer = Linear::new(k, n, true, &device);
        let x = Tensor::<2>::random([g * m, k], Distribution::Default, &device);
        let ad = device.clone().autodiff();
        let frozen = Linear {
            weight: Param::from_tensor(Tensor::<2>::from_data(layer.weight.val().into_data(), &ad))
                .set_require_grad(false),
            bias: layer.bias.as_ref().map(|b| {
                Param::from_tensor(Tensor::<1>::from_data(b.val().into_data(), &ad))
                    .set_require_grad(false)
            }),
        };
        let dx = |fused: bool| {
            let xa = Tensor::<2>::from_data(x.clone().into_data(), &ad).require_grad();
            let y = if fused {
                linear_max(xa.clone(), &frozen, m)
            } else {
                group_max(frozen.forward(xa.clone()).reshape([g, m, n]))
            };
            let grads = (y.clone() * y).sum().backward();
            xa.grad(&grads).map(values).unwrap_or_default()
        };
        let (got, want) = (dx(true), dx(false));
        assert!(!got.is_empty(), "the input's gradient is missing");
        close(&got, &want, 1e-5, "input gradient with a frozen layer");

        // a frozen input (the first layer of a stack): the weight's gradient alone
        let r = Tensor::<2>::random([g, n], Distribution::Default, &device);
        let want = run(false, &layer, &x, &r, m, &ad);
        let xa = Tensor::<2>::from_data(x.clone().into_data(), &ad);
        let wa = Tensor::<2>::from_data(layer.weight.val().into_data(), &ad).require_grad();
        let tracked = Linear {
            weight: Param::from_tensor(wa.clone()),
            bias: layer
                .bias
                .as_ref()
                .map(|b| Param::from_tensor(Tensor::<1>::from_data(b.val().into_data(), &ad))),
        };
        let y = linear_max(xa * 1.5, &tracked, m) * Tensor::<2>::from_data(r.into_data(), &ad);
        let grads = y.sum().backward();
        let dw = wa.grad(&grads).map(values).unwrap_or_default();
        close(&dw, &want.dw, 1e-5, "weight gradient with a frozen input");
    }

    #[test]
    fn the_backend_fallbacks_and_wide_indices_give_the_same_gradients() {
        let device = Device::flex();
        let (g, m, k, n) = (4, 6, 7, 10);
        let x = Tensor::<2>::random([g * m, k], Distribution::Default, &device);
        let w = Tensor::<2>::random([k, n], Distribution::Default, &device);
        let b = Tensor::<1>::random([n], Distribution::Default, &device);
        let grad = Tensor::<2>::random([g, n], Distribution::Default, &device);
        let (_, rows) =
            <Flex as LinearMax>::linear_max_indexed(flex(x.clone()), flex(w.clone()), flex(b), m);
        let narrow: Vec<i32> = rows
            .as_slice::<i32>()
            .map(<[i32]>::to_vec)
            .unwrap_or_default();
        assert_eq!(narrow.len(), g * n);
        let vals = |t: FlexTensor| {
            unary_node::flex_f32(&t.to_contiguous())
                .unwrap_or_default()
                .to_vec()
        };
        let sparse_dx = vals(<Flex as LinearMax>::linear_max_x_backward(
            flex(w.clone()),
            rows.clone(),
            flex(grad.clone()),
            m,
        ));
        let dense_dx = vals(ops::x_backward(
            flex(w.clone()),
            rows.clone(),
            flex(grad.clone()),
            m,
        ));
        close(&sparse_dx, &dense_dx, 1e-5, "input gradient");
        let wide_dx = vals(<Flex as LinearMax>::linear_max_x_backward(
            flex(w.clone()),
            wide_rows(&narrow, g, n),
            flex(grad.clone()),
            m,
        ));
        close(&wide_dx, &dense_dx, 1e-5, "input gradient, i64 indices");
        let sparse_dw = vals(<Flex as LinearMax>::linear_max_weight_backward(
            flex(x.clone()),
            rows.clone(),
            flex(grad.clone()),
            m,
        ));
        let dense_dw = vals(ops::weight_backward(flex(x), rows, flex(grad), m));
        assert_eq!(sparse_dw.len(), k * n);
        close(&sparse_dw, &dense_dw, 1e-5, "weight gradient");
    }
}
