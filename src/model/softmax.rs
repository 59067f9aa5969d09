//! Softmax over the last dimension for training on burn-flex: one threaded pass per row forward
//! and backward, with a hand-written autodiff node.
//!
//! Under autodiff burn differentiates softmax as its five-op decomposition (max, subtract,
//! `exp`, sum, divide), each a full pass over the attention scores and `exp` a scalar loop on
//! one thread, and each with its own backward. At OBJ_BG the scores are `[b, 6, 141, 141]` in
//! every block, and a profile put `exp` alone at 3.6% of a DAPT step. Here the forward is
//! `exp(x − max) / Σ` per row and the backward `y·(g − Σ g·y)` per row, recomputing `y` from the
//! input (the node is memory-bound, as burn's element-wise nodes are, so checkpointing keeps
//! the input, not the output). On wgpu the same node runs `model::cube::softmax`'s kernels: one
//! launch forward and one backward instead of burn's decomposition. Inference keeps burn's own
//! softmax (burn-flex fuses it already).

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Tensor, activation};
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{cube, unary_node};

/// Rows per rayon task: enough work to pay for the split.
const ROWS_PER_TASK: usize = 64;

/// Softmax over the last dimension and its gradient as backend operations.
#[backend_extension(Flex, Cube, Fusion, Autodiff)]
pub trait LastDimSoftmax: Backend {
    /// `exp(x − max) / Σ exp(x − max)` along the last dimension.
    #[fusion(dtype = x, shape = x)]
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The input's gradient given the input and the output's gradient.
    #[fusion(dtype = x, shape = x)]
    fn softmax_last_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Softmax of `x` over its last dimension: under autodiff in f32 the extension's node (burn-flex's
/// threaded rows, or `model::cube::softmax`'s kernels on wgpu), burn's own softmax otherwise
/// (burn-flex fuses it for inference already).
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.is_autodiff() && x.dtype() == DType::F32 {
        Tensor::from_dispatch(<Dispatch as LastDimSoftmax>::softmax_last(
            x.into_dispatch(),
        ))
    } else {
        activation::softmax(x, D - 1)
    }
}

pub(super) fn softmax_row(x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { wide::softmax_avx512(x, y) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { wide::softmax_avx2(x, y) };
        }
    }
    softmax_loop(x, y)
}

/// `exp(x − max)` through `model::gelu_math`'s branch-free `exp` (within two units in the last
/// place, where a call to libm's `expf` per element kept the loop scalar), summed in eight
/// lanes, then divided by the sum.
#[inline(always)]
fn softmax_loop(x: &[f32], y: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (o, &v) in y.iter_mut().zip(x) {
        *o = super::gelu_math::exp(v - max);
    }
    let mut lanes = [0.0f32; 8];
    let mut chunks = y.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    let sum = lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    for o in y.iter_mut() {
        *o /= sum;
    }
}

/// The loop compiled for the widest vectors the CPU has, chosen at run time.
#[cfg(target_arch = "x86_64")]
mod wide {
    #[target_feature(enable = "avx512f")]
    pub fn softmax_avx512(x: &[f32], y: &mut [f32]) {
        super::softmax_loop(x, y)
    }

    #[target_feature(enable = "avx2")]
    pub fn softmax_avx2(x: &[f32], y: &mut [f32]) {
        super::softmax_loop(x, y)
    }
}

/// `dx = y·(g − Σ g·y)` for one row; `dx` holds `y` on entry.
pub(super) fn softmax_grad_row(g: &[f32], dx: &mut [f32]) {
    let dot: f32 = g.iter().zip(dx.iter()).map(|(&g, &y)| g * y).sum();
    for (d, &g) in dx.iter_mut().zip(g) {
        *d *= g - dot;
    }
}

/// Contiguous f32 rows of `t` (row length, values), or `None`.
fn rows(t: &FlexTensor) -> Option<(usize, &[f32])> {
    let n = *t.layout().shape().last()?;
    let values = unary_node::flex_f32(t)?;
    (n > 0).then_some((n, values))
}

fn last_dim(t: &FlexTensor) -> usize {
    t.layout().shape().num_dims().saturating_sub(1)
}

impl LastDimSoftmax for Flex {
    fn softmax_last(x: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let Some((n, xs)) = rows(&x) else {
            let dim = last_dim(&x);
            return Flex::softmax(x, dim);
        };
        let mut out = vec![0.0f32; xs.len()];
        out.par_chunks_mut(n * ROWS_PER_TASK)
            .zip(xs.par_chunks(n * ROWS_PER_TASK))
            .for_each(|(o, i)| {
                for (orow, irow) in o.chunks_mut(n).zip(i.chunks(n)) {
                    softmax_row(irow, orow);
                }
            });
        unary_node::flex_from_f32(out, &x)
    }

    fn softmax_last_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let grad = grad.to_contiguous();
        let (Some((n, xs)), Some((ng, gs))) = (rows(&x), rows(&grad)) else {
            return backward_by_ops::<Flex>(x, grad);
        };
        if n != ng || xs.len() != gs.len() {
            return backward_by_ops::<Flex>(x, grad);
        }
        let mut out = vec![0.0f32; xs.len()];
        out.par_chunks_mut(n * ROWS_PER_TASK)
            .zip(xs.par_chunks(n * ROWS_PER_TASK))
            .zip(gs.par_chunks(n * ROWS_PER_TASK))
            .for_each(|((o, i), g)| {
                for ((orow, irow), grow) in o.chunks_mut(n).zip(i.chunks(n)).zip(g.chunks(n)) {
                    softmax_row(irow, orow);
                    softmax_grad_row(grow, orow);
                }
            });
        unary_node::flex_from_f32(out, &x)
    }
}

/// The same gradient from the backend's own ops, for what the row kernels do not take (another
/// dtype, a broadcast gradient).
fn backward_by_ops<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let dim = x.shape().num_dims().saturating_sub(1);
    let y = B::softmax(x, dim);
    let dot = B::float_sum_dim(B::float_mul(grad.clone(), y.clone()), dim);
    B::float_mul(y, B::float_sub(grad, dot))
}

impl LastDimSoftmax for CubeBackend {
    fn softmax_last(x: CubeTensor) -> CubeTensor {
        if cube::fits_rows(&x) {
            cube::softmax::forward(x)
        } else {
            let dim = x.shape().num_dims().saturating_sub(1);
            Self::softmax(x, dim)
        }
    }

    fn softmax_last_backward(x: CubeTensor, grad: CubeTensor) -> CubeTensor {
        if cube::fits_rows(&x) && grad.dtype == x.dtype && grad.shape() == x.shape() {
            cube::softmax::backward(x, grad)
        } else {
            backward_by_ops::<Self>(x, grad)
        }
    }
}

impl<B: Backend + LastDimSoftmax, C: CheckpointStrategy> LastDimSoftmax for Autodiff<B, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        unary_node::forward::<B, C>(
            x,
            unary_node::Kernels {
                forward: B::softmax_last,
                backward: B::softmax_last_backward,
            },
        )
    }

    fn softmax_last_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        unary_node::backward::<B, C>(x, grad, B::softmax_last_backward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    use crate::model::test_util::{close, values};

    /// Scores and gradients of the attention's shape, row lengths across the task split.
    fn run(
        f: fn(Tensor<4>) -> Tensor<4>,
        checkpointing: bool,
        x: &Tensor<4>,
        w: &Tensor<4>,
    ) -> (Vec<f32>, Vec<f32>) {
        let ad = Device::flex().autodiff();
        let ad = if checkpointing {
            ad.gradient_checkpointing()
        } else {
            ad
        };
        let xa = Tensor::<4>::from_data(x.clone().into_data(), &ad).require_grad();
        let wa = Tensor::<4>::from_data(w.clone().into_data(), &ad);
        let y = f(xa.clone() * 2.0) * wa;
        let out = values(y.clone().inner());
        let grads = y.sum().backward();
        (out, xa.grad(&grads).map(values).unwrap_or_default())
    }

    fn burns(x: Tensor<4>) -> Tensor<4> {
        activation::softmax(x, 3)
    }

    #[test]
    fn threaded_softmax_and_its_gradient_match_burns_with_and_without_checkpointing() {
        let device = Device::flex();
        for [b, h, t] in [[2, 3, 5], [4, 6, 77]] {
            let x = Tensor::<4>::random([b, h, t, t], Distribution::Normal(0.0, 4.0), &device);
            let w = Tensor::<4>::random([b, h, t, t], Distribution::Default, &device);
            let (want, want_grad) = run(burns, false, &x, &w);
            let (plain, plain_grad) = run(softmax_last::<4>, false, &x, &w);
            let (ckpt, ckpt_grad) = run(softmax_last::<4>, true, &x, &w);
            assert!(!plain_grad.is_empty(), "no gradient reached the input");
            close(&plain, &want, 1e-6, "forward");
            close(&plain_grad, &want_grad, 1e-5, "gradient");
            // checkpointing recomputes, it does not change a bit
            assert_eq!(plain, ckpt, "forward with checkpointing");
            assert_eq!(plain_grad, ckpt_grad, "gradient with checkpointing");
        }
    }

    #[test]
    fn a_strided_view_and_inference_take_the_right_paths() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 2, 9, 9], Distribution::Default, &device);
        // not autodiff: burn-flex's own fused softmax, unchanged
        assert_eq!(
            values(softmax_last(x.clone())),
            values(activation::softmax(x.clone(), 3))
        );
        // a transposed view under autodiff goes through the contiguous copy
        let ad = Device::flex().autodiff();
        let t = Tensor::<4>::from_data(x.clone().into_data(), &ad).swap_dims(2, 3);
        close(
            &values(softmax_last(t).inner()),
            &values(activation::softmax(x.swap_dims(2, 3), 3)),
            1e-6,
            "strided",
        );
    }
}
