//! LayerNorm and TFTS's scale-and-shift as single row-wise passes with hand-written backward
//! passes: `model::layers::LayerNorm` and `model::layers::Tfts` run through here.
//!
//! Written as burn ops, a LayerNorm is ~11 passes over the tokens (mean, centre, square, mean,
//! add, root, divide, then the affine), seven of them full-size outputs, and each of TFTS's
//! seven uses per DAPT block is a broadcast multiply and add whose backward reduces `g·x` and
//! `g` over every row through separate multiply and sum passes. A profile of a DAPT step put
//! burn-flex's broadcast `binary_op` at 10% of the step (BENCHMARKS.md, "Fused LayerNorm and
//! TFTS"). Here each forward is one pass per row, each backward one pass for the input's
//! gradient and one threaded column reduction for the parameters' (`Σ g·x̂` and `Σ g`, or
//! `Σ g·x` and `Σ g` for TFTS). The autodiff node is memory-bound, as burn's element-wise
//! nodes are: under checkpointing it keeps the input and the scale and recomputes the output.
//!
//! LayerNorm's statistics follow PyTorch: biased variance, `eps` 1e-5 inside the root.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, FloatDType, Shape, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::cube::norm as norm_cube;
use super::unary_node::{self, untracked, untracked3};

/// PyTorch's `nn.LayerNorm` default, the value every model here uses.
pub const LAYER_NORM_EPS: f32 = 1e-5;

/// Rows per rayon task: a few hundred KiB of work at the model's widths.
const ROWS_PER_TASK: usize = 64;

/// Row-wise LayerNorm and scale-and-shift over the last dimension, and their gradients, as
/// backend operations. `scale` and `shift` are `[c]`, `c` the last dimension of `x`.
#[backend_extension(Flex, Cube, Fusion, Autodiff)]
pub trait RowAffine: Backend {
    /// `(x − mean)/√(var + eps)·scale + shift` per row.
    #[fusion(dtype = x, shape = x)]
    fn layer_norm_rows(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// The input's gradient of [`RowAffine::layer_norm_rows`].
    #[fusion(dtype = x, shape = x)]
    fn layer_norm_x_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// `(Σ g·x̂, Σ g)` over every row: the scale's and the shift's gradients.
    #[fusion(meta = param_specs)]
    fn layer_norm_param_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// `x·scale + shift` per row.
    #[fusion(dtype = x, shape = x)]
    fn scale_shift(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// `x·scale` per row: the input's gradient of [`RowAffine::scale_shift`].
    #[fusion(dtype = x, shape = x)]
    fn scale_rows(x: FloatTensor<Self>, scale: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `(Σ g·x, Σ g)` over every row: the scale's and the shift's gradients.
    #[fusion(meta = param_specs)]
    fn scale_shift_param_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// All three gradients of [`RowAffine::layer_norm_rows`] at once, `(∂x, ∂scale, ∂shift)`:
    /// on burn-flex one pass that reads `x` and `grad` once and computes each row's statistics
    /// once.
    #[fusion(meta = backward_specs)]
    fn layer_norm_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// All three gradients of [`RowAffine::scale_shift`] at once, `(∂x, ∂scale, ∂shift)`.
    #[fusion(meta = backward_specs)]
    fn scale_shift_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether the fused ops take these tensors: f32, on any backend we build (burn-flex, or
/// CubeCL's wgpu through `model::norm_cube`), with or without autodiff.
fn fused<const D: usize>(x: &Tensor<D>, params: [&Tensor<1>; 2]) -> bool {
    x.dtype() == DType::F32 && params.iter().all(|p| p.dtype() == DType::F32)
}

/// The Fusion metadata of the parameter gradients: two `[c]` vectors of `x`'s dtype.
fn param_specs(x: &TensorSpec, _grad: &TensorSpec) -> (TensorSpec, TensorSpec) {
    let c = x.shape.last().copied().unwrap_or(1);
    let spec = TensorSpec::new(Shape::new([c]), x.dtype);
    (spec.clone(), spec)
}

/// The Fusion metadata of the three gradients: `x`'s, and two `[c]` vectors.
fn backward_specs(
    x: &TensorSpec,
    _scale: &TensorSpec,
    grad: &TensorSpec,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    let (ds, db) = param_specs(x, grad);
    (x.clone(), ds, db)
}

/// LayerNorm of `x` over its last dimension with PyTorch's statistics, then `·scale + shift`.
pub fn layer_norm<const D: usize>(x: Tensor<D>, scale: Tensor<1>, shift: Tensor<1>) -> Tensor<D> {
    if fused(&x, [&scale, &shift]) {
        Tensor::from_dispatch(<Dispatch as RowAffine>::layer_norm_rows(
            x.into_dispatch(),
            scale.into_dispatch(),
            shift.into_dispatch(),
        ))
    } else {
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let xhat = (x - mean) / (var + f64::from(LAYER_NORM_EPS)).sqrt();
        xhat * scale.unsqueeze() + shift.unsqueeze()
    }
}

/// `x·scale + shift` over the last dimension of `x` (TFTS).
pub fn scale_shift<const D: usize>(x: Tensor<D>, scale: Tensor<1>, shift: Tensor<1>) -> Tensor<D> {
    if fused(&x, [&scale, &shift]) {
        Tensor::from_dispatch(<Dispatch as RowAffine>::scale_shift(
            x.into_dispatch(),
            scale.into_dispatch(),
            shift.into_dispatch(),
        ))
    } else {
        x * scale.unsqueeze() + shift.unsqueeze()
    }
}

/// Eight partial sums: element `i` goes to lane `i % 8`, then the lanes are added in order.
/// Written over fixed chunks of eight so the loops vectorise; an index `i % 8` kept them scalar
/// (a quarter of the norm passes' time), with the same order of addition as these.
struct Lanes([f32; 8]);

impl Lanes {
    fn new() -> Self {
        Self([0.0; 8])
    }

    fn add(&mut self, chunk: [f32; 8]) {
        for (a, v) in self.0.iter_mut().zip(chunk) {
            *a += v;
        }
    }

    /// The elements past the last whole chunk, `tail[r]` into lane `r`.
    fn add_tail(&mut self, tail: impl Iterator<Item = f32>) {
        for (a, v) in self.0.iter_mut().zip(tail) {
            *a += v;
        }
    }

    fn total(&self) -> f32 {
        self.0.iter().sum()
    }
}

/// `Σ (x − mean)²` of a row.
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = Lanes::new();
    let (head, tail) = x.as_chunks::<8>();
    for c in head {
        acc.add(c.map(|v| (v - mean) * (v - mean)));
    }
    acc.add_tail(tail.iter().map(|&v| (v - mean) * (v - mean)));
    acc.total()
}

/// `(Σ g·s, Σ g·s·(x − mean)·rstd)` of a row: the two sums of LayerNorm's input gradient.
fn grad_sums(g: &[f32], s: &[f32], x: &[f32], mean: f32, rstd: f32) -> (f32, f32) {
    let (mut gs, mut gsx) = (Lanes::new(), Lanes::new());
    let ((gh, gt), (sh, st), (xh, xt)) =
        (g.as_chunks::<8>(), s.as_chunks::<8>(), x.as_chunks::<8>());
    for ((g, s), x) in gh.iter().zip(sh).zip(xh) {
        let p: [f32; 8] = std::array::from_fn(|l| g[l] * s[l]);
        gs.add(p);
        gsx.add(std::array::from_fn(|l| p[l] * (x[l] - mean) * rstd));
    }
    let tail = || gt.iter().zip(st).map(|(&g, &s)| g * s);
    gs.add_tail(tail());
    gsx.add_tail(tail().zip(xt).map(|(p, &x)| p * (x - mean) * rstd));
    (gs.total(), gsx.total())
}

/// `Σ v` in eight lanes, the elements past the last whole chunk added after the lanes.
fn lane_sum(v: &[f32]) -> f32 {
    let mut acc = Lanes::new();
    let (head, tail) = v.as_chunks::<8>();
    for c in head {
        acc.add(*c);
    }
    acc.total() + tail.iter().sum::<f32>()
}

/// `(mean, 1/√(var + eps))` of one row.
fn row_stats(x: &[f32]) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = lane_sum(x) / n;
    let var = sum_sq_dev(x, mean) / n;
    (mean, 1.0 / (var + LAYER_NORM_EPS).sqrt())
}

/// A contiguous f32 copy of `t` (or `t` itself when it already is one).
fn f32_contiguous(t: FlexTensor) -> FlexTensor {
    let t = if t.dtype() == DType::F32 {
        t
    } else {
        Flex::float_cast(t, FloatDType::F32)
    };
    t.to_contiguous()
}

/// The values of a tensor made by [`f32_contiguous`].
fn f32_values(t: &FlexTensor) -> &[f32] {
    // `f32_contiguous` made it contiguous f32, so this is always `Some`.
    unary_node::flex_f32(t).unwrap_or_default()
}

/// `out[r] = f(x[r], y[r])` for every row `r` of width `n`, rows split over rayon's threads;
/// `y` may be empty (then every call sees an empty slice).
fn map_rows(
    x: &[f32],
    y: &[f32],
    n: usize,
    f: impl Fn(&[f32], &[f32], &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    if n == 0 {
        return vec![0.0f32; x.len()];
    }
    // left uninitialised (a memset of every output was 1-2% of a DAPT step): every `f` here
    // writes its whole row
    let mut out: Vec<f32> = Vec::with_capacity(x.len());
    let task = n * ROWS_PER_TASK;
    out.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(task)
        .zip(x.par_chunks(task))
        .enumerate()
        .for_each(|(i, (o, xs))| {
            let ys = y.get(i * task..i * task + xs.len()).unwrap_or(&[]);
            for (r, (orow, xrow)) in o.chunks_mut(n).zip(xs.chunks(n)).enumerate() {
                let yrow = ys.get(r * n..(r + 1) * n).unwrap_or(&[]);
                f(xrow, yrow, orow);
            }
        });
    // SAFETY: each row of the `x.len()` elements was written by `f`, which writes its whole
    // output row (the closures below assign every element).
    unsafe { out.set_len(x.len()) };
    out
}

/// `(Σ_r g[r]·h(x[r]), Σ_r g[r])` column by column, rows split over rayon's threads; `h`
/// writes its row's transform of `x` into the scratch row it is given.
fn column_sums(
    x: &[f32],
    g: &[f32],
    n: usize,
    h: impl Fn(&[f32], &mut [f32]) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let task = n * ROWS_PER_TASK;
    let partial = x
        .par_chunks(task)
        .zip(g.par_chunks(task))
        .map(|(xs, gs)| {
            let mut acc = vec![0.0f32; 2 * n];
            let mut row = vec![0.0f32; n];
            for (xrow, grow) in xs.chunks(n).zip(gs.chunks(n)) {
                h(xrow, &mut row);
                let (ax, ag) = acc.split_at_mut(n);
                for (((a, b), &r), &gv) in ax.iter_mut().zip(ag.iter_mut()).zip(&row).zip(grow) {
                    *a += gv * r;
                    *b += gv;
                }
            }
            acc
        })
        .reduce(|| vec![0.0f32; 2 * n], unary_node::add_partials);
    let (scale, shift) = partial.split_at(n);
    (scale.to_vec(), shift.to_vec())
}

/// Row width of `x`, or `None` when the tensor has no dimensions.
fn width(x: &FlexTensor) -> usize {
    x.layout().shape().last().copied().unwrap_or(1)
}

fn vector(values: Vec<f32>) -> FlexTensor {
    let n = values.len();
    unary_node::flex_shaped(values, Shape::new([n]))
}

/// `[c]` parameters of a row width `n` (scale, shift), checked: a mismatch is the caller's bug,
/// answered with burn's broadcast rules by the ops path rather than a silent wrong result.
fn params_fit(n: usize, params: &[&[f32]]) -> bool {
    params.iter().all(|p| p.len() == n)
}

/// `kind`'s forward on burn-flex: `(x̂ or x)·scale + shift`, one threaded pass per row.
fn flex_affine(x: FlexTensor, scale: FlexTensor, shift: FlexTensor, kind: Kind) -> FlexTensor {
    let (x, scale, shift) = (
        f32_contiguous(x),
        f32_contiguous(scale),
        f32_contiguous(shift),
    );
    let n = width(&x);
    let (s, b) = (f32_values(&scale), f32_values(&shift));
    if !params_fit(n, &[s, b]) {
        return match kind {
            Kind::LayerNorm => ops::layer_norm::<Flex>(x, scale, shift),
            Kind::ScaleShift => ops::scale_shift::<Flex>(x, scale, shift),
        };
    }
    let out = map_rows(f32_values(&x), &[], n, |x, _, o| {
        let (mean, rstd) = match kind {
            Kind::LayerNorm => row_stats(x),
            Kind::ScaleShift => (0.0, 1.0),
        };
        for (((o, &x), &s), &b) in o.iter_mut().zip(x).zip(s).zip(b) {
            o.write((x - mean) * rstd * s + b);
        }
    });
    unary_node::flex_from_f32(out, &x)
}

/// `kind`'s parameter gradients on burn-flex, `(Σ g·x̂ or Σ g·x, Σ g)`, one threaded column
/// reduction.
fn flex_param_backward(x: FlexTensor, grad: FlexTensor, kind: Kind) -> (FlexTensor, FlexTensor) {
    let (x, grad) = (f32_contiguous(x), f32_contiguous(grad));
    let n = width(&x);
    let (xs, gs) = (f32_values(&x), f32_values(&grad));
    if xs.len() != gs.len() {
        return match kind {
            Kind::LayerNorm => ops::layer_norm_param_backward::<Flex>(x, grad),
            Kind::ScaleShift => ops::scale_shift_param_backward::<Flex>(x, grad),
        };
    }
    let (ds, db) = column_sums(xs, gs, n, |x, row| match kind {
        Kind::LayerNorm => {
            let (mean, rstd) = row_stats(x);
            for (r, &x) in row.iter_mut().zip(x) {
                *r = (x - mean) * rstd;
            }
        }
        Kind::ScaleShift => row.copy_from_slice(x),
    });
    (vector(ds), vector(db))
}

/// `kind`'s three gradients on burn-flex in one threaded pass: per row the input's gradient
/// (LayerNorm: `rstd·(gŝ − mean(gŝ) − x̂·mean(gŝ·x̂))`, TFTS: `g·scale`) and per task partial
/// column sums of `g·x̂` (or `g·x`) and `g`, reduced at the end. The same arithmetic as the
/// separate passes, which read `x` and `g` twice and computed the statistics twice.
fn flex_backward(
    x: FlexTensor,
    scale: FlexTensor,
    grad: FlexTensor,
    kind: Kind,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (x, scale, grad) = (
        f32_contiguous(x),
        f32_contiguous(scale),
        f32_contiguous(grad),
    );
    let n = width(&x);
    let (xs, s, gs) = (f32_values(&x), f32_values(&scale), f32_values(&grad));
    if !params_fit(n, &[s]) || xs.len() != gs.len() || n == 0 {
        let (ds, db) = match kind {
            Kind::LayerNorm => Flex::layer_norm_param_backward(x.clone(), grad.clone()),
            Kind::ScaleShift => Flex::scale_shift_param_backward(x.clone(), grad.clone()),
        };
        let dx = match kind {
            Kind::LayerNorm => Flex::layer_norm_x_backward(x, scale, grad),
            Kind::ScaleShift => Flex::scale_rows(grad, scale),
        };
        return (dx, ds, db);
    }
    // left uninitialised: every element is written below (the parameters are `n` long, checked)
    let mut dx: Vec<f32> = Vec::with_capacity(xs.len());
    let task = n * ROWS_PER_TASK;
    let inv_n = 1.0 / n as f32;
    let sums = dx.spare_capacity_mut()[..xs.len()]
        .par_chunks_mut(task)
        .zip(xs.par_chunks(task))
        .zip(gs.par_chunks(task))
        .map(|((o, xs), gs)| {
            let mut acc = vec![0.0f32; 2 * n];
            let mut xhat = vec![0.0f32; n];
            for ((orow, xrow), grow) in o.chunks_mut(n).zip(xs.chunks(n)).zip(gs.chunks(n)) {
                let (ds, db) = acc.split_at_mut(n);
                match kind {
                    Kind::LayerNorm => {
                        let (mean, rstd) = row_stats(xrow);
                        for (h, &x) in xhat.iter_mut().zip(xrow) {
                            *h = (x - mean) * rstd;
                        }
                        let (sum_gs, sum_gsx) = grad_sums(grow, s, xrow, mean, rstd);
                        let (mean_gs, mean_gsx) = (sum_gs * inv_n, sum_gsx * inv_n);
                        for ((((o, &h), &g), &s), (a, b)) in orow
                            .iter_mut()
                            .zip(&xhat)
                            .zip(grow)
                            .zip(s)
                            .zip(ds.iter_mut().zip(db.iter_mut()))
                        {
                            o.write(rstd * (g * s - mean_gs - h * mean_gsx));
                            *a += g * h;
                            *b += g;
                        }
                    }
                    Kind::ScaleShift => {
                        for ((((o, &x), &g), &s), (a, b)) in orow
                            .iter_mut()
                            .zip(xrow)
                            .zip(grow)
                            .zip(s)
                            .zip(ds.iter_mut().zip(db.iter_mut()))
                        {
                            o.write(g * s);
                            *a += g * x;
                            *b += g;
                        }
                    }
                }
            }
            acc
        })
        .reduce(|| vec![0.0f32; 2 * n], unary_node::add_partials);
    // SAFETY: the loop above wrote every one of the `xs.len()` elements.
    unsafe { dx.set_len(xs.len()) };
    let (ds, db) = sums.split_at(n);
    (
        unary_node::flex_from_f32(dx, &x),
        vector(ds.to_vec()),
        vector(db.to_vec()),
    )
}

impl RowAffine for Flex {
    fn layer_norm_rows(x: FlexTensor, scale: FlexTensor, shift: FlexTensor) -> FlexTensor {
        flex_affine(x, scale, shift, Kind::LayerNorm)
    }

    fn layer_norm_x_backward(x: FlexTensor, scale: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let (x, scale, grad) = (
            f32_contiguous(x),
            f32_contiguous(scale),
            f32_contiguous(grad),
        );
        let n = width(&x);
        let (xs, s, gs) = (f32_values(&x), f32_values(&scale), f32_values(&grad));
        if !params_fit(n, &[s]) || xs.len() != gs.len() {
            return ops::layer_norm_x_backward::<Flex>(x, scale, grad);
        }
        // dx = rstd·(gŝ − mean(gŝ) − x̂·mean(gŝ·x̂)), gŝ = g·scale
        let out = map_rows(xs, gs, n, |x, g, o| {
            let (mean, rstd) = row_stats(x);
            let inv_n = 1.0 / n as f32;
            let (sum_gs, sum_gsx) = grad_sums(g, s, x, mean, rstd);
            let (mean_gs, mean_gsx) = (sum_gs * inv_n, sum_gsx * inv_n);
            for (((o, &x), &g), &s) in o.iter_mut().zip(x).zip(g).zip(s) {
                let xhat = (x - mean) * rstd;
                o.write(rstd * (g * s - mean_gs - xhat * mean_gsx));
            }
        });
        unary_node::flex_from_f32(out, &x)
    }

    fn layer_norm_param_backward(x: FlexTensor, grad: FlexTensor) -> (FlexTensor, FlexTensor) {
        flex_param_backward(x, grad, Kind::LayerNorm)
    }

    fn scale_shift(x: FlexTensor, scale: FlexTensor, shift: FlexTensor) -> FlexTensor {
        flex_affine(x, scale, shift, Kind::ScaleShift)
    }

    fn scale_rows(x: FlexTensor, scale: FlexTensor) -> FlexTensor {
        let (x, scale) = (f32_contiguous(x), f32_contiguous(scale));
        let n = width(&x);
        let s = f32_values(&scale);
        if !params_fit(n, &[s]) {
            return ops::scale_rows::<Flex>(x, scale);
        }
        let out = map_rows(f32_values(&x), &[], n, |x, _, o| {
            for ((o, &x), &s) in o.iter_mut().zip(x).zip(s) {
                o.write(x * s);
            }
        });
        unary_node::flex_from_f32(out, &x)
    }

    fn scale_shift_param_backward(x: FlexTensor, grad: FlexTensor) -> (FlexTensor, FlexTensor) {
        flex_param_backward(x, grad, Kind::ScaleShift)
    }

    fn layer_norm_backward(
        x: FlexTensor,
        scale: FlexTensor,
        grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        flex_backward(x, scale, grad, Kind::LayerNorm)
    }

    fn scale_shift_backward(
        x: FlexTensor,
        scale: FlexTensor,
        grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        flex_backward(x, scale, grad, Kind::ScaleShift)
    }
}

impl RowAffine for CubeBackend {
    fn layer_norm_rows(x: CubeTensor, scale: CubeTensor, shift: CubeTensor) -> CubeTensor {
        if norm_cube::fits(&x, &[&scale, &shift], None) {
            norm_cube::affine(x, scale, shift, true)
        } else {
            ops::layer_norm::<Self>(x, scale, shift)
        }
    }

    fn layer_norm_x_backward(x: CubeTensor, scale: CubeTensor, grad: CubeTensor) -> CubeTensor {
        if norm_cube::fits(&x, &[&scale], Some(&grad)) {
            norm_cube::layer_norm_x_backward(x, scale, grad)
        } else {
            ops::layer_norm_x_backward::<Self>(x, scale, grad)
        }
    }

    fn layer_norm_param_backward(x: CubeTensor, grad: CubeTensor) -> (CubeTensor, CubeTensor) {
        if norm_cube::fits(&x, &[], Some(&grad)) {
            norm_cube::param_backward(x, grad, true)
        } else {
            ops::layer_norm_param_backward::<Self>(x, grad)
        }
    }

    fn scale_shift(x: CubeTensor, scale: CubeTensor, shift: CubeTensor) -> CubeTensor {
        if norm_cube::fits(&x, &[&scale, &shift], None) {
            norm_cube::affine(x, scale, shift, false)
        } else {
            ops::scale_shift::<Self>(x, scale, shift)
        }
    }

    fn scale_rows(x: CubeTensor, scale: CubeTensor) -> CubeTensor {
        // one broadcast multiply: burn's own kernel is already a single launch
        ops::scale_rows::<Self>(x, scale)
    }

    fn scale_shift_param_backward(x: CubeTensor, grad: CubeTensor) -> (CubeTensor, CubeTensor) {
        if norm_cube::fits(&x, &[], Some(&grad)) {
            norm_cube::param_backward(x, grad, false)
        } else {
            ops::scale_shift_param_backward::<Self>(x, grad)
        }
    }

    // the separate kernels: each is one launch already, so there is nothing to merge here
    fn layer_norm_backward(
        x: CubeTensor,
        scale: CubeTensor,
        grad: CubeTensor,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (ds, db) = Self::layer_norm_param_backward(x.clone(), grad.clone());
        (Self::layer_norm_x_backward(x, scale, grad), ds, db)
    }

    fn scale_shift_backward(
        x: CubeTensor,
        scale: CubeTensor,
        grad: CubeTensor,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (ds, db) = Self::scale_shift_param_backward(x, grad.clone());
        (Self::scale_rows(grad, scale), ds, db)
    }
}

/// The same operations from a backend's own ops: what the kernels do not take (a parameter of
/// the wrong length is broadcast by burn's rules or rejected by the backend, as it would be
/// without the fusion).
mod ops {
    use super::*;

    /// `[c]` seen as `[1, …, 1, c]` to broadcast against `like`.
    fn row<B: Backend>(p: FloatTensor<B>, like: &FloatTensor<B>) -> FloatTensor<B> {
        use burn::backend::TensorMetadata;
        let rank = like.shape().num_dims();
        let mut dims = vec![1; rank.max(1)];
        if let Some(last) = dims.last_mut() {
            *last = p.shape().num_elements();
        }
        B::float_reshape(p, Shape::from(dims))
    }

    fn last<B: Backend>(x: &FloatTensor<B>) -> usize {
        use burn::backend::TensorMetadata;
        x.shape().num_dims().saturating_sub(1)
    }

    /// `(x̂, rstd)` per row.
    fn normalise<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
        let d = last::<B>(&x);
        let mean = B::float_mean_dim(x.clone(), d);
        let centred = B::float_sub(x, mean);
        let var = B::float_mean_dim(B::float_mul(centred.clone(), centred.clone()), d);
        let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(
            var,
            LAYER_NORM_EPS.into(),
        )));
        (B::float_mul(centred, rstd.clone()), rstd)
    }

    /// Sums over every dimension but the last, as a `[c]` vector.
    fn column_sum<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
        use burn::backend::TensorMetadata;
        let c = t.shape().last().copied().unwrap_or(1);
        let rows = t.shape().num_elements() / c.max(1);
        let t = B::float_reshape(t, Shape::new([rows, c]));
        B::float_reshape(B::float_sum_dim(t, 0), Shape::new([c]))
    }

    pub fn layer_norm<B: Backend>(
        x: FloatTensor<B>,
        scale: FloatTensor<B>,
        shift: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let (xhat, _) = normalise::<B>(x);
        scale_shift::<B>(xhat, scale, shift)
    }

    pub fn layer_norm_x_backward<B: Backend>(
        x: FloatTensor<B>,
        scale: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let d = last::<B>(&x);
        let (xhat, rstd) = normalise::<B>(x);
        let gs = scale_rows::<B>(grad, scale);
        let mean_gs = B::float_mean_dim(gs.clone(), d);
        let mean_gsx = B::float_mean_dim(B::float_mul(gs.clone(), xhat.clone()), d);
        let inner = B::float_sub(B::float_sub(gs, mean_gs), B::float_mul(xhat, mean_gsx));
        B::float_mul(inner, rstd)
    }

    pub fn layer_norm_param_backward<B: Backend>(
        x: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let (xhat, _) = normalise::<B>(x);
        scale_shift_param_backward::<B>(xhat, grad)
    }

    pub fn scale_shift<B: Backend>(
        x: FloatTensor<B>,
        scale: FloatTensor<B>,
        shift: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let shift = row::<B>(shift, &x);
        B::float_add(scale_rows::<B>(x, scale), shift)
    }

    pub fn scale_rows<B: Backend>(x: FloatTensor<B>, scale: FloatTensor<B>) -> FloatTensor<B> {
        let scale = row::<B>(scale, &x);
        B::float_mul(x, scale)
    }

    pub fn scale_shift_param_backward<B: Backend>(
        x: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let ds = column_sum::<B>(B::float_mul(grad.clone(), x));
        (ds, column_sum::<B>(grad))
    }
}

/// Which of the two operations a node or a recomputation is.
#[derive(Clone, Copy, Debug)]
enum Kind {
    LayerNorm,
    ScaleShift,
}

impl Kind {
    fn forward<B: RowAffine>(
        self,
        x: FloatTensor<B>,
        scale: FloatTensor<B>,
        shift: FloatTensor<B>,
    ) -> FloatTensor<B> {
        match self {
            Kind::LayerNorm => B::layer_norm_rows(x, scale, shift),
            Kind::ScaleShift => B::scale_shift(x, scale, shift),
        }
    }
}

/// The autodiff node: parents `x`, `scale`, `shift`; state: the ids of `x` and `scale`.
#[derive(Debug)]
struct AffineNode(Kind);

impl<B: RowAffine> Backward<B, 3> for AffineNode {
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_scale, node_shift] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(ops.state.0);
        let scale: FloatTensor<B> = checkpointer.retrieve_node_output(ops.state.1);
        if let (Some(nx), true) = (&node_x, node_scale.is_some() || node_shift.is_some()) {
            // every gradient wanted (TFTS, and LayerNorm wherever its input is tracked): one
            // call, one pass on burn-flex
            let (dx, ds, db) = match self.0 {
                Kind::LayerNorm => B::layer_norm_backward(x, scale, grad),
                Kind::ScaleShift => B::scale_shift_backward(x, scale, grad),
            };
            grads.register::<B>(nx.id, dx);
            if let Some(node) = node_scale {
                grads.register::<B>(node.id, ds);
            }
            if let Some(node) = node_shift {
                grads.register::<B>(node.id, db);
            }
            return;
        }
        if node_scale.is_some() || node_shift.is_some() {
            let (ds, db) = match self.0 {
                Kind::LayerNorm => B::layer_norm_param_backward(x.clone(), grad.clone()),
                Kind::ScaleShift => B::scale_shift_param_backward(x.clone(), grad.clone()),
            };
            if let Some(node) = node_scale {
                grads.register::<B>(node.id, ds);
            }
            if let Some(node) = node_shift {
                grads.register::<B>(node.id, db);
            }
        }
        if let Some(node) = node_x {
            let dx = match self.0 {
                Kind::LayerNorm => B::layer_norm_x_backward(x, scale, grad),
                Kind::ScaleShift => B::scale_rows(grad, scale),
            };
            grads.register::<B>(node.id, dx);
        }
    }
}

/// `kind`'s forward recorded as one autodiff node.
fn record<B: RowAffine, C: CheckpointStrategy>(
    kind: Kind,
    x: FloatTensor<Autodiff<B, C>>,
    scale: FloatTensor<Autodiff<B, C>>,
    shift: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let retro = unary_node::Retro3::<B> {
        parents: [x.id(), scale.id(), shift.id()],
        forward: match kind {
            Kind::LayerNorm => B::layer_norm_rows,
            Kind::ScaleShift => B::scale_shift,
        },
    };
    match AffineNode(kind)
        .prepare::<C>([x.node(), scale.node(), shift.node()])
        .memory_bound()
        .retro_forward(retro)
        .parents([&x, &scale, &shift])
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (prep.checkpoint(&x), prep.checkpoint(&scale));
            let out = kind.forward::<B>(
                x.into_primitive(),
                scale.into_primitive(),
                shift.into_primitive(),
            );
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(kind.forward::<B>(
            x.into_primitive(),
            scale.into_primitive(),
            shift.into_primitive(),
        )),
    }
}

impl<B: Backend + RowAffine, C: CheckpointStrategy> RowAffine for Autodiff<B, C> {
    fn layer_norm_rows(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        record::<B, C>(Kind::LayerNorm, x, scale, shift)
    }

    fn layer_norm_x_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        untracked::<B, C>(B::layer_norm_x_backward(
            x.into_primitive(),
            scale.into_primitive(),
            grad.into_primitive(),
        ))
    }

    fn layer_norm_param_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (ds, db) = B::layer_norm_param_backward(x.into_primitive(), grad.into_primitive());
        (untracked::<B, C>(ds), untracked::<B, C>(db))
    }

    fn scale_shift(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        record::<B, C>(Kind::ScaleShift, x, scale, shift)
    }

    fn scale_rows(x: FloatTensor<Self>, scale: FloatTensor<Self>) -> FloatTensor<Self> {
        untracked::<B, C>(B::scale_rows(x.into_primitive(), scale.into_primitive()))
    }

    fn scale_shift_param_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (ds, db) = B::scale_shift_param_backward(x.into_primitive(), grad.into_primitive());
        (untracked::<B, C>(ds), untracked::<B, C>(db))
    }

    fn layer_norm_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        untracked3::<B, C>(B::layer_norm_backward(
            x.into_primitive(),
            scale.into_primitive(),
            grad.into_primitive(),
        ))
    }

    fn scale_shift_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        untracked3::<B, C>(B::scale_shift_backward(
            x.into_primitive(),
            scale.into_primitive(),
            grad.into_primitive(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    use crate::model::test_util::{close, ternary_grads, values};

    type Op = fn(Tensor<3>, Tensor<1>, Tensor<1>) -> Tensor<3>;

    /// Output and the gradients of x, scale and shift of `op`, with or without checkpointing.
    fn run(
        op: Op,
        checkpointing: bool,
        inputs: [&Tensor<3>; 4],
        shift: &Tensor<1>,
    ) -> [Vec<f32>; 4] {
        let [x, w, scale, _] = inputs;
        let ad = Device::flex().autodiff();
        let ad = if checkpointing {
            ad.gradient_checkpointing()
        } else {
            ad
        };
        let scale = scale.clone().flatten::<1>(0, 2);
        ternary_grads(op, &ad, [x, w], &scale, shift)
    }

    fn burns_layer_norm(x: Tensor<3>, s: Tensor<1>, b: Tensor<1>) -> Tensor<3> {
        let (var, mean) = x.clone().var_mean_bias(2);
        (x - mean) / (var + 1e-5).sqrt() * s.unsqueeze() + b.unsqueeze()
    }

    fn burns_scale_shift(x: Tensor<3>, s: Tensor<1>, b: Tensor<1>) -> Tensor<3> {
        x * s.unsqueeze() + b.unsqueeze()
    }

    fn check(fused: Op, reference: Op, tol: f32) {
        let device = Device::flex();
        // row counts across the task split, a width that is not a multiple of the lanes
        for [b, t, c] in [[2, 3, 5], [3, 77, 384], [1, 200, 27]] {
            let x = Tensor::<3>::random([b, t, c], Distribution::Normal(0.3, 2.0), &device);
            let w = Tensor::<3>::random([b, t, c], Distribution::Default, &device);
            let s = Tensor::<3>::random([1, 1, c], Distribution::Normal(1.0, 0.3), &device);
            let shift = Tensor::<1>::random([c], Distribution::Normal(0.0, 0.3), &device);
            let want = run(reference, false, [&x, &w, &s, &x], &shift);
            let plain = run(fused, false, [&x, &w, &s, &x], &shift);
            let ckpt = run(fused, true, [&x, &w, &s, &x], &shift);
            for (i, what) in ["forward", "x gradient", "scale gradient", "shift gradient"]
                .iter()
                .enumerate()
            {
                assert!(!plain[i].is_empty(), "{what}: nothing came back");
                close(&plain[i], &want[i], tol, what);
                // checkpointing recomputes, it does not change a bit
                assert_eq!(plain[i], ckpt[i], "{what} with checkpointing");
            }
        }
    }

    #[test]
    fn fused_layer_norm_and_its_gradients_match_burns_ops() {
        check(layer_norm::<3>, burns_layer_norm, 2e-5);
    }

    #[test]
    fn fused_scale_shift_and_its_gradients_match_burns_ops() {
        check(scale_shift::<3>, burns_scale_shift, 2e-5);
    }

    #[test]
    fn inference_strided_inputs_and_the_ops_fallback_agree() {
        let device = Device::flex();
        let x = Tensor::<3>::random([4, 9, 16], Distribution::Normal(0.0, 3.0), &device);
        let s = Tensor::<1>::random([16], Distribution::Normal(1.0, 0.2), &device);
        let b = Tensor::<1>::random([16], Distribution::Default, &device);
        // a transposed view takes the contiguous copy
        let t = x.clone().swap_dims(0, 1);
        let want = burns_layer_norm(t.clone(), s.clone(), b.clone());
        close(
            &values(layer_norm(t, s.clone(), b.clone())),
            &values(want.clone()),
            1e-5,
            "strided layer norm",
        );
        // the backend-ops formulas (the fallback, and the reference for other backends)
        let fallback =
            ops::layer_norm::<Flex>(flex_of(x.clone().swap_dims(0, 1)), flex_of(s), flex_of(b));
        close(
            &flex_values(&fallback),
            &values(want),
            1e-5,
            "ops layer norm",
        );
        let g = x.clone() * 0.5 - 1.0;
        let by_ops =
            ops::scale_shift_param_backward::<Flex>(flex_of(x.clone()), flex_of(g.clone()));
        let fused = <Flex as RowAffine>::scale_shift_param_backward(flex_of(x), flex_of(g));
        close(
            &flex_values(&by_ops.0),
            &flex_values(&fused.0),
            1e-4,
            "Σ g·x",
        );
        close(&flex_values(&by_ops.1), &flex_values(&fused.1), 1e-4, "Σ g");
    }

    fn flex_of<const D: usize>(t: Tensor<D>) -> FlexTensor {
        FlexTensor::from_data(t.into_data())
    }

    /// The chunked sums add in the order the element-by-element lanes did (element `i` into
    /// lane `i % 8`), so LayerNorm's results are bit for bit those of before.
    #[test]
    fn the_chunked_lane_sums_keep_the_lane_order() {
        fn by_index(v: impl Iterator<Item = f32>) -> f32 {
            let mut acc = [0.0f32; 8];
            for (i, x) in v.enumerate() {
                acc[i % 8] += x;
            }
            acc.iter().sum()
        }
        let wave = |n: usize, k: f32| -> Vec<f32> {
            (0..n).map(|i| (i as f32 * k).sin() * 1e3 + 0.37).collect()
        };
        for n in [0, 1, 7, 8, 9, 27, 384, 1155] {
            let (x, g, s) = (wave(n, 0.71), wave(n, 1.93), wave(n, 0.13));
            let (mean, rstd) = (0.61, 1.7);
            let sq = by_index(x.iter().map(|&v| (v - mean) * (v - mean)));
            assert_eq!(sum_sq_dev(&x, mean).to_bits(), sq.to_bits(), "width {n}");
            let gs = by_index(g.iter().zip(&s).map(|(&g, &s)| g * s));
            let gsx = by_index(
                g.iter()
                    .zip(&s)
                    .zip(&x)
                    .map(|((&g, &s), &x)| g * s * (x - mean) * rstd),
            );
            // the mean's sum: lanes, then the elements past the last chunk on their own
            let mut lanes = [0.0f32; 8];
            let mut chunks = x.chunks_exact(8);
            for c in &mut chunks {
                for (a, &v) in lanes.iter_mut().zip(c) {
                    *a += v;
                }
            }
            let plain = lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
            assert_eq!(lane_sum(&x).to_bits(), plain.to_bits(), "width {n}");
            let (a, b) = grad_sums(&g, &s, &x, mean, rstd);
            assert_eq!(
                (a.to_bits(), b.to_bits()),
                (gs.to_bits(), gsx.to_bits()),
                "width {n}"
            );
        }
    }

    fn flex_values(t: &FlexTensor) -> Vec<f32> {
        f32_values(&f32_contiguous(t.clone())).to_vec()
    }
}
