//! The model's fully connected layer, `y = x·W + b` with `W` stored `[in, out]` as burn's
//! `nn::Linear` stores it, and on burn-flex one threaded pass of row blocks per product.
//!
//! burn-flex runs a linear layer as a matmul into `FlexTensor::empty` (a zeroed `Vec<u8>`
//! that `Bytes` then copies again to realign it) followed by a separate bias pass, and picks
//! between one 2-D gemm over all rows and one gemm per batch item from the shapes alone. A
//! profile of a DAPT step at OBJ_BG put 6% in that allocation and its copy and another 1.5% in
//! the page faults it causes (BENCHMARKS.md, "Row-block linear"). Here the output is written
//! once: the bias goes in first and the gemm accumulates onto it, and the rows are split into
//! as many blocks as keep every thread busy, each block a single-threaded gemm of a few hundred
//! rows, the size at which gemm ran fastest on every layer shape of the model. The backward
//! products (`g·Wᵀ` for the input, `xᵀ·g` for the weight) read the stored matrices through
//! their strides, without a transposed copy. wgpu, and anything that is not f32, keep burn's
//! `module::linear`; on a GPU over many rows `model::row_split` shapes the product and the bias
//! so that neither gradient is one reduction over every row.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::module::{Module, Param};
use burn::nn::LinearConfig;
use burn::tensor::{DType, Device, Shape, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{row_split, unary_node};

/// Rows per gemm that ran fastest on the model's layer shapes (BENCHMARKS.md).
const BLOCK_ROWS: usize = 512;

/// `nn.Linear`: weight `[in, out]`, optional bias `[out]`; the same record as burn's
/// `nn::Linear`, so checkpoints and the official-name mapping see no difference.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// PyTorch's default init (kaiming-uniform a=√5 → U(±1/√fan_in) for weight and bias).
    pub fn new(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Self {
        let burns = LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
        Self {
            weight: burns.weight,
            bias: burns.bias,
        }
    }

    /// `x·W + b` over the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        apply(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }
}

/// `x·W + b` over the last dimension of `x` (`W`: `[in, out]`), for weights that are not a
/// layer's own (a product of two layers' weights): the row-block kernel on burn-flex, row
/// blocks on a GPU over many rows, burn's `linear` elsewhere.
pub fn apply<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    if x.dtype() == DType::F32 && super::on_flex(&x.device()) {
        let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
        Tensor::from_dispatch(match bias {
            Some(b) => <Dispatch as RowLinear>::row_linear_bias(x, weight, b.into_dispatch()),
            None => <Dispatch as RowLinear>::row_linear(x, weight),
        })
    } else if row_split::split_rows(&x).is_some() {
        // on a GPU over many rows (`model::row_split`): the weight's gradient in row
        // blocks, the bias's in two short reductions
        let out = row_split::matmul_rows(x, weight);
        match bias {
            Some(b) => row_split::add_to_rows(out, b),
            None => out,
        }
    } else {
        burn::tensor::module::linear(x, weight, bias)
    }
}

/// The linear layer and the two products of its backward as backend operations.
#[backend_extension(Flex, Autodiff)]
pub trait RowLinear: Backend {
    /// `x·W` over the last dimension of `x`; `W` is `[in, out]`.
    fn row_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x·W + b`.
    fn row_linear_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// The input's gradient, `g·Wᵀ`.
    fn row_linear_x_backward(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// The weight's gradient, `xᵀ·g` summed over every row.
    fn row_linear_weight_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// A row-major f32 matrix seen through its strides: the storage from its first element on.
pub(super) struct Matrix<'a> {
    pub(super) values: &'a [f32],
    pub(super) rows: usize,
    pub(super) cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> Matrix<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub(super) fn row_major(values: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            values,
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// A 2-D f32 tensor with non-negative strides, every element inside its storage.
    pub(super) fn of(t: &'a FlexTensor) -> Option<Self> {
        if t.dtype() != DType::F32 || t.layout().num_dims() != 2 {
            return None;
        }
        let shape = t.layout().shape();
        let (rows, cols) = (shape[0], shape[1]);
        let strides = t.layout().strides();
        let (rs, cs) = (strides[0], strides[1]);
        if rs < 0 || cs < 0 || rows == 0 || cols == 0 {
            return None;
        }
        let storage = t.storage::<f32>();
        let start = t.layout().start_offset();
        let last = start + (rows - 1) * rs as usize + (cols - 1) * cs as usize;
        (last < storage.len()).then(|| Self {
            values: &storage[start..],
            rows,
            cols,
            row_stride: rs,
            col_stride: cs,
        })
    }
}

/// `wᵀ` as a contiguous row-major `cols × rows` matrix, copied in cache-sized tiles, a band
/// of output rows per rayon task.
pub(super) fn transposed(w: &Matrix) -> Vec<f32> {
    const TILE: usize = 32;
    let (rows, cols) = (w.rows, w.cols);
    let (rs, cs) = (w.row_stride as usize, w.col_stride as usize);
    // left uninitialised, not zeroed: every element is written below, and the zeroing was a
    // serial fill of the whole weight before each frozen layer's input gradient
    let mut out: Vec<f32> = Vec::with_capacity(rows * cols);
    out.spare_capacity_mut()[..rows * cols]
        .par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, dst)| {
            let j0 = band * TILE;
            for i0 in (0..rows).step_by(TILE) {
                let i1 = (i0 + TILE).min(rows);
                for (dj, out_row) in dst.chunks_mut(rows).enumerate() {
                    let col = &w.values[(j0 + dj) * cs..];
                    for (i, o) in (i0..i1).zip(&mut out_row[i0..i1]) {
                        o.write(col[i * rs]);
                    }
                }
            }
        });
    // SAFETY: the bands cover all `cols` output rows, and each output row's `rows` elements
    // were written tile by tile above
    unsafe { out.set_len(rows * cols) };
    out
}

/// Contiguous f32 rows of `t` (rows, row length, values), or `None`.
fn rows_of(t: &FlexTensor) -> Option<(usize, usize, &[f32])> {
    let n = *t.layout().shape().last()?;
    let values = unary_node::flex_f32(t)?;
    (n > 0 && !values.is_empty()).then(|| (values.len() / n, n, values))
}

/// Rows per block: enough blocks, a multiple of the thread count, of about `BLOCK_ROWS` each.
fn block_rows(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let blocks = threads * rows.div_ceil(threads * BLOCK_ROWS).max(1);
    rows.div_ceil(blocks).max(1)
}

/// `out[r] = lhs[r]·rhs (+ bias)` for every row `r`, the rows split over rayon's threads;
/// `lhs` is contiguous `[rows, k]`, `rhs` is `k × n` through `(rs, cs)` strides from `rhs`.
fn gemm_rows(
    lhs: &[f32],
    k: usize,
    rhs: &[f32],
    (rhs_rs, rhs_cs): (isize, isize),
    n: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let rows = lhs.len() / k;
    let mut out: Vec<f32> = Vec::with_capacity(rows * n);
    let chunk = block_rows(rows);
    out.spare_capacity_mut()[..rows * n]
        .par_chunks_mut(chunk * n)
        .zip(lhs.par_chunks(chunk * k))
        .for_each(|(dst, src)| {
            let m = dst.len() / n;
            if let Some(bias) = bias {
                for row in dst.chunks_mut(n) {
                    for (d, &b) in row.iter_mut().zip(bias) {
                        d.write(b);
                    }
                }
            }
            // SAFETY: `dst` is `m × n` row-major and `src` `m × k`; `rhs` holds every
            // element `i·rhs_rs + j·rhs_cs` for `i < k`, `j < n` (checked by the callers);
            // with `read_dst` false gemm writes every element of `dst` without reading it
            // (k > 0 here), and with the bias written first it reads only initialised values.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr().cast::<f32>(),
                    1,
                    n as isize,
                    bias.is_some(),
                    src.as_ptr(),
                    1,
                    k as isize,
                    rhs.as_ptr(),
                    rhs_cs,
                    rhs_rs,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    // SAFETY: every one of the `rows × n` elements was written above.
    unsafe { out.set_len(rows * n) };
    out
}

/// `shape` with its last dimension replaced by `last`.
fn with_last(shape: &Shape, last: usize) -> Shape {
    let mut dims: Vec<usize> = shape.iter().copied().collect();
    if let Some(d) = dims.last_mut() {
        *d = last;
    }
    Shape::from(dims)
}

fn flex_linear(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>) -> FlexTensor {
    let x = x.to_contiguous();
    let bias = bias.map(|b| b.to_contiguous());
    let bias_values = match &bias {
        Some(b) => unary_node::flex_f32(b),
        None => Some(&[][..]),
    };
    let (Some((_, d_in, xs)), Some(w), Some(bs)) = (rows_of(&x), Matrix::of(&weight), bias_values)
    else {
        return Flex::linear(x, weight, bias);
    };
    if w.rows != d_in || (bias.is_some() && bs.len() != w.cols) {
        return Flex::linear(x, weight, bias);
    }
    let out = gemm_rows(
        xs,
        d_in,
        w.values,
        (w.row_stride, w.col_stride),
        w.cols,
        bias.is_some().then_some(bs),
    );
    unary_node::flex_shaped(out, with_last(x.layout().shape(), w.cols))
}

impl RowLinear for Flex {
    fn row_linear(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        flex_linear(x, weight, None)
    }

    fn row_linear_bias(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        flex_linear(x, weight, Some(bias))
    }

    fn row_linear_x_backward(weight: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let grad = grad.to_contiguous();
        let (Some(w), Some((_, d_out, gs))) = (Matrix::of(&weight), rows_of(&grad)) else {
            return Flex::linear_x_backward(weight, grad);
        };
        if w.cols != d_out {
            return Flex::linear_x_backward(weight, grad);
        }
        // Wᵀ is `out × in`: its rows step along W's columns. Read through strides, gemm packs
        // the whole of W again for every row block; a contiguous copy made once is already in
        // the layout its kernel reads, so there is nothing to pack
        let out = if gs.len() / d_out > block_rows(gs.len() / d_out) {
            let wt = transposed(&w);
            gemm_rows(gs, d_out, &wt, (w.rows as isize, 1), w.rows, None)
        } else {
            gemm_rows(
                gs,
                d_out,
                w.values,
                (w.col_stride, w.row_stride),
                w.rows,
                None,
            )
        };
        unary_node::flex_shaped(out, with_last(grad.layout().shape(), w.rows))
    }

    fn row_linear_weight_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let grad = grad.to_contiguous();
        let (Some((rows, d_in, xs)), Some((grows, d_out, gs))) = (rows_of(&x), rows_of(&grad))
        else {
            return Flex::linear_weight_backward(x, grad);
        };
        if rows != grows {
            return Flex::linear_weight_backward(x, grad);
        }
        let mut out: Vec<f32> = Vec::with_capacity(d_in * d_out);
        // SAFETY: `out` has room for `d_in × d_out`; `xs` is `rows × d_in` read as its
        // transpose (row stride 1, column stride d_in), `gs` is `rows × d_out`; rows > 0, so
        // gemm writes every element of `out` without reading it.
        unsafe {
            gemm::gemm(
                d_in,
                d_out,
                rows,
                out.as_mut_ptr(),
                1,
                d_out as isize,
                false,
                xs.as_ptr(),
                d_in as isize,
                1,
                gs.as_ptr(),
                1,
                d_out as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
            out.set_len(d_in * d_out);
        }
        unary_node::flex_shaped(out, Shape::new([d_in, d_out]))
    }
}

/// What the backward needs: `x` only for the weight's gradient, `W` only for the input's.
type LinearState = (Option<NodeId>, Option<NodeId>);

#[derive(Debug)]
struct LinearNode;

impl LinearNode {
    /// Registers the gradients of `x` and `W` (the parents that are tracked).
    fn register<B: RowLinear>(
        [node_x, node_weight]: [Option<NodeId>; 2],
        (x, weight): LinearState,
        grad: &FloatTensor<B>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let x = x.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        let weight = weight.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        if let (Some(id), Some(weight)) = (node_x, weight) {
            grads.register::<B>(id, B::row_linear_x_backward(weight, grad.clone()));
        }
        if let (Some(id), Some(x)) = (node_weight, x) {
            grads.register::<B>(id, B::row_linear_weight_backward(x, grad.clone()));
        }
    }
}

impl<B: RowLinear> Backward<B, 3> for LinearNode {
    type State = LinearState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let ids = [node_x.map(|n| n.id), node_weight.map(|n| n.id)];
        Self::register::<B>(ids, ops.state, &grad, grads, checkpointer);
        if let Some(node) = node_bias {
            grads.register::<B>(node.id, B::linear_bias_backward(grad));
        }
    }
}

impl<B: RowLinear> Backward<B, 2> for LinearNode {
    type State = LinearState;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let ids = ops.parents.map(|n| n.map(|n| n.id));
        Self::register::<B>(ids, ops.state, &grad, grads, checkpointer);
    }
}

/// The autodiff node of `x·W (+ b)`.
fn autodiff_linear<B: RowLinear, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
) -> FloatTensor<Autodiff<B, C>> {
    match bias {
        Some(bias) => {
            let nodes = [x.node(), weight.node(), bias.node()];
            record::<B, C, 3>(nodes, x, weight, Some(bias.into_primitive()))
        }
        None => record::<B, C, 2>([x.node(), weight.node()], x, weight, None),
    }
}

/// Records the node over `nodes` (x, W and the bias when there is one) and runs the layer.
fn record<B: RowLinear, C: CheckpointStrategy, const N: usize>(
    nodes: [NodeGuard; N],
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<B>>,
) -> FloatTensor<Autodiff<B, C>>
where
    LinearNode: Backward<B, N, State = LinearState>,
{
    let (x_tracked, weight_tracked) = (x.is_tracked(), weight.is_tracked());
    match LinearNode.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let state = (
                weight_tracked.then(|| prep.checkpoint(&x)),
                x_tracked.then(|| prep.checkpoint(&weight)),
            );
            let out = inner_linear::<B>(x.into_primitive(), weight.into_primitive(), bias);
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(inner_linear::<B>(
            x.into_primitive(),
            weight.into_primitive(),
            bias,
        )),
    }
}

/// The inner backend's `x·W (+ b)`.
fn inner_linear<B: RowLinear>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    match bias {
        Some(b) => B::row_linear_bias(x, weight, b),
        None => B::row_linear(x, weight),
    }
}

impl<B: Backend + RowLinear, C: CheckpointStrategy> RowLinear for Autodiff<B, C> {
    fn row_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        autodiff_linear::<B, C>(x, weight, None)
    }

    fn row_linear_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        autodiff_linear::<B, C>(x, weight, Some(bias))
    }

    fn row_linear_x_backward(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unary_node::untracked::<B, C>(B::row_linear_x_backward(
            weight.into_primitive(),
            grad.into_primitive(),
        ))
    }

    fn row_linear_weight_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unary_node::untracked::<B, C>(B::row_linear_weight_backward(
            x.into_primitive(),
            grad.into_primitive(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    use crate::model::test_util::{LayerRun, close, values};

    /// Output and gradients of `sum(linear(x)·r)` on autodiff burn-flex, through ours or
    /// burn's `module::linear`.
    fn run(ours: bool, layer: &Linear, x: &Tensor<3>, r: &Tensor<3>, ckpt: bool) -> LayerRun {
        let ad = Device::flex().autodiff();
        let ad = if ckpt {
            ad.gradient_checkpointing()
        } else {
            ad
        };
        let leaf = |t: Tensor<3>| Tensor::<3>::from_data(t.into_data(), &ad).require_grad();
        let xa = leaf(x.clone());
        let ra = Tensor::<3>::from_data(r.clone().into_data(), &ad);
        let wa = Tensor::<2>::from_data(layer.weight.val().into_data(), &ad).require_grad();
        let ba = layer
            .bias
            .as_ref()
            .map(|b| Tensor::<1>::from_data(b.val().into_data(), &ad).require_grad());
        let y = if ours {
            Linear {
                weight: Param::from_tensor(wa.clone()),
                bias: ba.clone().map(Param::from_tensor),
            }
            .forward(xa.clone())
        } else {
            burn::tensor::module::linear(xa.clone(), wa.clone(), ba.clone())
        };
        // the layer's own output, the gradients of the weighted sum
        let out = values(y.clone().inner());
        LayerRun {
            out,
            ..LayerRun::backward(y * ra, &xa, &wa, ba)
        }
    }

    #[test]
    fn row_blocks_match_burns_linear_and_its_gradients() {
        let device = Device::flex();
        // rows across one block and many (4 × 600 rows is more than one block per thread)
        for ([b, t, d_in, d_out], bias) in [
            ([2, 3, 5, 7], true),
            ([4, 600, 24, 40], true),
            ([4, 600, 40, 24], false),
        ] {
            let layer = Linear::new(d_in, d_out, bias, &device);
            let x = Tensor::<3>::random([b, t, d_in], Distribution::Default, &device);
            let r = Tensor::<3>::random([b, t, d_out], Distribution::Default, &device);
            let want = run(false, &layer, &x, &r, false);
            for ckpt in [false, true] {
                let got = run(true, &layer, &x, &r, ckpt);
                close(&got.out, &want.out, 1e-5, "forward");
                close(&got.dx, &want.dx, 1e-5, "input gradient");
                close(&got.dw, &want.dw, 1e-4, "weight gradient");
                close(&got.db, &want.db, 1e-4, "bias gradient");
                assert!(
                    !got.dx.is_empty() && !got.dw.is_empty(),
                    "gradients missing"
                );
                assert_eq!(got.db.is_empty(), !bias, "bias gradient");
            }
            // inference on plain burn-flex
            close(
                &values(layer.forward(x.clone())),
                &want.out,
                1e-5,
                "inference",
            );
        }
    }

    #[test]
    fn a_transposed_weight_is_read_in_place_and_a_frozen_one_still_passes_the_input_gradient() {
        let device = Device::flex();
        let mut layer = Linear::new(6, 9, true, &device);
        // the weight as the transpose of a `[out, in]` matrix: strided, not copied
        let stored = Tensor::<2>::random([9, 6], Distribution::Default, &device);
        layer.weight = Param::from_tensor(stored.transpose());
        let x = Tensor::<3>::random([2, 5, 6], Distribution::Default, &device);
        let want = burn::tensor::module::linear(
            x.clone(),
            layer.weight.val(),
            layer.bias.as_ref().map(|b| b.val()),
        );
        close(
            &values(layer.forward(x.clone())),
            &values(want),
            1e-6,
            "strided",
        );

        // a frozen weight (not tracked): only the input's gradient, still burn's
        let ad = Device::flex().autodiff();
        let wa = Tensor::<2>::from_data(layer.weight.val().into_data(), &ad);
        let ba = layer
            .bias
            .as_ref()
            .map(|b| Tensor::<1>::from_data(b.val().into_data(), &ad));
        let frozen = Linear {
            weight: Param::from_tensor(wa.clone()).set_require_grad(false),
            bias: ba
                .clone()
                .map(|b| Param::from_tensor(b).set_require_grad(false)),
        };
        let dx = |ours: bool| {
            let xa = Tensor::<3>::from_data(x.clone().into_data(), &ad).require_grad();
            let y = if ours {
                frozen.forward(xa.clone())
            } else {
                burn::tensor::module::linear(xa.clone(), wa.clone(), ba.clone())
            };
            let grads = (y.clone() * y).sum().backward();
            xa.grad(&grads).map(values).unwrap_or_default()
        };
        let (got, want) = (dx(true), dx(false));
        assert!(!got.is_empty(), "the input's gradient is missing");
        close(&got, &want, 1e-5, "input gradient with a frozen weight");
    }
}
