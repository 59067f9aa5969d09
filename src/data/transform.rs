//! Normalisation, resampling and augmentation with the official semantics
//! (dapt-spec.md §2.1-2.3). Every random draw goes through [`Rng`] so runs replay.

use super::{PointCloud, Rng};
use crate::gpu::cpu::fps;

/// Centres on the mean and scales so the farthest point has norm 1 (`pc_normalize`).
/// A cloud whose points all coincide is only centred: dividing by zero would make NaNs.
pub fn pc_normalize(points: &mut [[f32; 3]]) {
    if points.is_empty() {
        return;
    }
    let mut c = [0f64; 3];
    for p in points.iter() {
        for k in 0..3 {
            c[k] += p[k] as f64;
        }
    }
    let n = points.len() as f64;
    let c = c.map(|v| (v / n) as f32);
    let mut max2 = 0f32;
    for p in points.iter_mut() {
        for k in 0..3 {
            p[k] -= c[k];
        }
        max2 = max2.max(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]);
    }
    let m = max2.sqrt();
    if m > f32::MIN_POSITIVE && m.is_finite() {
        for p in points.iter_mut() {
            for v in p.iter_mut() {
                *v /= m;
            }
        }
    }
}

/// The official classification augmentation `PointcloudScaleAndTranslate`:
/// `p ← p ⊙ s + t`, s ~ U(2/3, 3/2)³ per axis, t ~ U(−0.2, 0.2)³, one draw per cloud.
pub fn scale_and_translate(points: &mut [[f32; 3]], rng: &mut Rng) {
    let s: [f32; 3] = std::array::from_fn(|_| rng.range(2.0 / 3.0, 1.5));
    let t: [f32; 3] = std::array::from_fn(|_| rng.range(-0.2, 0.2));
    for p in points.iter_mut() {
        for k in 0..3 {
            p[k] = p[k] * s[k] + t[k];
        }
    }
}

/// Part-segmentation augmentation: isotropic scale U(0.8, 1.25), per-axis shift
/// U(−0.1, 0.1), one draw per cloud.
pub fn seg_scale_shift(points: &mut [[f32; 3]], rng: &mut Rng) {
    let s = rng.range(0.8, 1.25);
    let t: [f32; 3] = std::array::from_fn(|_| rng.range(-0.1, 0.1));
    for p in points.iter_mut() {
        for k in 0..3 {
            p[k] = p[k] * s + t[k];
        }
    }
}

/// `n` random points: distinct when the cloud has at least `n`, otherwise all of them
/// shuffled plus random repeats. Attributes stay aligned. An empty cloud stays empty.
pub fn resample_random(cloud: &PointCloud, n: usize, rng: &mut Rng) -> PointCloud {
    let len = cloud.len();
    if len == 0 {
        return cloud.clone();
    }
    let idx = if len >= n {
        rng.choose_distinct(len, n)
    } else {
        let mut idx = rng.choose_distinct(len, len);
        idx.extend((len..n).map(|_| rng.below(len)));
        idx
    };
    cloud.select(&idx)
}

/// `n` points by farthest point sampling (official kernel semantics, start at index 0).
/// With fewer than `n` points, FPS takes them all and random repeats pad the rest; the
/// padding uses a fixed seed so that test-time sampling stays deterministic.
pub fn resample_fps(cloud: &PointCloud, n: usize) -> PointCloud {
    let len = cloud.len();
    if len == 0 {
        return cloud.clone();
    }
    let mut idx = fps(&cloud.positions, n.min(len));
    if len < n {
        let mut rng = Rng::new(0x05ee_df95 ^ len as u64);
        idx.extend((len..n).map(|_| rng.below(len)));
    }
    cloud.select(&idx)
}
