//! Picking: the front-most point within a few pixels of the cursor.
//!
//! Projecting a million points takes tens of milliseconds, too much for every pointer move.
//! The projected points are bucketed into a screen grid of pick-radius cells once per camera,
//! data and viewport; each pick then looks at the 3x3 cells around the cursor only.

use crate::render::Camera;
use crate::render::camera::{Projector, Vec3};

/// Projected points bucketed by screen cell (counting sort: `start[c]..start[c + 1]` are the
/// entries of cell `c`).
pub(super) struct PickGrid {
    camera: Camera,
    generation: u64,
    size: [f32; 2],
    radius: f32,
    cols: usize,
    rows: usize,
    start: Vec<u32>,
    /// (x, y, depth, point index)
    entries: Vec<(f32, f32, f32, u32)>,
}

impl PickGrid {
    /// Whether this grid was built for these inputs.
    pub fn matches(&self, camera: &Camera, generation: u64, size: [f32; 2], radius: f32) -> bool {
        self.generation == generation
            && self.size == size
            && self.radius == radius
            && self.camera == *camera
    }

    /// Buckets `positions` as `camera` shows them in a view of `size` points; points more than
    /// `radius` outside the view can never be picked and are left out.
    pub fn build(
        camera: &Camera,
        generation: u64,
        positions: &[Vec3],
        size: [f32; 2],
        radius: f32,
    ) -> Self {
        let proj = Projector::new(camera, size);
        let cell = radius.max(1.0);
        // one margin cell on every side
        let cols = (size[0] / cell).ceil().max(1.0) as usize + 2;
        let rows = (size[1] / cell).ceil().max(1.0) as usize + 2;
        let cell_of = |x: f32, y: f32| -> Option<usize> {
            let cx = (x / cell).floor() + 1.0;
            let cy = (y / cell).floor() + 1.0;
            (cx >= 0.0 && cy >= 0.0 && (cx as usize) < cols && (cy as usize) < rows)
                .then(|| cy as usize * cols + cx as usize)
        };
        let mut projected = Vec::with_capacity(positions.len());
        let mut count = vec![0u32; cols * rows + 1];
        for (i, p) in positions.iter().enumerate() {
            if let Some([x, y, depth]) = proj.project(*p)
                && let Some(c) = cell_of(x, y)
            {
                count[c + 1] += 1;
                projected.push((c, (x, y, depth, i as u32)));
            }
        }
        for c in 1..count.len() {
            count[c] += count[c - 1];
        }
        let start = count.clone();
        let mut next = count;
        let mut entries = vec![(0.0, 0.0, 0.0, 0); projected.len()];
        for (c, e) in projected {
            entries[next[c] as usize] = e;
            next[c] += 1;
        }
        Self {
            camera: camera.clone(),
            generation,
            size,
            radius,
            cols,
            rows,
            start,
            entries,
        }
    }

    /// Index of the front-most point within `radius` of `at` (view-relative points).
    pub fn pick(&self, at: [f32; 2]) -> Option<usize> {
        let cell = self.radius.max(1.0);
        let cx = (at[0] / cell).floor() as i64 + 1;
        let cy = (at[1] / cell).floor() as i64 + 1;
        let r2 = self.radius * self.radius;
        let mut best: Option<(f32, u32)> = None;
        for y in cy - 1..=cy + 1 {
            for x in cx - 1..=cx + 1 {
                if x < 0 || y < 0 || x as usize >= self.cols || y as usize >= self.rows {
                    continue;
                }
                let c = y as usize * self.cols + x as usize;
                let (s, e) = (self.start[c] as usize, self.start[c + 1] as usize);
                for &(px, py, depth, i) in &self.entries[s..e] {
                    let d2 = (px - at[0]).powi(2) + (py - at[1]).powi(2);
                    // ties in depth go to the lower index, as a front-to-back scan would
                    let better = best.is_none_or(|b| depth < b.0 || (depth == b.0 && i < b.1));
                    if d2 <= r2 && better {
                        best = Some((depth, i));
                    }
                }
            }
        }
        best.map(|b| b.1 as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Rng;

    /// The linear scan the grid replaces.
    fn brute(
        camera: &Camera,
        positions: &[Vec3],
        size: [f32; 2],
        r: f32,
        at: [f32; 2],
    ) -> Option<usize> {
        let proj = Projector::new(camera, size);
        let mut best: Option<(f32, usize)> = None;
        for (i, p) in positions.iter().enumerate() {
            let Some([x, y, depth]) = proj.project(*p) else {
                continue;
            };
            let d2 = (x - at[0]).powi(2) + (y - at[1]).powi(2);
            if d2 <= r * r && best.is_none_or(|b| depth < b.0) {
                best = Some((depth, i));
            }
        }
        best.map(|b| b.1)
    }

    #[test]
    fn grid_picks_what_a_linear_scan_picks() {
        let mut rng = Rng::new(7);
        let positions: Vec<Vec3> = (0..20_000)
            .map(|_| {
                [
                    rng.range(-1.0, 1.0),
                    rng.range(-1.0, 1.0),
                    rng.range(-1.0, 1.0),
                ]
            })
            .collect();
        let mut camera = Camera::default();
        camera.fit(&positions);
        let size = [640.0, 480.0];
        for r in [2.0, 5.0, 9.5] {
            let grid = PickGrid::build(&camera, 3, &positions, size, r);
            assert!(grid.matches(&camera, 3, size, r));
            assert!(!grid.matches(&camera, 4, size, r));
            let mut hits = 0;
            for _ in 0..400 {
                // anywhere in the view (the pointer is inside it when hovering)
                let at = [rng.range(0.0, 640.0), rng.range(0.0, 480.0)];
                let want = brute(&camera, &positions, size, r, at);
                assert_eq!(grid.pick(at), want, "r {r} at {at:?}");
                hits += want.is_some() as usize;
            }
            assert!(hits > 50, "the queries hit points: {hits}");
        }
        // nothing to pick in an empty cloud
        let empty = PickGrid::build(&camera, 0, &[], size, 5.0);
        assert_eq!(empty.pick([320.0, 240.0]), None);
    }
}
