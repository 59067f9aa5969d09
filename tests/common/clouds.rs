//! Seeded random clouds aimed at the ways sampling kernels can diverge from the CPU's
//! (ties, duplicates, points near the origin, nothing eligible), for the FPS/kNN tests of
//! every implementation.

use dapt::data::rng::Rng;

/// Kinds of random clouds, each aimed at one way the kernels could diverge.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Gaussian blob: generic floats.
    Normal,
    /// Small integer grid: many exactly equal distances, so tie-breaking decides.
    Grid,
    /// Every point repeated: equal points, zero distances.
    Duplicated,
    /// A third of the points inside (or on the edge of) the skipped ball around the origin.
    NearOrigin,
    /// Every point inside the skipped ball: no eligible point at all.
    AllNearOrigin,
}

pub fn cloud(rng: &mut Rng, kind: Kind, n: usize) -> Vec<[f32; 3]> {
    let mut pts: Vec<[f32; 3]> = (0..n)
        .map(|_| match kind {
            Kind::Normal => [rng.normal(), rng.normal(), rng.normal()],
            Kind::Grid => [
                rng.below(5) as f32 - 2.0,
                rng.below(5) as f32 - 2.0,
                rng.below(3) as f32,
            ],
            Kind::Duplicated | Kind::NearOrigin => [
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
            ],
            Kind::AllNearOrigin => [rng.range(-0.01, 0.01), rng.range(-0.01, 0.01), 0.0],
        })
        .collect();
    match kind {
        Kind::Duplicated => {
            for i in 0..n {
                pts[i] = pts[i / 3 * 3];
            }
        }
        Kind::NearOrigin => {
            for (i, p) in pts.iter_mut().enumerate() {
                if i % 3 == 1 {
                    *p = [rng.range(-0.015, 0.015), rng.range(-0.015, 0.015), 0.0];
                } else if i % 9 == 2 {
                    // |p|² = 1e-3 exactly in f32 arithmetic or as close as it gets
                    *p = [1e-3f32.sqrt(), 0.0, 0.0];
                }
            }
        }
        _ => {}
    }
    pts
}

pub fn batch(rng: &mut Rng, kind: Kind, b: usize, n: usize) -> Vec<[f32; 3]> {
    (0..b).flat_map(|_| cloud(rng, kind, n)).collect()
}

/// `count` points uniform in the cube [-1, 1]³ (x, y, z drawn in that order per point).
pub fn uniform_cube(rng: &mut Rng, count: usize) -> Vec<[f32; 3]> {
    (0..count)
        .map(|_| {
            [
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
            ]
        })
        .collect()
}
