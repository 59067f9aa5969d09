//! Exact GELU, `½·x·(1 + erf(x/√2))`, as one threaded pass on burn-flex, forward and backward.
//!
//! burn-flex computes GELU and its gradient one element at a time on one thread, with a scalar
//! `erff`, and under autodiff each call first collects a fresh `Vec`: 16% of a DAPT step on two
//! cores (BENCHMARKS.md, "An AVX-512 machine"). The model cannot reach burn-flex's loops, so
//! this is a burn backend extension: a burn-flex implementation that splits the same
//! arithmetic (`libm::erff`, `f32::exp`, the same expression order) over rayon's threads, so
//! its values are bit for bit those of `activation::gelu`, and an autodiff node whose backward
//! calls the threaded gradient. Every other backend (wgpu) keeps `activation::gelu`.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Device, Tensor, activation};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::unary_node;

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
    if x.dtype() == DType::F32 && x.device().without_autodiff() == Device::flex() {
        Tensor::from_dispatch(<Dispatch as ExactGelu>::exact_gelu(x.into_dispatch()))
    } else {
        activation::gelu(x)
    }
}

#[inline]
fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x / core::f32::consts::SQRT_2))
}

#[inline]
fn gelu_grad_f32(x: f32, g: f32) -> f32 {
    let inv_sqrt_2pi: f32 = 1.0 / (2.0 * core::f32::consts::PI).sqrt();
    let cdf = 0.5 * (1.0 + libm::erff(x / core::f32::consts::SQRT_2));
    let pdf = inv_sqrt_2pi * (-0.5 * x * x).exp();
    g * (cdf + x * pdf)
}

impl ExactGelu for Flex {
    fn exact_gelu(x: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let Some(values) = unary_node::flex_f32(&x) else {
            return Flex::gelu(x);
        };
        let out: Vec<f32> = if values.len() >= PARALLEL_MIN {
            values
                .par_iter()
                .with_min_len(PARALLEL_MIN / 4)
                .map(|&v| gelu_f32(v))
                .collect()
        } else {
            values.iter().map(|&v| gelu_f32(v)).collect()
        };
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
        let out: Vec<f32> = if xs.len() >= PARALLEL_MIN {
            xs.par_iter()
                .zip(gs.par_iter())
                .with_min_len(PARALLEL_MIN / 4)
                .map(|(&v, &g)| gelu_grad_f32(v, g))
                .collect()
        } else {
            xs.iter()
                .zip(gs)
                .map(|(&v, &g)| gelu_grad_f32(v, g))
                .collect()
        };
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
    use burn::tensor::{Distribution, TensorData};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        crate::readback::flex_values(t)
    }

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

    fn same_bits(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                "{what}: element {i}: {x} against burn's {y}"
            );
        }
    }

    #[test]
    fn threaded_gelu_equals_burns_bit_for_bit_small_large_and_strided() {
        let device = Device::flex();
        // below and above the threading threshold
        for n in [3, 20_000] {
            let x = inputs(n, &device);
            same_bits(
                &values(gelu(x.clone())),
                &values(activation::gelu(x.clone())),
                "contiguous",
            );
            // a transposed view goes through the contiguous copy
            let t = x.swap_dims(0, 1);
            same_bits(
                &values(gelu(t.clone())),
                &values(activation::gelu(t)),
                "strided",
            );
        }
    }

    #[test]
    fn threaded_gelu_gradient_equals_burns_with_and_without_checkpointing() {
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
            same_bits(&ours, &burns, "forward under autodiff");
            assert!(!ours_grad.is_empty(), "no gradient reached the input");
            same_bits(&ours_grad, &burns_grad, "gradient");
        }
    }

    #[test]
    fn untracked_autodiff_tensors_take_the_kernel_without_a_graph() {
        let ad = Device::flex().autodiff();
        let x = inputs(40, &Device::flex());
        let on_ad = Tensor::<2>::from_data(x.clone().into_data(), &ad);
        same_bits(
            &values(gelu(on_ad).inner()),
            &values(activation::gelu(x)),
            "untracked",
        );
    }
}
