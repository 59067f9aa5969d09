//! Exact GELU, `x·Φ(x)`, as one threaded, vectorised pass on burn-flex, forward and backward.
//!
//! burn-flex computes GELU and its gradient one element at a time on one thread, with a scalar
//! `erff`, and under autodiff each call first collects a fresh `Vec`: 16% of a DAPT step on two
//! cores (BENCHMARKS.md, "An AVX-512 machine"). The model cannot reach burn-flex's loops, so
//! this is a burn backend extension: a burn-flex implementation that splits the work over
//! rayon's threads and runs `model::gelu_math`'s branch-free arithmetic (AVX-512 or AVX2,
//! chosen at run time) on each slice, and an autodiff node whose backward calls the threaded
//! gradient. The values agree with burn's `activation::gelu` to 1e-6 and with an f64
//! reference to a few units in the last place. Every other backend (wgpu) keeps
//! `activation::gelu`.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Tensor, activation};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::{gelu_math, unary_node};

/// Below this many elements the threads cost more than they save.
const PARALLEL_MIN: usize = 1 << 15;

/// Exact GELU and its gradient as backend operations (burn-flex and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait ExactGelu: Backend {
    /// `½·x·(1 + erf(x/√2))`, element-wise.
    fn exact_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `grad · (Φ(x) + x·φ(x))`, element-wise.
    fn exact_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// GELU of `x`: the threaded kernel on burn-flex (with or without autodiff) for f32, burn's
/// own GELU everywhere else.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 && super::on_flex(&x.device()) {
        Tensor::from_dispatch(<Dispatch as ExactGelu>::exact_gelu(x.into_dispatch()))
    } else {
        activation::gelu(x)
    }
}

/// Elements per rayon task: enough work to pay for the split.
const TASK: usize = PARALLEL_MIN / 4;

/// `kernel` over matching slices of `xs` and `gs` (as long as `xs`), on rayon's threads when
/// there is enough work; the kernel writes every element of its output slice.
fn map_slices(
    xs: &[f32],
    gs: &[f32],
    kernel: impl Fn(&[f32], &[f32], &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    assert_eq!(xs.len(), gs.len(), "GELU kernel operands differ in length");
    let n = xs.len();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let dst = &mut out.spare_capacity_mut()[..n];
    if n >= PARALLEL_MIN {
        dst.par_chunks_mut(TASK)
            .zip(xs.par_chunks(TASK))
            .enumerate()
            .for_each(|(i, (o, x))| kernel(x, &gs[i * TASK..i * TASK + x.len()], o));
    } else {
        kernel(xs, gs, dst);
    }
    // SAFETY: the kernels write every element of `dst`, which is `n` long.
    unsafe { out.set_len(n) };
    out
}

impl ExactGelu for Flex {
    fn exact_gelu(x: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let Some(values) = unary_node::flex_f32(&x) else {
            return Flex::gelu(x);
        };
        let out = map_slices(values, values, |x, _, o| gelu_math::gelu_into(x, o));
        unary_node::flex_from_f32(out, &x)
    }

    fn exact_gelu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let grad = grad.to_contiguous();
        let (Some(xs), Some(gs)) = (unary_node::flex_f32(&x), unary_node::flex_f32(&grad)) else {
            return Flex::gelu_backward(x, grad);
        };
        if xs.len() != gs.len() {
            // broadcasting is not ours to handle; burn-flex's kernel does it
            return Flex::gelu_backward(x, grad);
        }
        let out = map_slices(xs, gs, gelu_math::gelu_grad_into);
        unary_node::flex_from_f32(out, &x)
    }
}

impl<B: Backend + ExactGelu, C: CheckpointStrategy> ExactGelu for Autodiff<B, C> {
    fn exact_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        unary_node::forward::<B, C>(
            x,
            unary_node::Kernels {
                forward: B::exact_gelu,
                backward: B::exact_gelu_backward,
            },
        )
    }

    fn exact_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        unary_node::backward::<B, C>(x, grad, B::exact_gelu_backward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    use crate::model::test_util::values;

    /// Inputs across GELU's range, with the tails, zeros and non-finite values.
    fn inputs(n: usize, device: &Device) -> Tensor<2> {
        let x = Tensor::<2>::random([n, 7], Distribution::Normal(0.0, 3.0), device);
        let edges = Tensor::<2>::from_data(
            TensorData::new(
                vec![
                    0.0,
                    -0.0,
                    12.0,
                    -12.0,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    f32::NAN,
                ],
                [1, 7],
            ),
            device,
        );
        Tensor::cat(vec![x, edges], 0)
    }

    /// Within 1e-6 of burn's value (absolute, and relative above 1), non-finite where burn's
    /// is. burn's `½·x·(1 + erf)` cancels for negative `x`, so it is the less accurate side
    /// there (`model::gelu_math` holds ours to an f64 reference).
    fn close_to_burns(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let ok = if y.is_finite() {
                (x - y).abs() <= 1e-6 * (1.0 + y.abs())
            } else {
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
            };
            assert!(ok, "{what}: element {i}: {x} against burn's {y}");
        }
    }

    #[test]
    fn threaded_gelu_matches_burns_small_large_and_strided() {
        let device = Device::flex();
        // below and above the threading threshold
        for n in [3, 20_000] {
            let x = inputs(n, &device);
            close_to_burns(
                &values(gelu(x.clone())),
                &values(activation::gelu(x.clone())),
                "contiguous",
            );
            // a transposed view goes through the contiguous copy
            let t = x.swap_dims(0, 1);
            close_to_burns(
                &values(gelu(t.clone())),
                &values(activation::gelu(t)),
                "strided",
            );
        }
    }

    #[test]
    fn threaded_gelu_gradient_matches_burns_with_and_without_checkpointing() {
        for checkpointing in [false, true] {
            let ad = Device::flex().autodiff();
            let ad = if checkpointing {
                ad.gradient_checkpointing()
            } else {
                ad
            };
            let base = inputs(20_000, &Device::flex());
            let weights = Tensor::<2>::random(base.dims(), Distribution::Default, &Device::flex());
            let run = |f: fn(Tensor<2>) -> Tensor<2>| {
                let x = Tensor::<2>::from_data(base.clone().into_data(), &ad).require_grad();
                let w = Tensor::<2>::from_data(weights.clone().into_data(), &ad);
                // a product after GELU, so the gradient reaching it is not all ones
                let y = f(x.clone() * 1.5) * w;
                let out = values(y.clone().inner());
                let grads = y.sum().backward();
                let g = x.grad(&grads).map(values).unwrap_or_default();
                (out, g)
            };
            let (ours, ours_grad) = run(gelu::<2>);
            let (burns, burns_grad) = run(activation::gelu::<2>);
            close_to_burns(&ours, &burns, "forward under autodiff");
            assert!(!ours_grad.is_empty(), "no gradient reached the input");
            close_to_burns(&ours_grad, &burns_grad, "gradient");
        }
    }

    #[test]
    fn untracked_autodiff_tensors_take_the_kernel_without_a_graph() {
        let ad = Device::flex().autodiff();
        let x = inputs(40, &Device::flex());
        let on_ad = Tensor::<2>::from_data(x.clone().into_data(), &ad);
        close_to_burns(
            &values(gelu(on_ad).inner()),
            &values(activation::gelu(x)),
            "untracked",
        );
    }
}
