//! Farthest point sampling on the GPU (`shaders/fps.wgsl`): one workgroup per cloud, results
//! identical to [`crate::gpu::cpu::fps`] (same picks, same order, same duplicates).
//!
//! Batches whose buffers exceed the device's storage-buffer or dispatch limits are split into
//! chunks of whole clouds, one dispatch each.

use super::context::{GpuContext, GpuError, Kernel};

/// Bytes of one `f32`/`u32` element.
const ELEM: u64 = 4;

/// Farthest point sampling of `m` indices from each of `b` clouds of `n` points.
///
/// `points` is `[b][n]` flattened; the result is `[b][m]` flattened, each index in `0..n`
/// relative to its cloud. Semantics are those of [`crate::gpu::cpu::fps`]: start at 0, squared
/// distances, running minimum initialised to 1e10, points with `|p|² <= 1e-3` never picked, ties
/// to the lowest index, duplicates once the eligible points run out, all zeros when none is
/// eligible. Empty when `b`, `n` or `m` is 0 (like [`crate::gpu::cpu::fps_batch`]).
///
/// Non-finite coordinates are rejected: the GPU's `min`/comparisons on NaN are
/// implementation-defined, so the CPU semantics could not be guaranteed. Squared distances
/// below `f32::MIN_POSITIVE` (coordinate differences under ~1e-19) may be flushed to zero by
/// GPU drivers; only clouds with such near-duplicates can then differ from the CPU.
pub fn fps_gpu(
    ctx: &GpuContext,
    points: &[[f32; 3]],
    b: usize,
    n: usize,
    m: usize,
) -> Result<Vec<u32>, GpuError> {
    if !check_fps_args(points, b, n, m)? {
        return Ok(Vec::new());
    }

    let limit = ctx.max_storage_bytes();
    let cloud_points = n as u64 * 3 * ELEM;
    let cloud_out = m as u64 * ELEM;
    if cloud_points > limit {
        return Err(GpuError::BufferTooLarge {
            what: "one FPS cloud",
            bytes: cloud_points,
            limit,
        });
    }
    if cloud_out > limit {
        return Err(GpuError::BufferTooLarge {
            what: "one FPS output row",
            bytes: cloud_out,
            limit,
        });
    }
    // The points buffer (12 bytes a point) is the largest per-cloud buffer besides the output.
    let per_cloud = cloud_points.max(cloud_out);
    let chunk = (limit / per_cloud)
        .min(u64::from(ctx.max_workgroups()))
        .max(1) as usize;

    let mut out = Vec::with_capacity(b * m);
    for first in (0..b).step_by(chunk) {
        let clouds = chunk.min(b - first);
        let slice = &points[first * n..(first + clouds) * n];
        out.extend(fps_chunk(ctx, slice, clouds, n, m)?);
    }
    Ok(out)
}

/// One dispatch over `clouds` whole clouds that fit the device limits.
fn fps_chunk(
    ctx: &GpuContext,
    points: &[[f32; 3]],
    clouds: usize,
    n: usize,
    m: usize,
) -> Result<Vec<u32>, GpuError> {
    // n, m fit in u32: they are bounded by the buffer limit, itself capped at u32::MAX bytes;
    // `zero` (third) must be 0, see `exact` in the shader
    let params: [u32; 4] = [n as u32, m as u32, 0, 0];
    ctx.launch(
        Kernel::Fps,
        &[bytemuck::cast_slice(points)],
        // the running minimum, initialised by the kernel itself
        &[(clouds * n) as u64 * ELEM],
        (clouds * m) as u64 * ELEM,
        bytemuck::bytes_of(&params),
        clouds as u32,
    )
}

/// Validates the arguments of [`fps_gpu`]; `Ok(false)` when the result is empty.
fn check_fps_args(points: &[[f32; 3]], b: usize, n: usize, m: usize) -> Result<bool, GpuError> {
    let total = b
        .checked_mul(n)
        .ok_or_else(|| GpuError::InvalidInput(format!("b*n overflows ({b}*{n})")))?;
    if points.len() != total {
        return Err(GpuError::InvalidInput(format!(
            "points has {} entries, expected b*n = {b}*{n} = {total}",
            points.len()
        )));
    }
    if b == 0 || n == 0 || m == 0 {
        return Ok(false);
    }
    check_finite(points)?;
    Ok(true)
}

/// Rejects NaN and infinities (see [`fps_gpu`]).
pub(crate) fn check_finite(points: &[[f32; 3]]) -> Result<(), GpuError> {
    match points.iter().position(|p| !p.iter().all(|c| c.is_finite())) {
        None => Ok(()),
        Some(i) => Err(GpuError::InvalidInput(format!(
            "point {i} has a non-finite coordinate {:?}",
            points[i]
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_checks_reject_bad_lengths_and_non_finite_points() {
        let pts = [[1.0, 0.0, 0.0]; 4];
        assert!(matches!(
            check_fps_args(&pts, 2, 3, 2),
            Err(GpuError::InvalidInput(_))
        ));
        let bad = [[1.0, f32::NAN, 0.0], [1.0, 0.0, 0.0]];
        assert!(matches!(
            check_fps_args(&bad, 1, 2, 2),
            Err(GpuError::InvalidInput(_))
        ));
        let inf = [[1.0, 0.0, f32::INFINITY]];
        assert!(check_fps_args(&inf, 1, 1, 1).is_err());
        assert!(matches!(check_fps_args(&pts, 1, 4, 0), Ok(false)));
        assert!(matches!(check_fps_args(&pts, 1, 4, 2), Ok(true)));
        assert!(check_fps_args(&[], usize::MAX, 2, 1).is_err());
    }
}
