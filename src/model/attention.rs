//! The attention core, `softmax(q·kᵀ·scale)·v` for every head, as one burn-flex operation with
//! a hand-written backward, reading q, k and v in place from the qkv projection's output.
//!
//! As burn ops the core is a reshape and permute of `[b, t, 3c]` into three contiguous
//! `[b, h, t, dh]` copies, a batched product, a scale pass, the softmax, a second batched
//! product into a fresh `[b, h, t, dh]`, and a `swap_dims` copy back to `[b, t, c]`; backward
//! adds the products' gradients, their transposed copies and a concatenation back into the
//! qkv layout. A profile of a DAPT step put burn-flex's `copy_2d_tiled` alone at 3-4%. Here
//! each sample is one task: per head, the scores come from gemm reading q and k through their
//! strides in the qkv rows, the softmax runs in place on a `[t, t]` scratch, and `P·v` is written
//! straight into the output's columns of that head. Backward recomputes `P` from qkv (the
//! node keeps only its input) and writes the q, k and v gradients into one `[b, t, 3c]`
//! tensor, each into its own columns. On wgpu the same node runs `model::cube::attention`'s
//! kernels; anything that is not f32 keeps burn's ops.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Shape, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::softmax::{softmax_grad_row, softmax_row};
use super::{cube, unary_node};

/// The attention core over qkv projections, per head.
#[backend_extension(Flex, Cube, Fusion, Autodiff)]
pub trait AttentionCore: Backend {
    /// `qkv` `[b, t, 3c]` (q, k, v side by side, each `heads` heads of `c / heads`) →
    /// `[b, t, c]`, the heads side by side.
    #[fusion(meta = core_spec)]
    fn attention_core(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self>;
    /// The gradient of `qkv` given `qkv` and the output's gradient.
    #[fusion(dtype = qkv, shape = qkv)]
    fn attention_core_backward(
        qkv: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self>;
}

/// Whether the fused core takes `qkv`: f32 `[b, t, 3c]`, `c` a multiple of `heads`, on any
/// backend we build (burn-flex, or CubeCL's wgpu through `model::cube::attention`).
fn fused(qkv: &Tensor<3>, heads: usize) -> bool {
    let [_, t, c3] = qkv.dims();
    qkv.dtype() == DType::F32 && heads > 0 && t > 0 && c3 % (3 * heads) == 0
}

/// The Fusion metadata of the core's output: `[b, t, c]` of qkv's dtype.
fn core_spec(qkv: &TensorSpec, _heads: &usize) -> TensorSpec {
    let mut dims: Vec<usize> = qkv.shape.iter().copied().collect();
    if let Some(last) = dims.last_mut() {
        *last /= 3;
    }
    TensorSpec::new(Shape::from(dims), qkv.dtype)
}

/// `softmax(q·kᵀ/√dh)·v` for every head of `qkv` (`[b, t, 3c]`), as `[b, t, c]`.
pub fn attention_core(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    if fused(&qkv, heads) {
        return Tensor::from_dispatch(<Dispatch as AttentionCore>::attention_core(
            qkv.into_dispatch(),
            heads,
        ));
    }
    by_ops(qkv, heads)
}

/// The same as burn ops (wgpu, other dtypes).
pub fn by_ops(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    let [b, t, c3] = qkv.dims();
    let c = c3 / 3;
    let dh = c / heads.max(1);
    // [b, t, 3, h, dh] -> [3, b, h, t, dh]
    let qkv = qkv.reshape([b, t, 3, heads, dh]).permute([2, 0, 3, 1, 4]);
    let q = qkv.clone().slice_dim(0, 0..1).reshape([b, heads, t, dh]);
    let k = qkv.clone().slice_dim(0, 1..2).reshape([b, heads, t, dh]);
    let v = qkv.slice_dim(0, 2..3).reshape([b, heads, t, dh]);
    let scale = (dh as f64).powf(-0.5);
    let attn = super::softmax::softmax_last(q.matmul(k.swap_dims(2, 3)) * scale);
    attn.matmul(v).swap_dims(1, 2).reshape([b, t, c])
}

/// One sample's geometry: `t` tokens, `heads` heads of `dh`, rows of `3c` in qkv.
#[derive(Clone, Copy)]
struct Geometry {
    t: usize,
    c: usize,
    heads: usize,
    dh: usize,
    scale: f32,
}

impl Geometry {
    fn of(shape: &Shape, heads: usize) -> Option<(usize, Self)> {
        if shape.num_dims() != 3 || heads == 0 {
            return None;
        }
        let (b, t, c3) = (shape[0], shape[1], shape[2]);
        if t == 0 || c3 % (3 * heads) != 0 || c3 == 0 {
            return None;
        }
        let c = c3 / 3;
        let dh = c / heads;
        let scale = (dh as f32).powf(-0.5);
        Some((
            b,
            Self {
                t,
                c,
                heads,
                dh,
                scale,
            },
        ))
    }
}

/// A matrix operand for [`product`]: the first element and the (row, column) strides.
#[derive(Clone, Copy)]
struct Operand {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// `dst (m × n, row stride dst_rs) = beta · lhs (m × k) · rhs (k × n)`, single-threaded,
/// overwriting `dst`.
///
/// # Safety
/// Every element the strides address must lie inside live allocations: `m × n` of `dst`
/// (writable, not aliased by the operands), `m × k` of `lhs`, `k × n` of `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: isize,
    lhs: Operand,
    rhs: Operand,
    beta: f32,
) {
    // SAFETY: forwarded from the caller; `read_dst` false with k > 0 writes every element.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            false,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            0.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Softmax probabilities `P = softmax(q_h·k_hᵀ·scale)` of head `h` of one sample into `p`
/// (`t × t`); `x` is the sample's qkv rows.
fn probabilities(x: &[f32], g: Geometry, h: usize, p: &mut [f32], scores: &mut [f32]) {
    let (t, c3) = (g.t, 3 * g.c as isize);
    let q = Operand {
        ptr: x[h * g.dh..].as_ptr(),
        rs: c3,
        cs: 1,
    };
    // kᵀ: dh × t, its rows step along k's columns
    let kt = Operand {
        ptr: x[g.c + h * g.dh..].as_ptr(),
        rs: 1,
        cs: c3,
    };
    // SAFETY: q and k are t rows of dh values at row stride 3c inside the sample's `t × 3c`
    // rows (h·dh + dh ≤ c); `scores` is t × t.
    unsafe {
        product(
            (t, t, g.dh),
            scores.as_mut_ptr(),
            t as isize,
            q,
            kt,
            g.scale,
        )
    };
    for (srow, prow) in scores.chunks(t).zip(p.chunks_mut(t)) {
        softmax_row(srow, prow);
    }
}

fn forward_sample(x: &[f32], out: &mut [MaybeUninit<f32>], g: Geometry) {
    let t = g.t;
    let mut scores = vec![0.0f32; t * t];
    let mut p = vec![0.0f32; t * t];
    for h in 0..g.heads {
        probabilities(x, g, h, &mut p, &mut scores);
        let pm = Operand {
            ptr: p.as_ptr(),
            rs: t as isize,
            cs: 1,
        };
        let v = Operand {
            ptr: x[2 * g.c + h * g.dh..].as_ptr(),
            rs: 3 * g.c as isize,
            cs: 1,
        };
        // SAFETY: P is t × t, v is t rows of dh at stride 3c, and the head's output columns
        // are t rows of dh at stride c inside `out` (t × c).
        unsafe {
            product(
                (t, g.dh, t),
                out[h * g.dh..].as_mut_ptr().cast::<f32>(),
                g.c as isize,
                pm,
                v,
                1.0,
            )
        };
    }
}

fn backward_sample(x: &[f32], dout: &[f32], dx: &mut [MaybeUninit<f32>], g: Geometry) {
    let (t, c, dh) = (g.t, g.c, g.dh);
    let (c3, ti) = (3 * c as isize, t as isize);
    let mut scores = vec![0.0f32; t * t];
    let mut p = vec![0.0f32; t * t];
    let mut dp = vec![0.0f32; t * t];
    for h in 0..g.heads {
        probabilities(x, g, h, &mut p, &mut scores);
        let col = h * dh;
        let d_o = Operand {
            ptr: dout[col..].as_ptr(),
            rs: c as isize,
            cs: 1,
        };
        // SAFETY (all four products): every operand is t rows of dh at its row stride inside
        // a sample's rows (x and dx: t × 3c; dout: t × c), or a t × t scratch; the dx
        // destinations are the head's own columns of q, k and v, disjoint from the operands.
        unsafe {
            // dv = Pᵀ·dO
            let pt = Operand {
                ptr: p.as_ptr(),
                rs: 1,
                cs: ti,
            };
            product(
                (t, dh, t),
                dx[2 * c + col..].as_mut_ptr().cast(),
                c3,
                pt,
                d_o,
                1.0,
            );
            // dP = dO·vᵀ
            let vt = Operand {
                ptr: x[2 * c + col..].as_ptr(),
                rs: 1,
                cs: c3,
            };
            product((t, t, dh), dp.as_mut_ptr(), ti, d_o, vt, 1.0);
        }
        // dS = P ⊙ (dP − Σ dP ⊙ P), in `p`
        for (prow, grow) in p.chunks_mut(t).zip(dp.chunks(t)) {
            softmax_grad_row(grow, prow);
        }
        unsafe {
            // dq = dS·k·scale
            let ds = Operand {
                ptr: p.as_ptr(),
                rs: ti,
                cs: 1,
            };
            let k = Operand {
                ptr: x[c + col..].as_ptr(),
                rs: c3,
                cs: 1,
            };
            product(
                (t, dh, t),
                dx[col..].as_mut_ptr().cast(),
                c3,
                ds,
                k,
                g.scale,
            );
            // dk = dSᵀ·q·scale
            let dst = Operand {
                ptr: p.as_ptr(),
                rs: 1,
                cs: ti,
            };
            let q = Operand {
                ptr: x[col..].as_ptr(),
                rs: c3,
                cs: 1,
            };
            product(
                (t, dh, t),
                dx[c + col..].as_mut_ptr().cast(),
                c3,
                dst,
                q,
                g.scale,
            );
        }
    }
}

impl AttentionCore for Flex {
    fn attention_core(qkv: FlexTensor, heads: usize) -> FlexTensor {
        let qkv = qkv.to_contiguous();
        let (Some((b, g)), Some(x)) = (
            Geometry::of(qkv.layout().shape(), heads),
            unary_node::flex_f32(&qkv),
        ) else {
            return ops::forward::<Flex>(qkv, heads);
        };
        let (row_in, row_out) = (g.t * 3 * g.c, g.t * g.c);
        // left uninitialised, not zeroed (a serial fill): the heads' products overwrite every
        // column of every row
        let mut out: Vec<f32> = Vec::with_capacity(b * row_out);
        out.spare_capacity_mut()[..b * row_out]
            .par_chunks_mut(row_out)
            .zip(x.par_chunks(row_in))
            .for_each(|(o, x)| forward_sample(x, o, g));
        // SAFETY: each head's product wrote its dh columns of all t rows of every sample
        unsafe { out.set_len(b * row_out) };
        unary_node::flex_shaped(out, Shape::new([b, g.t, g.c]))
    }

    fn attention_core_backward(qkv: FlexTensor, grad: FlexTensor, heads: usize) -> FlexTensor {
        let qkv = qkv.to_contiguous();
        let grad = grad.to_contiguous();
        let geometry = Geometry::of(qkv.layout().shape(), heads);
        let (Some((b, g)), Some(x), Some(gs)) = (
            geometry,
            unary_node::flex_f32(&qkv),
            unary_node::flex_f32(&grad),
        ) else {
            return ops::backward::<Flex>(qkv, grad, heads);
        };
        let (row_in, row_out) = (g.t * 3 * g.c, g.t * g.c);
        if gs.len() != b * row_out {
            return ops::backward::<Flex>(qkv, grad, heads);
        }
        // left uninitialised, not zeroed: the q, k and v products of every head overwrite all
        // 3c columns of every row
        let mut dx: Vec<f32> = Vec::with_capacity(b * row_in);
        dx.spare_capacity_mut()[..b * row_in]
            .par_chunks_mut(row_in)
            .zip(x.par_chunks(row_in))
            .zip(gs.par_chunks(row_out))
            .for_each(|((d, x), go)| backward_sample(x, go, d, g));
        // SAFETY: dq, dk and dv of each head wrote its dh columns of q, k and v in every row
        unsafe { dx.set_len(b * row_in) };
        unary_node::flex_shaped(dx, qkv.layout().shape().clone())
    }
}

/// The core from the backend's own ops, for what the kernels do not take (another dtype, a
/// shape that does not split into heads or exceeds a kernel's indices).
mod ops {
    use super::*;
    use burn::backend::TensorMetadata;
    use burn::tensor::Slice;

    /// q, k and v as `[b, h, t, dh]`, and the scale.
    pub(super) fn split<B: Backend>(
        qkv: FloatTensor<B>,
        heads: usize,
    ) -> ([FloatTensor<B>; 3], [usize; 4], f32) {
        let shape = qkv.shape();
        let (b, t, c) = (shape[0], shape[1], shape[2] / 3);
        let dh = c / heads.max(1);
        let x = B::float_reshape(qkv, Shape::new([b, t, 3, heads, dh]));
        let x = B::float_permute(x, &[2, 0, 3, 1, 4]);
        let part = |i: isize| {
            let mut ranges = vec![Slice::from(..); 5];
            ranges[0] = Slice {
                start: i,
                end: Some(i + 1),
                step: 1,
            };
            B::float_reshape(
                B::float_slice(x.clone(), &ranges),
                Shape::new([b, heads, t, dh]),
            )
        };
        (
            [part(0), part(1), part(2)],
            [b, heads, t, dh],
            (dh as f32).powf(-0.5),
        )
    }

    fn probabilities<B: Backend>(
        q: FloatTensor<B>,
        k: FloatTensor<B>,
        scale: f32,
    ) -> FloatTensor<B> {
        let s = B::float_matmul(q, B::float_swap_dims(k, 2, 3));
        B::softmax(B::float_mul_scalar(s, scale.into()), 3)
    }

    pub fn forward<B: Backend>(qkv: FloatTensor<B>, heads: usize) -> FloatTensor<B> {
        let ([q, k, v], [b, h, t, dh], scale) = split::<B>(qkv, heads);
        let o = B::float_matmul(probabilities::<B>(q, k, scale), v);
        B::float_reshape(B::float_swap_dims(o, 1, 2), Shape::new([b, t, h * dh]))
    }

    pub fn backward<B: Backend>(
        qkv: FloatTensor<B>,
        grad: FloatTensor<B>,
        heads: usize,
    ) -> FloatTensor<B> {
        let ([q, k, v], [b, h, t, dh], scale) = split::<B>(qkv, heads);
        let p = probabilities::<B>(q.clone(), k.clone(), scale);
        let d_o = B::float_swap_dims(B::float_reshape(grad, Shape::new([b, t, h, dh])), 1, 2);
        let dv = B::float_matmul(B::float_swap_dims(p.clone(), 2, 3), d_o.clone());
        let dp = B::float_matmul(d_o, B::float_swap_dims(v, 2, 3));
        let dot = B::float_sum_dim(B::float_mul(dp.clone(), p.clone()), 3);
        let ds = B::float_mul_scalar(B::float_mul(p, B::float_sub(dp, dot)), scale.into());
        let dq = B::float_matmul(ds.clone(), k);
        let dk = B::float_matmul(B::float_swap_dims(ds, 2, 3), q);
        let stacked = B::float_cat(
            [dq, dk, dv]
                .into_iter()
                .map(|g| B::float_reshape(g, Shape::new([1, b, h, t, dh])))
                .collect(),
            0,
        );
        // [3, b, h, t, dh] back to [b, t, 3, h, dh]
        let x = B::float_permute(stacked, &[1, 3, 0, 2, 4]);
        B::float_reshape(x, Shape::new([b, t, 3 * h * dh]))
    }
}

impl AttentionCore for CubeBackend {
    fn attention_core(qkv: CubeTensor, heads: usize) -> CubeTensor {
        if cube::attention::fits(&qkv, heads)
            && let Some(out) = cube::attention::forward(qkv.clone(), heads)
        {
            return out;
        }
        ops::forward::<Self>(qkv, heads)
    }

    fn attention_core_backward(qkv: CubeTensor, grad: CubeTensor, heads: usize) -> CubeTensor {
        if cube::attention::fits(&qkv, heads)
            && let Some(dx) = cube::attention::backward(qkv.clone(), grad.clone(), heads)
        {
            return dx;
        }
        ops::backward::<Self>(qkv, grad, heads)
    }
}

/// The autodiff node: one parent (qkv), state: its id; the heads to split into.
#[derive(Debug)]
struct CoreNode {
    heads: usize,
}

impl<B: AttentionCore> Backward<B, 1> for CoreNode {
    type State = NodeId;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let qkv: FloatTensor<B> = checkpointer.retrieve_node_output(ops.state);
        let heads = self.heads;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::attention_core_backward(qkv, grad, heads)
        });
    }
}

impl<B: Backend + AttentionCore, C: CheckpointStrategy> AttentionCore for Autodiff<B, C> {
    fn attention_core(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        // compute-bound (products): checkpointing keeps the output when a child needs it
        let node = CoreNode { heads };
        match node.prepare::<C>([qkv.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&qkv);
                prep.finish(state, B::attention_core(qkv.into_primitive(), heads))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::attention_core(qkv.into_primitive(), heads)),
        }
    }

    fn attention_core_backward(
        qkv: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        unary_node::untracked::<B, C>(B::attention_core_backward(
            qkv.into_primitive(),
            grad.into_primitive(),
            heads,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    use crate::model::test_util::{close, values};

    fn run(
        f: fn(Tensor<3>, usize) -> Tensor<3>,
        ad: &Device,
        x: &Tensor<3>,
        w: &Tensor<3>,
        heads: usize,
    ) -> [Vec<f32>; 2] {
        let xa = Tensor::<3>::from_data(x.clone().into_data(), ad).require_grad();
        let wa = Tensor::<3>::from_data(w.clone().into_data(), ad);
        // a tracked op before and after, as in the model
        let y = f(xa.clone() * 1.5, heads) * wa;
        let out = values(y.clone().inner());
        let grads = y.sum().backward();
        [out, xa.grad(&grads).map(values).unwrap_or_default()]
    }

    #[test]
    fn the_fused_core_and_its_gradient_match_burns_ops() {
        let device = Device::flex();
        for (b, t, c, heads) in [(2, 5, 8, 2), (3, 77, 384, 6), (1, 1, 12, 3)] {
            let x = Tensor::<3>::random([b, t, 3 * c], Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<3>::random([b, t, c], Distribution::Default, &device);
            let plain = device.clone().autodiff();
            let want = run(by_ops, &plain, &x, &w, heads);
            for ad in [plain.clone(), plain.clone().gradient_checkpointing()] {
                let got = run(attention_core, &ad, &x, &w, heads);
                close(&got[0], &want[0], 1e-5, "output");
                assert!(!got[1].is_empty(), "no gradient reached qkv");
                close(&got[1], &want[1], 1e-4, "qkv gradient");
            }
            // inference
            close(
                &values(attention_core(x.clone(), heads)),
                &values(by_ops(x, heads)),
                1e-5,
                "inference",
            );
        }
    }

    #[test]
    fn the_backend_op_fallback_matches_the_kernels() {
        // what CubeCL and burn-flex run for what their kernels refuse (another dtype, indices
        // past 32 bits): burn ops, forward and gradient
        let device = Device::flex();
        let (b, t, c, heads) = (2, 9, 24, 3);
        let x = Tensor::<3>::random([b, t, 3 * c], Distribution::Normal(0.0, 1.0), &device);
        let g = Tensor::<3>::random([b, t, c], Distribution::Default, &device);
        let flex = |t: &Tensor<3>| FlexTensor::from_data(t.clone().into_data());
        let flex_values = |t: FlexTensor| {
            unary_node::flex_f32(&t.to_contiguous())
                .unwrap_or_default()
                .to_vec()
        };
        let kernel = <Flex as AttentionCore>::attention_core(flex(&x), heads);
        let by_ops = ops::forward::<Flex>(flex(&x), heads);
        close(&flex_values(by_ops), &flex_values(kernel), 1e-5, "forward");
        let kernel = <Flex as AttentionCore>::attention_core_backward(flex(&x), flex(&g), heads);
        let by_ops = ops::backward::<Flex>(flex(&x), flex(&g), heads);
        let (k, o) = (flex_values(kernel), flex_values(by_ops));
        assert_eq!(k.len(), b * t * 3 * c);
        close(&o, &k, 1e-4, "gradient");
    }

    #[test]
    fn a_strided_input_goes_through_the_contiguous_copy() {
        let device = Device::flex();
        let x = Tensor::<3>::random([4, 3, 18], Distribution::Default, &device);
        // a transposed view goes through the contiguous copy
        let t = x.clone().swap_dims(0, 1);
        close(
            &values(attention_core(t.clone(), 2)),
            &values(by_ops(t.clone(), 2)),
            1e-5,
            "strided",
        );
    }
}
