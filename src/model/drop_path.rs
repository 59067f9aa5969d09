//! Stochastic depth's per-sample scale, `x · keep[b]` with `keep` `[b, 1, 1]`, as an autodiff
//! node whose only parent is `x`.
//!
//! As burn's `x * mask`, the mask is a second parent, and an untracked one (a constant of the
//! step). burn's checkpointing recomputes a memory-bound node in backward only when every parent
//! is tracked; with an untracked parent it treats the product as compute-bound and keeps its
//! output, a `[b, t, c]` tensor, wherever a later node needs it. Each transformer block has two
//! drop-paths whose outputs the residual sums and the next LayerNorm need: 2 of the 13.6
//! channel-widths a DAPT block kept per token (OBJ_BG, batch 32: the step's peak in use fell
//! from 1,165 to 1,062 MiB without them; BENCHMARKS.md, "Drop-path's mask"). Here the mask lives in the node (its state and its retro-forward), so the
//! product is recomputed from `x` like any other element-wise node, with the same
//! multiplication. On burn-flex only: wgpu keeps burn's product, which fusion merges into the
//! kernels around it.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::retro_forward::RetroForward;
use burn::backend::autodiff::checkpoint::state::BackwardStates;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;
use burn_flex::FlexTensor;

type Primitive<B> = <B as burn::backend::BackendTypes>::FloatTensorPrimitive;

/// `x · keep`, `keep` broadcast over every dimension but the first.
#[backend_extension(Flex, Autodiff)]
pub trait SampleScale: Backend {
    /// `x` `[b, ...]` times `keep` (`[b, 1, ...]`, the same rank), element by element with
    /// broadcasting. Under autodiff `keep` is a constant: it gets no gradient and is not a
    /// parent of the node.
    fn sample_scale(x: FloatTensor<Self>, keep: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `x · keep` with `keep` `[b, 1, 1]` a constant of the step (never differentiated): the node
/// on burn-flex, burn's product elsewhere.
pub fn sample_scale(x: Tensor<3>, keep: Tensor<3>) -> Tensor<3> {
    if !super::on_flex(&x.device()) {
        // on wgpu the product fuses with its neighbours into their kernels; as an opaque
        // operation it cost 77 more launches per DAPT step on lavapipe (1,775 → 1,852), and
        // without a GPU to weigh them against the memory, burn's product stays
        return x * keep;
    }
    Tensor::from_dispatch(<Dispatch as SampleScale>::sample_scale(
        x.into_dispatch(),
        keep.into_dispatch(),
    ))
}

impl SampleScale for Flex {
    fn sample_scale(x: FlexTensor, keep: FlexTensor) -> FlexTensor {
        Flex::float_mul(x, keep)
    }
}

/// The node: one parent (`x`); state: the scale.
#[derive(Debug)]
struct ScaleNode;

impl<B: SampleScale> Backward<B, 1> for ScaleNode {
    type State = Primitive<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let keep = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::sample_scale(grad, keep)
        });
    }
}

/// Recomputes `x · keep` from `x` when checkpointing dropped the output.
struct Retro<B: Backend> {
    input: NodeId,
    keep: Primitive<B>,
}

impl<B: Backend> core::fmt::Debug for Retro<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SampleScaleRetro")
            .field("input", &self.input)
            .finish()
    }
}

impl<B: SampleScale> RetroForward for Retro<B> {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let x = states.get_state::<Primitive<B>>(&self.input);
        states.save(out_node, B::sample_scale(x, self.keep.clone()));
    }
}

impl<B: Backend + SampleScale, C: CheckpointStrategy> SampleScale for Autodiff<B, C> {
    fn sample_scale(x: FloatTensor<Self>, keep: FloatTensor<Self>) -> FloatTensor<Self> {
        // the scale is a constant of the step: its inner tensor, never a parent
        let keep = keep.into_primitive();
        let retro = Retro::<B> {
            input: x.id(),
            keep: keep.clone(),
        };
        match ScaleNode
            .prepare::<C>([x.node()])
            .memory_bound()
            .retro_forward(retro)
            .parents([&x])
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::sample_scale(x.into_primitive(), keep.clone());
                prep.finish(keep, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::sample_scale(x.into_primitive(), keep)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    use crate::model::test_util::{same_bits, values};

    /// Output and input gradient of `sum((f(x·1.5, keep) + x)·w)`, as the residual uses it.
    fn run(
        f: fn(Tensor<3>, Tensor<3>) -> Tensor<3>,
        ad: &Device,
        x: &Tensor<3>,
        keep: &[f32],
        w: &Tensor<3>,
    ) -> (Vec<f32>, Vec<f32>) {
        let xa = Tensor::<3>::from_data(x.clone().into_data(), ad).require_grad();
        let k = Tensor::<3>::from_data(TensorData::new(keep.to_vec(), [keep.len(), 1, 1]), ad);
        let wa = Tensor::<3>::from_data(w.clone().into_data(), ad);
        let y = (f(xa.clone() * 1.5, k) + xa.clone()) * wa;
        let out = values(y.clone().inner());
        let grads = y.sum().backward();
        (out, xa.grad(&grads).map(values).unwrap_or_default())
    }

    #[test]
    fn the_scale_node_gives_burns_product_and_gradient_on_every_strategy() {
        let device = Device::flex();
        let x = Tensor::<3>::random([3, 5, 4], Distribution::Default, &device);
        let w = Tensor::<3>::random([3, 5, 4], Distribution::Default, &device);
        let keep = [1.25f32, 0.0, 1.25];
        let plain = device.clone().autodiff();
        let want = run(|x, k| x * k, &plain, &x, &keep, &w);
        for ad in [plain.clone(), plain.clone().gradient_checkpointing()] {
            let got = run(sample_scale, &ad, &x, &keep, &w);
            same_bits(&got.0, &want.0, "output");
            assert!(!got.1.is_empty(), "no gradient reached x");
            same_bits(&got.1, &want.1, "gradient");
        }
        // inference
        let k = Tensor::<3>::from_data(TensorData::new(keep.to_vec(), [3, 1, 1]), &device);
        same_bits(
            &values(sample_scale(x.clone(), k.clone())),
            &values(x * k),
            "inference",
        );
    }
}
