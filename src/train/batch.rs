//! Batch preparation with the official sampling and augmentation (dapt-spec.md §2.2-2.3):
//! per-sample FPS pre-sampling, one random column subset shared by the batch, per-sample
//! anisotropic scale and translate. Test clouds are FPS-sampled once, deterministically.

use crate::data::Rng;
use crate::gpu::cpu::fps;
/// The test-time sampling lives with inference; training and evaluation use the same.
pub use crate::infer::sampling::{pad_to, test_points};

/// A cloud ready for the model plus its label.
#[derive(Clone, Debug)]
pub struct Item {
    pub points: Vec<[f32; 3]>,
    pub label: usize,
}

/// Official per-sample `PointcloudScaleAndTranslate`: s ~ U(2/3, 3/2)³, t ~ U(−0.2, 0.2)³.
pub fn scale_and_translate(points: &mut [[f32; 3]], rng: &mut Rng) {
    let s = [
        rng.range(2.0 / 3.0, 1.5),
        rng.range(2.0 / 3.0, 1.5),
        rng.range(2.0 / 3.0, 1.5),
    ];
    let t = [
        rng.range(-0.2, 0.2),
        rng.range(-0.2, 0.2),
        rng.range(-0.2, 0.2),
    ];
    for p in points.iter_mut() {
        for k in 0..3 {
            p[k] = p[k] * s[k] + t[k];
        }
    }
}

/// One training batch: `[b][npoints]` flattened points and labels.
pub fn train_batch(
    items: &[&Item],
    npoints: usize,
    point_all: usize,
    shuffle_points: bool,
    rng: &mut Rng,
) -> (Vec<[f32; 3]>, Vec<usize>) {
    let min_n = items.iter().map(|i| i.points.len()).min().unwrap_or(0);
    let point_all = point_all.min(min_n).max(npoints.min(min_n));
    // per-sample point-order shuffles (train split), drawn up front so threads stay seeded
    let orders: Vec<Option<Vec<usize>>> = items
        .iter()
        .map(|it| {
            shuffle_points.then(|| {
                let mut o: Vec<usize> = (0..it.points.len()).collect();
                rng.shuffle(&mut o);
                o
            })
        })
        .collect();
    let pre: Vec<Vec<[f32; 3]>> = std::thread::scope(|s| {
        let hs: Vec<_> = items
            .iter()
            .zip(orders.iter())
            .map(|(it, order)| {
                s.spawn(move || {
                    let pts: Vec<[f32; 3]> = match order {
                        Some(o) => o.iter().map(|&i| it.points[i]).collect(),
                        None => it.points.clone(),
                    };
                    if pts.len() == point_all {
                        pts
                    } else {
                        fps(&pts, point_all).into_iter().map(|i| pts[i]).collect()
                    }
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let cols = rng.choose_distinct(point_all, npoints);
    let mut out = Vec::with_capacity(items.len() * npoints);
    for p in &pre {
        let mut sel: Vec<[f32; 3]> = cols
            .iter()
            .map(|&c| p[c.min(p.len().saturating_sub(1))])
            .collect();
        scale_and_translate(&mut sel, rng);
        out.extend(sel);
    }
    (out, items.iter().map(|i| i.label).collect())
}
