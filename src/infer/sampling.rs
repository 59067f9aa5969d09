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
    for j in repeats(len, n, rng) {
        points.push(points[j]);
    }
    true
}

/// The indices `pad_to` appends to a cloud of `len` points to reach `n`.
fn repeats(len: usize, n: usize, rng: &mut Rng) -> Vec<usize> {
    (len..n).map(|_| rng.below(len)).collect()
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

/// Indices into a cloud of `n` points giving the model's `npoints` input: FPS when there are
/// more, all when equal, all plus seeded repeats when fewer. Keeping indices (not copies) lets
/// patch membership refer to the points the user sees.
pub fn sample_indices(points: &[[f32; 3]], npoints: usize) -> Vec<usize> {
    let n = points.len();
    match n.cmp(&npoints) {
        std::cmp::Ordering::Equal => (0..n).collect(),
        std::cmp::Ordering::Greater => fps(points, npoints),
        std::cmp::Ordering::Less if n == 0 => Vec::new(),
        std::cmp::Ordering::Less => {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.extend(repeats(n, npoints, &mut Rng::new(0)));
            idx
        }
    }
}
