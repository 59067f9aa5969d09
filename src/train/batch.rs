//! Batch preparation with the official sampling and augmentation (dapt-spec.md §2.2-2.3):
//! per-sample FPS pre-sampling, one random column subset shared by the batch, per-sample
//! anisotropic scale and translate. Test clouds are FPS-sampled once, deterministically.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::Rng;
use crate::gpu::cpu::fps;
/// The test-time sampling lives with inference; training and evaluation use the same.
pub use crate::infer::sampling::{pad_to, test_points};
use crate::model::grouping::device::{fps as device_fps, gather_points};

/// A cloud ready for the model plus its label.
#[derive(Clone, Debug)]
pub struct Item {
    pub points: Vec<[f32; 3]>,
    pub label: usize,
}

/// Official per-sample `PointcloudScaleAndTranslate`: s ~ U(2/3, 3/2)³, t ~ U(−0.2, 0.2)³.
pub fn scale_and_translate(points: &mut [[f32; 3]], rng: &mut Rng) {
    let (s, t) = draw_scale_and_translate(rng);
    for p in points.iter_mut() {
        for k in 0..3 {
            p[k] = p[k] * s[k] + t[k];
        }
    }
}

/// The scale and translation [`scale_and_translate`] draws, in its order.
fn draw_scale_and_translate(rng: &mut Rng) -> ([f32; 3], [f32; 3]) {
    let mut s = [0.0; 3];
    for v in &mut s {
        *v = rng.range(2.0 / 3.0, 1.5);
    }
    let mut t = [0.0; 3];
    for v in &mut t {
        *v = rng.range(-0.2, 0.2);
    }
    (s, t)
}

/// [`train_batch`] with the FPS pre-sampling, the column subset and the augmentation run on
/// `device`: the same random draws in the same order (so a run is reproducible and
/// resumable on each backend), one upload of the shuffled clouds, and a `[b, npoints, 3]`
/// tensor that stays on the device. `None` when the clouds differ in size (the host path
/// handles those).
pub fn train_batch_on_device(
    items: &[&Item],
    npoints: usize,
    point_all: usize,
    shuffle_points: bool,
    rng: &mut Rng,
    device: &Device,
) -> Option<(Tensor<3>, Vec<usize>)> {
    let n = items.first()?.points.len();
    if n == 0 || items.iter().any(|i| i.points.len() != n) {
        return None;
    }
    let b = items.len();
    let point_all = point_all.min(n).max(npoints.min(n));
    let mut flat = Vec::with_capacity(b * n * 3);
    for it in items {
        if shuffle_points {
            let mut o: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut o);
            flat.extend(o.iter().flat_map(|&i| it.points[i]));
        } else {
            flat.extend(it.points.iter().flatten());
        }
    }
    let cloud = Tensor::<3>::from_data(TensorData::new(flat, [b, n, 3]), device);
    let pre = if point_all == n {
        cloud
    } else {
        gather_points(&cloud, device_fps(&cloud, point_all))
    };
    let cols: Vec<i64> = rng
        .choose_distinct(point_all, npoints)
        .into_iter()
        .map(|c| c.min(point_all - 1) as i64)
        .collect();
    let k = cols.len();
    let cols = Tensor::<1, Int>::from_data(TensorData::new(cols, [k]), device)
        .reshape([1, k])
        .expand([b, k]);
    let sel = gather_points(&pre, cols);
    let (mut scale, mut shift) = (Vec::with_capacity(b * 3), Vec::with_capacity(b * 3));
    for _ in 0..b {
        let (s, t) = draw_scale_and_translate(rng);
        scale.extend(s);
        shift.extend(t);
    }
    let scale = Tensor::<3>::from_data(TensorData::new(scale, [b, 1, 3]), device);
    let shift = Tensor::<3>::from_data(TensorData::new(shift, [b, 1, 3]), device);
    let out = sel * scale.expand([b, k, 3]) + shift.expand([b, k, 3]);
    Some((out, items.iter().map(|i| i.label).collect()))
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
