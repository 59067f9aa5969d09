//! The official test-time sampling every prediction and evaluation uses (dapt-spec.md §2.2):
//! a short cloud is padded with random repeats, a long one reduced to `npoints` by FPS from
//! point 0, deterministically.

use crate::data::Rng;
use crate::gpu::cpu::fps;

/// Pads a cloud with random repeats up to `n` points (the official loaders sample with
/// replacement when a cloud is short). Returns whether it had to.
pub fn pad_to(points: &mut Vec<[f32; 3]>, n: usize, rng: &mut Rng) -> bool {
    let len = points.len();
    if len >= n || len == 0 {
        return false;
    }
    for _ in len..n {
        let j = rng.below(len);
        points.push(points[j]);
    }
    true
}

/// The official test-time pipeline: FPS down to `npoints` (a cloud with exactly `npoints`
/// is used as it is; a shorter one is padded with random repeats by the caller).
pub fn test_points(points: &[[f32; 3]], npoints: usize) -> Vec<[f32; 3]> {
    if points.len() == npoints {
        return points.to_vec();
    }
    fps(points, npoints)
        .into_iter()
        .map(|i| points[i])
        .collect()
}
