//! k-nearest-neighbour search on the GPU (`shaders/knn.wgsl`): one invocation per query,
//! results identical to [`crate::gpu::cpu::knn`] (same indices in the same order).
//!
//! Batches whose buffers exceed the device's storage-buffer or dispatch limits are split into
//! chunks of whole clouds, one dispatch each.

use super::context::{GpuContext, GpuError, Kernel};
use super::fps::check_finite;

/// The largest `k` the kernel supports (the size of its per-invocation sorted list).
pub const KNN_MAX_K: usize = 64;

/// Invocations per workgroup in `knn.wgsl`.
const WG: u64 = 64;

/// Bytes of one `f32`/`u32` element.
const ELEM: u64 = 4;

/// For each of the `g` queries of each of `b` clouds, the indices of its `k` nearest of the
/// `n` references of the same cloud, ascending by squared distance, ties to the lower index.
///
/// `refs` is `[b][n]` flattened, `queries` `[b][g]`; the result is `[b][g][k]` flattened,
/// indices relative to the cloud. A query that is also a reference finds itself (distance 0).
/// Errors when `k > 64` or `k > n`, or on non-finite coordinates (see
/// [`crate::gpu::fps_gpu`]); empty when `b`, `g` or `k` is 0.
pub fn knn_gpu(
    ctx: &GpuContext,
    refs: &[[f32; 3]],
    queries: &[[f32; 3]],
    b: usize,
    n: usize,
    g: usize,
    k: usize,
) -> Result<Vec<u32>, GpuError> {
    if !check_knn_args(refs, queries, b, n, g, k)? {
        return Ok(Vec::new());
    }

    let limit = ctx.max_storage_bytes();
    let sizes = [
        ("one KNN reference cloud", n as u64 * 3 * ELEM),
        ("one cloud's KNN queries", g as u64 * 3 * ELEM),
        ("one cloud's KNN output", g as u64 * k as u64 * ELEM),
    ];
    for (what, bytes) in sizes {
        if bytes > limit {
            return Err(GpuError::BufferTooLarge { what, bytes, limit });
        }
    }
    let per_cloud = sizes.iter().map(|s| s.1).max().unwrap_or(1).max(1);
    // clouds per dispatch: every buffer within the limit, and clouds*g queries within the
    // workgroup count the device can dispatch along x
    let by_dispatch = u64::from(ctx.max_workgroups()) * WG / g as u64;
    if by_dispatch == 0 {
        return Err(GpuError::BufferTooLarge {
            what: "one cloud's KNN queries (dispatch size)",
            bytes: g as u64 * 3 * ELEM,
            limit: u64::from(ctx.max_workgroups()) * WG * 3 * ELEM,
        });
    }
    let chunk = (limit / per_cloud).min(by_dispatch).max(1) as usize;

    let mut out = Vec::with_capacity(b * g * k);
    for first in (0..b).step_by(chunk) {
        let clouds = chunk.min(b - first);
        out.extend(knn_chunk(
            ctx,
            &refs[first * n..(first + clouds) * n],
            &queries[first * g..(first + clouds) * g],
            clouds,
            [n, g, k],
        )?);
    }
    Ok(out)
}

/// One dispatch over `clouds` whole clouds that fit the device limits.
fn knn_chunk(
    ctx: &GpuContext,
    refs: &[[f32; 3]],
    queries: &[[f32; 3]],
    clouds: usize,
    [n, g, k]: [usize; 3],
) -> Result<Vec<u32>, GpuError> {
    let nq = clouds * g;
    // every value fits in u32: bounded by buffer sizes capped at u32::MAX bytes;
    // `zero` (fifth) must be 0, see `exact` in the shader
    let params: [u32; 8] = [n as u32, g as u32, k as u32, nq as u32, 0, 0, 0, 0];
    ctx.launch(
        Kernel::Knn,
        &[bytemuck::cast_slice(refs), bytemuck::cast_slice(queries)],
        &[],
        (nq * k) as u64 * ELEM,
        bytemuck::bytes_of(&params),
        (nq as u64).div_ceil(WG) as u32,
    )
}

/// Validates the arguments of [`knn_gpu`]; `Ok(false)` when the result is empty.
fn check_knn_args(
    refs: &[[f32; 3]],
    queries: &[[f32; 3]],
    b: usize,
    n: usize,
    g: usize,
    k: usize,
) -> Result<bool, GpuError> {
    let overflow = || GpuError::InvalidInput(format!("sizes overflow (b={b}, n={n}, g={g})"));
    let nrefs = b.checked_mul(n).ok_or_else(overflow)?;
    let nqueries = b.checked_mul(g).ok_or_else(overflow)?;
    nqueries.checked_mul(k).ok_or_else(overflow)?;
    if refs.len() != nrefs {
        return Err(GpuError::InvalidInput(format!(
            "refs has {} entries, expected b*n = {b}*{n} = {nrefs}",
            refs.len()
        )));
    }
    if queries.len() != nqueries {
        return Err(GpuError::InvalidInput(format!(
            "queries has {} entries, expected b*g = {b}*{g} = {nqueries}",
            queries.len()
        )));
    }
    if k > KNN_MAX_K {
        return Err(GpuError::InvalidInput(format!(
            "k = {k} exceeds the kernel's maximum of {KNN_MAX_K}"
        )));
    }
    if k > n {
        return Err(GpuError::InvalidInput(format!(
            "k = {k} exceeds the number of reference points n = {n}"
        )));
    }
    if b == 0 || g == 0 || k == 0 {
        return Ok(false);
    }
    check_finite(refs)?;
    check_finite(queries)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_checks() {
        let refs = [[1.0, 2.0, 3.0]; 8];
        let q = [[0.0, 0.0, 0.0]; 2];
        assert!(matches!(check_knn_args(&refs, &q, 2, 4, 1, 3), Ok(true)));
        assert!(matches!(check_knn_args(&refs, &q, 2, 4, 1, 0), Ok(false)));
        // k > n
        assert!(matches!(
            check_knn_args(&refs, &q, 2, 4, 1, 5),
            Err(GpuError::InvalidInput(_))
        ));
        // wrong lengths
        assert!(check_knn_args(&refs, &q, 1, 8, 1, 3).is_err());
        assert!(check_knn_args(&refs, &q, 2, 3, 1, 3).is_err());
        // k > 64
        let many = vec![[1.0, 0.0, 0.0]; 65];
        assert!(check_knn_args(&many, &q[..1], 1, 65, 1, 65).is_err());
        assert!(matches!(
            check_knn_args(&many, &q[..1], 1, 65, 1, 64),
            Ok(true)
        ));
        // non-finite query
        let bad = [[f32::NAN, 0.0, 0.0], [0.0, 0.0, 0.0]];
        assert!(check_knn_args(&refs, &bad, 2, 4, 1, 3).is_err());
    }
}
