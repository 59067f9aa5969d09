//! `gelu(x·γ + β)`: the DAPT MLP's TFTS on the hidden layer and the GELU after it, as one
//! threaded pass on burn-flex, forward and backward.
//!
//! Apart, the two are the widest element-wise work of a DAPT block (`[b, t, 4c]`): forward a
//! scale-and-shift pass and a GELU pass; backward (under the default checkpointing) the
//! scale-and-shift recomputed, the GELU gradient, the TFTS parameters' column sums and the
//! input gradient: four more passes over a tensor that does not fit in cache. Fused, forward is
//! one pass, and backward one pass that reads `x` and the output's gradient, writes the input's,
//! and keeps per-task partial column sums for `γ` and `β`. The arithmetic is the same as the
//! separate ops' (`model::norm`'s `x·γ + β`, `model::gelu_math`), so the values agree to the
//! last bits apart from the parameter sums' order. Every other backend (wgpu) runs burn's
//! broadcast multiply, add and GELU, which fusion merges into one element-wise kernel.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Shape, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::gelu::ExactGelu;
use super::norm::RowAffine;
use super::{gelu_math, unary_node};

/// Rows per rayon task: a few hundred KiB of the `[rows, 4c]` input each.
const ROWS_PER_TASK: usize = 32;

/// `gelu(x·scale + shift)` and its three gradients as backend operations.
#[backend_extension(Flex, Autodiff)]
pub trait ScaledGelu: Backend {
    /// `gelu(x·scale + shift)`, `scale` and `shift` `[n]` over the last dimension of `x`.
    fn scaled_gelu(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// `(∂x, ∂scale, ∂shift)` given the output's gradient.
    fn scaled_gelu_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// `gelu(x·scale + shift)` over the last dimension of `x`: one fused pass on burn-flex for
/// f32, TFTS (`model::layers::scale_shift`: burn's ops on wgpu, which fusion makes one kernel
/// with the GELU; `model::norm`'s opaque op in their place cost 72 more launches per DAPT step)
/// then GELU everywhere else.
pub fn scaled_gelu<const D: usize>(x: Tensor<D>, scale: Tensor<1>, shift: Tensor<1>) -> Tensor<D> {
    let n = x.dims()[D - 1];
    let fits = scale.dims() == [n] && shift.dims() == [n] && n > 0;
    let f32s = [x.dtype(), scale.dtype(), shift.dtype()] == [DType::F32; 3];
    if fits && f32s && super::on_flex(&x.device()) {
        Tensor::from_dispatch(<Dispatch as ScaledGelu>::scaled_gelu(
            x.into_dispatch(),
            scale.into_dispatch(),
            shift.into_dispatch(),
        ))
    } else {
        super::gelu::gelu(super::layers::scale_shift(x, scale, shift))
    }
}

/// `out[j] = x[j]·s[j] + b[j]`, TFTS's arithmetic.
fn affine_into(x: &[f32], s: &[f32], b: &[f32], out: &mut [f32]) {
    for (((o, &x), &s), &b) in out.iter_mut().zip(x).zip(s).zip(b) {
        *o = x * s + b;
    }
}

/// The contiguous f32 values of `t` and its last dimension, or `None`.
fn rows_of(t: &FlexTensor) -> Option<(&[f32], usize)> {
    let n = t.layout().shape().last().copied()?;
    Some((unary_node::flex_f32(t)?, n))
}

/// The separate operations for what the fused pass does not take (never reached from
/// [`scaled_gelu`], which checks the same conditions; each op answers a mismatch by burn's
/// rules).
fn by_ops(x: FlexTensor, scale: FlexTensor, shift: FlexTensor) -> FlexTensor {
    <Flex as ExactGelu>::exact_gelu(<Flex as RowAffine>::scale_shift(x, scale, shift))
}

fn by_ops_backward(
    x: FlexTensor,
    scale: FlexTensor,
    shift: FlexTensor,
    grad: FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let z = <Flex as RowAffine>::scale_shift(x.clone(), scale.clone(), shift);
    let dz = <Flex as ExactGelu>::exact_gelu_backward(z, grad);
    let (ds, db) = <Flex as RowAffine>::scale_shift_param_backward(x, dz.clone());
    (<Flex as RowAffine>::scale_rows(dz, scale), ds, db)
}

impl ScaledGelu for Flex {
    fn scaled_gelu(x: FlexTensor, scale: FlexTensor, shift: FlexTensor) -> FlexTensor {
        let (x, scale, shift) = (
            x.to_contiguous(),
            scale.to_contiguous(),
            shift.to_contiguous(),
        );
        let (Some((xs, n)), Some(s), Some(b)) = (
            rows_of(&x),
            unary_node::flex_f32(&scale),
            unary_node::flex_f32(&shift),
        ) else {
            return by_ops(x, scale, shift);
        };
        if s.len() != n || b.len() != n || n == 0 {
            return by_ops(x, scale, shift);
        }
        let mut out: Vec<f32> = Vec::with_capacity(xs.len());
        let dst = &mut out.spare_capacity_mut()[..xs.len()];
        let task = n * ROWS_PER_TASK;
        dst.par_chunks_mut(task)
            .zip(xs.par_chunks(task))
            .for_each(|(o, xs)| {
                let mut z = vec![0.0f32; n];
                for (orow, xrow) in o.chunks_mut(n).zip(xs.chunks(n)) {
                    affine_into(xrow, s, b, &mut z);
                    gelu_math::gelu_into(&z, orow);
                }
            });
        // SAFETY: every row of `dst` was written by `gelu_into`, which writes all of its
        // output; `dst` is `xs.len()` long.
        unsafe { out.set_len(xs.len()) };
        unary_node::flex_from_f32(out, &x)
    }

    fn scaled_gelu_backward(
        x: FlexTensor,
        scale: FlexTensor,
        shift: FlexTensor,
        grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (x, scale, shift, grad) = (
            x.to_contiguous(),
            scale.to_contiguous(),
            shift.to_contiguous(),
            grad.to_contiguous(),
        );
        let (Some((xs, n)), Some(s), Some(b), Some(gs)) = (
            rows_of(&x),
            unary_node::flex_f32(&scale),
            unary_node::flex_f32(&shift),
            unary_node::flex_f32(&grad),
        ) else {
            return by_ops_backward(x, scale, shift, grad);
        };
        if s.len() != n || b.len() != n || gs.len() != xs.len() || n == 0 {
            return by_ops_backward(x, scale, shift, grad);
        }
        let mut dx: Vec<f32> = Vec::with_capacity(xs.len());
        let dst = &mut dx.spare_capacity_mut()[..xs.len()];
        let task = n * ROWS_PER_TASK;
        let sums = dst
            .par_chunks_mut(task)
            .zip(xs.par_chunks(task))
            .zip(gs.par_chunks(task))
            .map(|((o, xs), gs)| {
                let mut acc = vec![0.0f32; 2 * n];
                let mut z = vec![0.0f32; n];
                let mut dz = vec![MaybeUninit::<f32>::uninit(); n];
                for ((orow, xrow), grow) in o.chunks_mut(n).zip(xs.chunks(n)).zip(gs.chunks(n)) {
                    affine_into(xrow, s, b, &mut z);
                    gelu_math::gelu_grad_into(&z, grow, &mut dz);
                    let (ds, db) = acc.split_at_mut(n);
                    for j in 0..n {
                        // SAFETY: `gelu_grad_into` wrote all `n` elements of `dz`.
                        let d = unsafe { dz[j].assume_init() };
                        orow[j].write(d * s[j]);
                        ds[j] += d * xrow[j];
                        db[j] += d;
                    }
                }
                acc
            })
            .reduce(|| vec![0.0f32; 2 * n], unary_node::add_partials);
        // SAFETY: every element of `dst` was written in the loop above.
        unsafe { dx.set_len(xs.len()) };
        let (ds, db) = sums.split_at(n);
        (
            unary_node::flex_from_f32(dx, &x),
            unary_node::flex_shaped(ds.to_vec(), Shape::new([n])),
            unary_node::flex_shaped(db.to_vec(), Shape::new([n])),
        )
    }
}

/// The autodiff node: parents `x`, `scale`, `shift`; state: their ids.
#[derive(Debug)]
struct ScaledGeluNode;

impl<B: ScaledGelu> Backward<B, 3> for ScaledGeluNode {
    type State = [NodeId; 3];

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_scale, node_shift] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let [x, scale, shift] = ops
            .state
            .map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        let (dx, ds, db) = B::scaled_gelu_backward(x, scale, shift, grad);
        for (node, g) in [(node_x, dx), (node_scale, ds), (node_shift, db)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: Backend + ScaledGelu, C: CheckpointStrategy> ScaledGelu for Autodiff<B, C> {
    fn scaled_gelu(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let retro = unary_node::Retro3::<B> {
            parents: [x.id(), scale.id(), shift.id()],
            forward: B::scaled_gelu,
        };
        // memory-bound, as GELU and TFTS are: checkpointing keeps the inputs and recomputes
        // the output should a child need it
        match ScaledGeluNode
            .prepare::<C>([x.node(), scale.node(), shift.node()])
            .memory_bound()
            .retro_forward(retro)
            .parents([&x, &scale, &shift])
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = [
                    prep.checkpoint(&x),
                    prep.checkpoint(&scale),
                    prep.checkpoint(&shift),
                ];
                let out = B::scaled_gelu(
                    x.into_primitive(),
                    scale.into_primitive(),
                    shift.into_primitive(),
                );
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::scaled_gelu(
                x.into_primitive(),
                scale.into_primitive(),
                shift.into_primitive(),
            )),
        }
    }

    fn scaled_gelu_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        unary_node::untracked3::<B, C>(B::scaled_gelu_backward(
            x.into_primitive(),
            scale.into_primitive(),
            shift.into_primitive(),
            grad.into_primitive(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    use crate::model::test_util::{close, ternary_grads, values};

    fn separate(x: Tensor<3>, s: Tensor<1>, b: Tensor<1>) -> Tensor<3> {
        super::super::gelu::gelu(crate::model::norm::scale_shift(x, s, b))
    }

    #[test]
    fn the_fused_pass_and_its_gradients_match_the_separate_ops() {
        let device = Device::flex();
        // one task and many, a width that is no multiple of the vector length
        for (b, t, n) in [(1, 3, 5), (4, 70, 1536), (3, 9, 37)] {
            let x = Tensor::<3>::random([b, t, n], Distribution::Normal(0.0, 2.0), &device);
            let w = Tensor::<3>::random([b, t, n], Distribution::Default, &device);
            let s = Tensor::<1>::random([n], Distribution::Normal(1.0, 0.3), &device);
            let sh = Tensor::<1>::random([n], Distribution::Normal(0.0, 0.3), &device);
            let plain = device.clone().autodiff();
            for ad in [plain.clone(), plain.gradient_checkpointing()] {
                let want = ternary_grads(separate, &ad, [&x, &w], &s, &sh);
                let got = ternary_grads(scaled_gelu, &ad, [&x, &w], &s, &sh);
                for (i, what) in ["output", "x gradient", "scale gradient", "shift gradient"]
                    .iter()
                    .enumerate()
                {
                    assert!(!got[i].is_empty(), "{what}: missing");
                    close(&got[i], &want[i], 1e-5, what);
                }
            }
            // inference
            close(
                &values(scaled_gelu(x.clone(), s.clone(), sh.clone())),
                &values(separate(x, s, sh)),
                1e-6,
                "inference",
            );
        }
    }

    #[test]
    fn a_parameter_of_the_wrong_length_takes_the_separate_ops() {
        let device = Device::flex();
        let x = Tensor::<3>::random([2, 3, 4], Distribution::Default, &device);
        let s = Tensor::<1>::ones([1], &device);
        let b = Tensor::<1>::zeros([1], &device);
        // broadcast by burn's rules, as TFTS then GELU would be
        close(
            &values(scaled_gelu(x.clone(), s.clone(), b.clone())),
            &values(separate(x, s, b)),
            0.0,
            "broadcast",
        );
    }
}
