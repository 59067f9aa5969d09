//! `relu(x·α + β)` per channel of a `[rows, c]` tensor: the patch encoder's BatchNorm (folded
//! to `x·α + β`, `model::layers::BatchNorm`) and the ReLU after it, as one threaded pass on
//! burn-flex, in place when the input is not shared.
//!
//! burn-flex runs the three as a broadcast multiply, a broadcast add and a ReLU, each a full
//! pass over the encoder's `[points, 512]` activations (128 MiB at batch 32), which are far
//! larger than the caches. Here each row is read once and written once, into the input's own
//! buffer when nothing else holds it (the linear layer's fresh output), so inference and the
//! frozen encoder of DAPT pass over that tensor once instead of three times. The arithmetic is
//! burn-flex's (a multiply, then an add, then its ReLU, which lets NaN through), so the values
//! are the same bits. Only for inputs no gradient flows through: a trained BatchNorm (full
//! fine-tuning) and every other backend keep burn's ops.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Shape, Tensor, activation};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::unary_node;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 64;

/// `relu(x·alpha + beta)` over the last dimension of `[rows, c]` as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait AffineRelu: Backend {
    /// `max(x·alpha + beta, 0)` (NaN kept), `alpha` and `beta` `[c]`.
    fn affine_relu(
        x: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// `relu(x·alpha + beta)` for `x` `[rows, c]` and per-channel `alpha`, `beta` (`[1, c]`): one
/// pass on burn-flex when no gradient flows through any of them, burn's ops otherwise.
pub fn affine_relu(x: Tensor<2>, alpha: Tensor<2>, beta: Tensor<2>) -> Tensor<2> {
    let c = x.dims()[1];
    let f32s = [x.dtype(), alpha.dtype(), beta.dtype()] == [DType::F32; 3];
    let untracked = !(x.is_tracked() || alpha.is_tracked() || beta.is_tracked());
    let fits = alpha.dims() == [1, c] && beta.dims() == [1, c];
    if f32s && untracked && fits && super::on_flex(&x.device()) {
        Tensor::from_dispatch(<Dispatch as AffineRelu>::affine_relu(
            x.into_dispatch(),
            alpha.reshape([c]).into_dispatch(),
            beta.reshape([c]).into_dispatch(),
        ))
    } else {
        activation::relu(x * alpha + beta)
    }
}

/// One row: burn-flex's multiply, add and ReLU in turn.
#[inline(always)]
fn row(x: f32, a: f32, b: f32) -> f32 {
    let y = x * a + b;
    if y.is_nan() || y > 0.0 { y } else { 0.0 }
}

/// burn-flex's own ops, for what the pass does not take (never reached from [`affine_relu`],
/// which checks the same conditions).
fn by_ops(x: FlexTensor, alpha: FlexTensor, beta: FlexTensor) -> FlexTensor {
    let c = alpha.layout().shape().num_elements();
    let alpha = Flex::float_reshape(alpha, Shape::new([1, c]));
    let beta = Flex::float_reshape(beta, Shape::new([1, c]));
    Flex::relu(Flex::float_add(Flex::float_mul(x, alpha), beta))
}

impl AffineRelu for Flex {
    fn affine_relu(x: FlexTensor, alpha: FlexTensor, beta: FlexTensor) -> FlexTensor {
        let (alpha, beta) = (alpha.to_contiguous(), beta.to_contiguous());
        let shape = x.layout().shape().clone();
        let c = shape.last().copied().unwrap_or(0);
        let (Some(a), Some(b)) = (unary_node::flex_f32(&alpha), unary_node::flex_f32(&beta)) else {
            return by_ops(x, alpha, beta);
        };
        if x.dtype() != DType::F32 || a.len() != c || b.len() != c || c == 0 {
            return by_ops(x, alpha, beta);
        }
        let apply = |o: &mut [f32]| {
            for r in o.chunks_mut(c) {
                for ((v, &a), &b) in r.iter_mut().zip(a).zip(b) {
                    *v = row(*v, a, b);
                }
            }
        };
        let task = c * ROWS_PER_TASK;
        // in place when the buffer is ours alone and laid out as the rows are
        let mut x = x;
        let whole = x.is_contiguous() && x.layout().start_offset() == 0;
        if whole
            && let Some(buf) = x.try_storage_mut::<f32>()
            && buf.len() == shape.num_elements()
        {
            buf.par_chunks_mut(task).for_each(apply);
            return x;
        }
        let x = x.to_contiguous();
        let Some(values) = unary_node::flex_f32(&x) else {
            return by_ops(x, alpha, beta);
        };
        let mut out = values.to_vec();
        out.par_chunks_mut(task).for_each(apply);
        unary_node::flex_shaped(out, shape)
    }
}

/// A node that only asks autodiff whether a gradient flows; it is never registered (the
/// tracked case records autodiff's own ops instead), so its backward never runs.
#[derive(Debug)]
struct Probe;

impl<B: Backend> Backward<B, 3> for Probe {
    type State = ();

    fn backward(self, _: Ops<(), 3>, _: &mut Gradients, _: &mut Checkpointer) {}
}

impl<B: Backend + AffineRelu, C: CheckpointStrategy> AffineRelu for Autodiff<B, C> {
    fn affine_relu(
        x: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match Probe
            .prepare::<C>([x.node(), alpha.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::UnTracked(prep) => prep.finish(B::affine_relu(
                x.into_primitive(),
                alpha.into_primitive(),
                beta.into_primitive(),
            )),
            // a gradient flows: autodiff's own ops, which record their own nodes (the
            // prepared node is dropped unregistered)
            OpsKind::Tracked(_) => {
                let c = {
                    use burn::backend::TensorMetadata;
                    alpha.shape().num_elements()
                };
                let alpha = Self::float_reshape(alpha, Shape::new([1, c]));
                let beta = Self::float_reshape(beta, Shape::new([1, c]));
                Self::relu(Self::float_add(Self::float_mul(x, alpha), beta))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    use crate::model::test_util::{same_bits, values};

    fn burns(x: Tensor<2>, a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        activation::relu(x * a + b)
    }

    #[test]
    fn the_pass_matches_burns_ops_in_place_shared_and_strided() {
        let device = Device::flex();
        for (rows, c) in [(3, 5), (700, 48)] {
            let mut v = values(Tensor::<2>::random(
                [rows, c],
                Distribution::Normal(0.0, 2.0),
                &device,
            ));
            v[1] = f32::NAN;
            v[2] = f32::INFINITY;
            let x = Tensor::<2>::from_data(TensorData::new(v, [rows, c]), &device);
            let a = Tensor::<2>::random([1, c], Distribution::Normal(1.0, 0.5), &device);
            let b = Tensor::<2>::random([1, c], Distribution::Normal(0.0, 0.5), &device);
            let want = values(burns(x.clone(), a.clone(), b.clone()));
            // shared: `x` is still held here, so the pass must not write into it
            let before = values(x.clone());
            same_bits(
                &values(affine_relu(x.clone(), a.clone(), b.clone())),
                &want,
                "shared",
            );
            same_bits(&values(x.clone()), &before, "input untouched");
            // unique: a fresh tensor, written in place
            same_bits(
                &values(affine_relu(x.clone() * 1.0, a.clone(), b.clone())),
                &want,
                "unique",
            );
            // a transposed view
            let t = x.clone().transpose().transpose();
            same_bits(&values(affine_relu(t, a, b)), &want, "view");
        }
    }

    #[test]
    fn under_autodiff_untracked_takes_the_pass_and_tracked_keeps_the_gradients() {
        let ad = Device::flex().autodiff();
        let x = Tensor::<2>::random([40, 6], Distribution::Normal(0.0, 1.0), &ad);
        let a = Tensor::<2>::random([1, 6], Distribution::Normal(1.0, 0.5), &ad);
        let b = Tensor::<2>::random([1, 6], Distribution::Normal(0.0, 0.5), &ad);
        same_bits(
            &values(affine_relu(x.clone(), a.clone(), b.clone()).inner()),
            &values(burns(x.clone(), a.clone(), b.clone()).inner()),
            "untracked",
        );
        let run = |f: fn(Tensor<2>, Tensor<2>, Tensor<2>) -> Tensor<2>| {
            let xt = x.clone().require_grad();
            let at = a.clone().require_grad();
            let grads = (f(xt.clone(), at.clone(), b.clone()) * 3.0)
                .sum()
                .backward();
            [
                xt.grad(&grads).map(values).unwrap_or_default(),
                at.grad(&grads).map(values).unwrap_or_default(),
            ]
        };
        let (ours, want) = (run(affine_relu), run(burns));
        assert!(
            !ours[0].is_empty() && !ours[1].is_empty(),
            "gradients missing"
        );
        same_bits(&ours[0], &want[0], "x gradient");
        same_bits(&ours[1], &want[1], "alpha gradient");
    }
}
