//! A long row axis split for the reductions and products over it, on GPU backends.
//!
//! burn's reductions over an axis (without autotune: cubek-reduce's `Unit` routine) give each
//! output one GPU thread that loops over the whole axis. Over the rows of the patch encoder's
//! `[points, channels]` activations (262,144 rows at batch 128) that is a few hundred threads
//! each summing a quarter of a million values in sequence: BatchNorm's batch statistics in
//! every training forward, and in full fine-tuning the gradients of its scale, of every bias
//! and of the statistics themselves (autodiff reduces a broadcast operand's gradient the same
//! way). Viewed as `[s, rows / s, channels]` with `s` near `√rows`, each of those becomes two
//! reductions of a few hundred values with many threads each, and the view costs nothing (the
//! tensors are contiguous). A per-channel operand meets the view as a small `[1, r, c]` repeat
//! ([`spread`]), broadcast over `s` alone: a `[1, 1, c]` operand's gradient would be one
//! `sum_dims` over both, which burn-cubecl folds back into a single reduction over every row.
//! burn-flex keeps the plain axis: its reductions are threaded already, and its summation order
//! is the one the parity tests hold to PyTorch's.
//!
//! The same holds for a trainable weight's gradient, `xᵀ·g` summed over every row: one product
//! with an inner dimension of 262,144 gives the GPU only a few output tiles to work on.
//! [`matmul_rows`] feeds the rows in as blocks, so autodiff sums one product per block.

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::{Device, Tensor};

/// Rows below which a single reduction is short enough: a thread's few thousand sequential
/// loads against the second stage's launch.
const MIN_ROWS: usize = 4096;

static MIN_ROWS_NOW: AtomicUsize = AtomicUsize::new(MIN_ROWS);

/// Splits axes from `rows` rows on (process-wide), so that the small reference cases of the
/// parity tests take the split path too; `None` restores the default.
#[doc(hidden)]
pub fn split_from(rows: Option<usize>) {
    MIN_ROWS_NOW.store(rows.unwrap_or(MIN_ROWS), Ordering::Relaxed);
}

/// `(s, rows / s)` for reducing `rows` rows on `device` in two stages: `s` the largest power of
/// two that divides `rows` with `s² <= rows`. `None` on burn-flex, for short axes, and when
/// `rows` has too small a power-of-two factor for the split to pay.
pub fn split(rows: usize, device: &Device) -> Option<(usize, usize)> {
    if rows < MIN_ROWS_NOW.load(Ordering::Relaxed) || super::on_flex(device) {
        return None;
    }
    let mut s = 1usize;
    while rows.is_multiple_of(s * 2) && (s * 2) * (s * 2) <= rows {
        s *= 2;
    }
    (s >= 16).then_some((s, rows / s))
}

/// The split of `x`'s rows (every dimension but the last), where [`split`] applies.
pub fn split_rows<const D: usize>(x: &Tensor<D>) -> Option<(usize, usize)> {
    let dims = x.dims();
    split(dims[..D - 1].iter().product(), &x.device())
}

/// A per-channel `v` (`[c]`, or any shape of `c` elements) repeated to `[1, r, c]`, to meet a
/// `[s, r, c]` view: autodiff then sums its gradient over the broadcast `s` in one reduction
/// and over the repeats in another.
pub fn spread<const D: usize>(v: Tensor<D>, r: usize) -> Tensor<3> {
    let c = v.shape().num_elements();
    v.reshape([1, 1, c]).repeat_dim(1, r)
}

/// `x + v` with `v` (`[c]`) added to every row of `x` (`[…, c]`), viewed as `[s, r, c]` where
/// [`split_rows`] applies, so that under autodiff `v`'s gradient is two short reductions.
pub fn add_to_rows<const D: usize>(x: Tensor<D>, v: Tensor<1>) -> Tensor<D> {
    let dims = x.dims();
    let c = dims[D - 1];
    match split_rows(&x) {
        Some((s, r)) => (x.reshape([s, r, c]) + spread(v, r)).reshape(dims),
        None => x + v.unsqueeze(),
    }
}

/// Row blocks at most for [`matmul_rows`]: the `[k, in, out]` partial products stay small.
const MAX_BLOCKS: usize = 32;

/// `x·w` over the last dimension of `x` (`[…, in]` by `[in, out]`). On GPU backends, when `w`
/// is tracked by autodiff (a gradient flows to it) and `x` has many rows, `x` goes in as `k`
/// row blocks against the one `w`: autodiff then computes `w`'s gradient as `k` products over
/// `rows / k` rows and sums them (split-K), where one product whose inner dimension is every
/// row (262,144 at batch 128 in the encoder) leaves most of the GPU idle. The forward and the
/// input's gradient are the same products either way.
pub fn matmul_rows<const D: usize>(x: Tensor<D>, w: Tensor<2>) -> Tensor<D> {
    let dims = x.dims();
    let [d_in, d_out] = w.dims();
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    match row_blocks(&x, &w) {
        Some((k, r)) => x
            .reshape([k, r, d_in])
            .matmul(w.unsqueeze::<3>())
            .reshape(out_dims),
        None => x.matmul(w.unsqueeze::<D>()),
    }
}

/// `(k, rows / k)` for [`matmul_rows`]: the most blocks, a power of two up to [`MAX_BLOCKS`],
/// that leave each at least a quarter of the split threshold's rows.
fn row_blocks<const D: usize>(x: &Tensor<D>, w: &Tensor<2>) -> Option<(usize, usize)> {
    let dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let min_rows = MIN_ROWS_NOW.load(Ordering::Relaxed);
    if !w.is_tracked() || rows < min_rows || super::on_flex(&x.device()) {
        return None;
    }
    let mut k = 1usize;
    while k < MAX_BLOCKS && rows.is_multiple_of(k * 2) && rows / (k * 2) >= min_rows / 4 {
        k *= 2;
    }
    (k >= 2).then_some((k, rows / k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::DeviceKind;

    #[test]
    fn splits_long_axes_near_their_square_root_and_never_on_flex() {
        let gpu = Device::wgpu(DeviceKind::DefaultDevice);
        assert_eq!(split(262_144, &gpu), Some((512, 512)));
        assert_eq!(split(65_536, &gpu), Some((256, 256)));
        assert_eq!(split(8_320, &gpu), Some((64, 130)));
        assert_eq!(split(4_095, &gpu), None);
        // 3 × 4,099 has no power-of-two factor
        assert_eq!(split(12_297, &gpu), None);
        assert_eq!(split(262_144, &Device::flex()), None);
        assert_eq!(split(262_144, &Device::flex().autodiff()), None);
        assert_eq!(split(262_144, &gpu.autodiff()), Some((512, 512)));
    }
}
