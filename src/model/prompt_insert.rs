//! DAPT's internal prompt put in after the class token, `[x[:, :1], p, x[:, 1:]]`, as one
//! operation with its own backward.
//!
//! As burn's ops it is two slices of `x` and a concatenation. burn-flex runs the copy on one
//! thread, and in backward each slice's gradient is a zero tensor of `x`'s shape with the
//! slice written into it, the two then summed: two fills, two copies and an addition over
//! `[b, t, c]` per block, every one of them serial while the other core waits (a profile of
//! the main thread of a DAPT step put burn-flex's copies, fills and additions at ~6% of the
//! step). Here forward is one threaded copy and backward one threaded pass that splits the
//! output's gradient into `x`'s and the prompt's. burn-flex only; wgpu keeps burn's ops, which
//! run as device kernels.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Shape, Slice, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::unary_node;

/// The prompt insertion and its gradient as backend operations.
#[backend_extension(Flex, Autodiff)]
pub trait PromptInsert: Backend {
    /// `x` `[b, t, c]` with `prompt` `[b, 1, c]` put in at token 1: `[b, t + 1, c]`.
    fn insert_prompt(x: FloatTensor<Self>, prompt: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradients of `x` and of the prompt given the output's: token 1 of `grad` is the
    /// prompt's, the others `x`'s.
    fn insert_prompt_backward(grad: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// `[x[:, :1], prompt, x[:, 1:]]` along the token dimension: the threaded operation on
/// burn-flex for f32, burn's slices and concatenation elsewhere.
pub fn insert_prompt(x: Tensor<3>, prompt: Tensor<3>) -> Tensor<3> {
    let [b, t, c] = x.dims();
    let fits = t >= 1 && prompt.dims() == [b, 1, c];
    let f32s = x.dtype() == DType::F32 && prompt.dtype() == DType::F32;
    if fits && f32s && super::on_flex(&x.device()) {
        Tensor::from_dispatch(<Dispatch as PromptInsert>::insert_prompt(
            x.into_dispatch(),
            prompt.into_dispatch(),
        ))
    } else {
        by_ops(x, prompt)
    }
}

/// The same through burn's tensor ops.
pub fn by_ops(x: Tensor<3>, prompt: Tensor<3>) -> Tensor<3> {
    let t = x.dims()[1];
    Tensor::cat(
        vec![x.clone().slice_dim(1, 0..1), prompt, x.slice_dim(1, 1..t)],
        1,
    )
}

/// `[b, t, c]` of a contiguous f32 burn-flex tensor, and its values.
fn dims_of(t: &FlexTensor) -> Option<([usize; 3], &[f32])> {
    let shape = t.layout().shape();
    if shape.num_dims() != 3 {
        return None;
    }
    Some(([shape[0], shape[1], shape[2]], unary_node::flex_f32(t)?))
}

/// Tokens `range` (dimension 1) of `t`, every other dimension whole.
fn token_range(t: &FlexTensor, range: std::ops::Range<usize>) -> FlexTensor {
    let slices: Vec<Slice> = t
        .layout()
        .shape()
        .iter()
        .enumerate()
        .map(|(d, &n)| match d {
            1 => Slice::new(range.start as isize, Some(range.end as isize), 1),
            _ => Slice::new(0, Some(n as isize), 1),
        })
        .collect();
    Flex::float_slice(t.clone(), &slices)
}

/// burn-flex's own slices and concatenation: what the threaded passes do not take (another
/// dtype, mismatched shapes).
fn flex_by_ops(x: FlexTensor, prompt: FlexTensor) -> FlexTensor {
    let t = x.layout().shape().get(1).copied().unwrap_or(0);
    let (first, rest) = (token_range(&x, 0..t.min(1)), token_range(&x, t.min(1)..t));
    Flex::float_cat(vec![first, prompt, rest], 1)
}

impl PromptInsert for Flex {
    fn insert_prompt(x: FlexTensor, prompt: FlexTensor) -> FlexTensor {
        let (x, prompt) = (x.to_contiguous(), prompt.to_contiguous());
        let (Some(([b, t, c], xs)), Some((pd, ps))) = (dims_of(&x), dims_of(&prompt)) else {
            return flex_by_ops(x, prompt);
        };
        if pd != [b, 1, c] || t == 0 || c == 0 {
            return flex_by_ops(x, prompt);
        }
        let mut out: Vec<f32> = Vec::with_capacity(b * (t + 1) * c);
        out.spare_capacity_mut()[..b * (t + 1) * c]
            .par_chunks_mut((t + 1) * c)
            .zip(xs.par_chunks(t * c))
            .zip(ps.par_chunks(c))
            .for_each(|((o, x), p)| {
                let (head, rest) = o.split_at_mut(c);
                let (slot, tail) = rest.split_at_mut(c);
                for (o, &v) in head.iter_mut().zip(&x[..c]) {
                    o.write(v);
                }
                for (o, &v) in slot.iter_mut().zip(p) {
                    o.write(v);
                }
                for (o, &v) in tail.iter_mut().zip(&x[c..]) {
                    o.write(v);
                }
            });
        // SAFETY: each sample's t + 1 rows of c were written above: row 0, the prompt, and
        // the t − 1 rows after it
        unsafe { out.set_len(b * (t + 1) * c) };
        unary_node::flex_shaped(out, Shape::new([b, t + 1, c]))
    }

    fn insert_prompt_backward(grad: FlexTensor) -> (FlexTensor, FlexTensor) {
        let grad = grad.to_contiguous();
        let Some(([b, t1, c], gs)) = dims_of(&grad).filter(|(d, _)| d[1] >= 2 && d[2] > 0) else {
            // burn-flex's slices: a first token, the prompt's, the rest
            let t1 = grad.layout().shape().get(1).copied().unwrap_or(0);
            let at = |i: usize| i.min(t1);
            let x = Flex::float_cat(
                vec![token_range(&grad, 0..at(1)), token_range(&grad, at(2)..t1)],
                1,
            );
            return (x, token_range(&grad, at(1)..at(2)));
        };
        let t = t1 - 1;
        let mut gx: Vec<f32> = Vec::with_capacity(b * t * c);
        let mut gp: Vec<f32> = Vec::with_capacity(b * c);
        gx.spare_capacity_mut()[..b * t * c]
            .par_chunks_mut(t * c)
            .zip(gp.spare_capacity_mut()[..b * c].par_chunks_mut(c))
            .zip(gs.par_chunks(t1 * c))
            .for_each(|((x, p), g)| {
                let (head, tail) = x.split_at_mut(c);
                for (o, &v) in head.iter_mut().zip(&g[..c]) {
                    o.write(v);
                }
                for (o, &v) in p.iter_mut().zip(&g[c..2 * c]) {
                    o.write(v);
                }
                for (o, &v) in tail.iter_mut().zip(&g[2 * c..]) {
                    o.write(v);
                }
            });
        // SAFETY: every sample's t rows of `x`'s gradient and its prompt row were written above
        unsafe {
            gx.set_len(b * t * c);
            gp.set_len(b * c);
        }
        (
            unary_node::flex_shaped(gx, Shape::new([b, t, c])),
            unary_node::flex_shaped(gp, Shape::new([b, 1, c])),
        )
    }
}

/// The node: parents `x` and the prompt, no state (the split needs only the gradient).
#[derive(Debug)]
struct InsertNode;

impl<B: PromptInsert> Backward<B, 2> for InsertNode {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, p_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (gx, gp) = B::insert_prompt_backward(grad);
        if let Some(node) = x_node {
            grads.register::<B>(node.id, gx);
        }
        if let Some(node) = p_node {
            grads.register::<B>(node.id, gp);
        }
    }
}

impl<B: Backend + PromptInsert, C: CheckpointStrategy> PromptInsert for Autodiff<B, C> {
    fn insert_prompt(x: FloatTensor<Self>, prompt: FloatTensor<Self>) -> FloatTensor<Self> {
        // kept, as burn's concatenation keeps its output: the next block reads it in forward
        // and its LayerNorm and residual again in backward
        InsertNode
            .prepare::<C>([x.node(), prompt.node()])
            .compute_bound()
            .stateless(B::insert_prompt(
                x.into_primitive(),
                prompt.into_primitive(),
            ))
    }

    fn insert_prompt_backward(grad: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (gx, gp) = B::insert_prompt_backward(grad.into_primitive());
        (
            unary_node::untracked::<B, C>(gx),
            unary_node::untracked::<B, C>(gp),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    use crate::model::test_util::{same_bits, values};

    /// Output and the gradients of `x` and the prompt of `sum(f(x·1.5, p·0.5)·w)`.
    fn run(
        f: fn(Tensor<3>, Tensor<3>) -> Tensor<3>,
        ad: &Device,
        x: &Tensor<3>,
        p: &Tensor<3>,
        w: &Tensor<3>,
    ) -> [Vec<f32>; 3] {
        let xa = Tensor::<3>::from_data(x.clone().into_data(), ad).require_grad();
        let pa = Tensor::<3>::from_data(p.clone().into_data(), ad).require_grad();
        let wa = Tensor::<3>::from_data(w.clone().into_data(), ad);
        let y = f(xa.clone() * 1.5, pa.clone() * 0.5) * wa;
        let out = values(y.clone().inner());
        let grads = y.sum().backward();
        [
            out,
            xa.grad(&grads).map(values).unwrap_or_default(),
            pa.grad(&grads).map(values).unwrap_or_default(),
        ]
    }

    #[test]
    fn the_insertion_and_its_gradients_match_burns_slices_and_cat() {
        let device = Device::flex();
        for [b, t, c] in [[3, 5, 4], [32, 65, 384], [1, 1, 7]] {
            let x = Tensor::<3>::random([b, t, c], Distribution::Default, &device);
            let p = Tensor::<3>::random([b, 1, c], Distribution::Default, &device);
            let w = Tensor::<3>::random([b, t + 1, c], Distribution::Default, &device);
            let plain = device.clone().autodiff();
            let want = run(by_ops, &plain, &x, &p, &w);
            for ad in [plain.clone(), plain.clone().gradient_checkpointing()] {
                let got = run(insert_prompt, &ad, &x, &p, &w);
                for (i, what) in ["output", "x's gradient", "the prompt's gradient"]
                    .iter()
                    .enumerate()
                {
                    assert!(!got[i].is_empty(), "{what}: nothing came back");
                    same_bits(&got[i], &want[i], what);
                }
            }
            same_bits(
                &values(insert_prompt(x.clone(), p.clone())),
                &values(by_ops(x, p)),
                "inference",
            );
        }
    }

    #[test]
    fn a_strided_input_and_an_untracked_prompt_work() {
        let device = Device::flex();
        let x = Tensor::<3>::random([4, 6, 3], Distribution::Default, &device);
        let p = Tensor::<3>::random([4, 1, 3], Distribution::Default, &device);
        // the first half of each row: a view whose rows are not contiguous
        let wide = Tensor::cat(vec![x.clone(), x.clone()], 2);
        let strided = wide.slice_dim(2, 0..3);
        same_bits(
            &values(insert_prompt(strided, p.clone())),
            &values(by_ops(x.clone(), p.clone())),
            "strided input",
        );
        let ad = device.autodiff();
        let xa = Tensor::<3>::from_data(x.into_data(), &ad).require_grad();
        let pa = Tensor::<3>::from_data(p.into_data(), &ad);
        let grads = insert_prompt(xa.clone(), pa).sum().backward();
        let gx = xa.grad(&grads).map(values).unwrap_or_default();
        assert_eq!(
            gx,
            vec![1.0; 4 * 6 * 3],
            "x's gradient with an untracked prompt"
        );
    }
}
