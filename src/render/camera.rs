//! Turntable camera: orbit around a pivot with a fixed world up axis (+Y or +Z), pan, zoom,
//! a robust fit to the data (percentile bounds, so one outlier cannot break it), and set pivot.
//!
//! Matrices are column-major `[[f32; 4]; 4]` (`m[col][row]`), as WGSL expects; transforms are
//! named `target_from_source` (`view_from_world` maps world points into the view frame).
//! The camera only changes on explicit calls: loading or updating data never moves it (ux.md #5).

use serde::{Deserialize, Serialize};

pub type Mat4 = [[f32; 4]; 4];
pub type Vec3 = [f32; 3];

/// Which world axis points up on screen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpAxis {
    #[default]
    PlusY,
    PlusZ,
}

impl UpAxis {
    pub const ALL: [UpAxis; 2] = [UpAxis::PlusY, UpAxis::PlusZ];

    /// The coordinate that points up (1 for y, 2 for z).
    pub fn index(self) -> usize {
        match self {
            UpAxis::PlusY => 1,
            UpAxis::PlusZ => 2,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            UpAxis::PlusY => "+Y up",
            UpAxis::PlusZ => "+Z up",
        }
    }

    /// (side, up, front) world axes of the turntable frame.
    fn frame(self) -> (Vec3, Vec3, Vec3) {
        match self {
            UpAxis::PlusY => ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]),
            UpAxis::PlusZ => ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]),
        }
    }
}

/// Turntable orbit camera with a perspective projection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Camera {
    pub pivot: Vec3,
    /// Rotation about the up axis, radians.
    pub yaw: f32,
    /// Elevation above the horizon, radians; clamped short of the poles.
    pub pitch: f32,
    /// Distance from the eye to the pivot, world units.
    pub distance: f32,
    pub up: UpAxis,
    pub fov_y_radians: f32,
}

impl Default for Camera {
    fn default() -> Self {
        Self {
            pivot: [0.0; 3],
            yaw: 0.6,
            pitch: 0.35,
            distance: 3.0,
            up: UpAxis::PlusY,
            fov_y_radians: 45f32.to_radians(),
        }
    }
}

const MAX_PITCH: f32 = 1.55; // ~89 degrees: the turntable never flips over the pole

impl Camera {
    /// World position of the eye.
    pub fn eye(&self) -> Vec3 {
        let (side, up, front) = self.up.frame();
        let (sy, cy) = self.yaw.sin_cos();
        let (sp, cp) = self.pitch.sin_cos();
        let dir = add(
            add(scale(side, cp * sy), scale(up, sp)),
            scale(front, cp * cy),
        );
        add(self.pivot, scale(dir, self.distance))
    }

    /// Rotates the view by a mouse drag of `(dx, dy)` points.
    pub fn orbit(&mut self, dx: f32, dy: f32) {
        self.yaw -= dx * 0.008;
        self.pitch = (self.pitch + dy * 0.008).clamp(-MAX_PITCH, MAX_PITCH);
    }

    /// Moves the pivot in the view plane so the data follows a drag of `(dx, dy)` points
    /// in a view `viewport_height` points tall.
    pub fn pan(&mut self, dx: f32, dy: f32, viewport_height: f32) {
        let world_per_point =
            2.0 * self.distance * (self.fov_y_radians * 0.5).tan() / viewport_height.max(1.0);
        let (right, up, _) = self.view_axes();
        let delta = add(
            scale(right, -dx * world_per_point),
            scale(up, dy * world_per_point),
        );
        self.pivot = add(self.pivot, delta);
    }

    /// Multiplies the distance to the pivot by `factor` (< 1 zooms in).
    pub fn zoom(&mut self, factor: f32) {
        if factor.is_finite() && factor > 0.0 {
            self.distance = (self.distance * factor).clamp(1e-4, 1e7);
        }
    }

    /// Orbit around `pivot` from now on; keeps the orientation and distance (the view recentres
    /// on the chosen point, as Polyscope and rerun do on double-click).
    pub fn set_pivot(&mut self, pivot: Vec3) {
        if pivot.iter().all(|v| v.is_finite()) {
            self.pivot = pivot;
        }
    }

    /// Frames `points` using the 2nd-98th percentile box of each axis (ignores outliers),
    /// keeping the up axis and the current orientation.
    pub fn fit(&mut self, points: &[Vec3]) {
        let Some((lo, hi)) = robust_bounds(points, 0.02) else {
            return;
        };
        let center = scale(add(lo, hi), 0.5);
        let radius = (0.5 * length(sub(hi, lo))).max(1e-6);
        self.pivot = center;
        // a sphere of `radius` fits in the vertical field of view, with a small margin
        self.distance = 1.1 * radius / (self.fov_y_radians * 0.5).sin();
    }

    /// Resets orientation and frames the data.
    pub fn reset(&mut self, points: &[Vec3]) {
        let up = self.up;
        *self = Camera {
            up,
            ..Camera::default()
        };
        self.fit(points);
    }

    /// (right, up, forward) unit vectors of the view in world coordinates.
    pub fn view_axes(&self) -> (Vec3, Vec3, Vec3) {
        let forward = normalize(sub(self.pivot, self.eye()));
        let (_, world_up, _) = self.up.frame();
        let right = normalize(cross(forward, world_up));
        let up = cross(right, forward);
        (right, up, forward)
    }

    /// Rigid transform taking world points into the view frame (x right, y up, -z forward).
    pub fn view_from_world(&self) -> Mat4 {
        let (r, u, f) = self.view_axes();
        let e = self.eye();
        [
            [r[0], u[0], -f[0], 0.0],
            [r[1], u[1], -f[1], 0.0],
            [r[2], u[2], -f[2], 0.0],
            [-dot(r, e), -dot(u, e), dot(f, e), 1.0],
        ]
    }

    /// Inverse of [`Self::view_from_world`].
    pub fn world_from_view(&self) -> Mat4 {
        let (r, u, f) = self.view_axes();
        let e = self.eye();
        [
            [r[0], r[1], r[2], 0.0],
            [u[0], u[1], u[2], 0.0],
            [-f[0], -f[1], -f[2], 0.0],
            [e[0], e[1], e[2], 1.0],
        ]
    }

    /// Perspective projection (wgpu depth range 0..1) with near/far planes around the data.
    pub fn clip_from_view(&self, aspect: f32) -> Mat4 {
        let near = (self.distance * 0.01).max(1e-5);
        let far = self.distance * 100.0 + 10.0;
        let f = 1.0 / (self.fov_y_radians * 0.5).tan();
        let a = aspect.max(1e-6);
        [
            [f / a, 0.0, 0.0, 0.0],
            [0.0, f, 0.0, 0.0],
            [0.0, 0.0, far / (near - far), -1.0],
            [0.0, 0.0, near * far / (near - far), 0.0],
        ]
    }

    pub fn clip_from_world(&self, aspect: f32) -> Mat4 {
        mat_mul(&self.clip_from_view(aspect), &self.view_from_world())
    }
}

/// Projects world points to a viewport of `size` (any unit, origin top-left).
/// Returns `(x, y, depth)` with depth = distance along the view axis, or `None` behind the eye.
pub struct Projector {
    clip_from_world: Mat4,
    size: [f32; 2],
}

impl Projector {
    pub fn new(camera: &Camera, size: [f32; 2]) -> Self {
        Self {
            clip_from_world: camera.clip_from_world(size[0] / size[1].max(1.0)),
            size,
        }
    }

    pub fn project(&self, p: Vec3) -> Option<[f32; 3]> {
        let c = transform(&self.clip_from_world, [p[0], p[1], p[2], 1.0]);
        if c[3] <= 1e-6 {
            return None;
        }
        let x = (c[0] / c[3] * 0.5 + 0.5) * self.size[0];
        let y = (0.5 - c[1] / c[3] * 0.5) * self.size[1];
        Some([x, y, c[3]])
    }
}

/// Per-axis `q`..`1-q` quantile box of `points`; `None` when empty or non-finite.
pub fn robust_bounds(points: &[Vec3], q: f32) -> Option<(Vec3, Vec3)> {
    // a strided sample keeps this fast for million-point clouds
    let stride = (points.len() / 100_000).max(1);
    let mut lo = [0.0; 3];
    let mut hi = [0.0; 3];
    for k in 0..3 {
        let mut v: Vec<f32> = points
            .iter()
            .step_by(stride)
            .map(|p| p[k])
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f32::total_cmp);
        let at = |f: f32| v[((v.len() - 1) as f32 * f).round() as usize];
        lo[k] = at(q);
        hi[k] = at(1.0 - q);
    }
    Some((lo, hi))
}

pub fn mat_mul(a: &Mat4, b: &Mat4) -> Mat4 {
    let mut out = [[0.0; 4]; 4];
    for (c, col) in out.iter_mut().enumerate() {
        for (r, v) in col.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[k][r] * b[c][k]).sum();
        }
    }
    out
}

pub fn transform(m: &Mat4, v: [f32; 4]) -> [f32; 4] {
    let mut out = [0.0; 4];
    for (r, o) in out.iter_mut().enumerate() {
        *o = (0..4).map(|k| m[k][r] * v[k]).sum();
    }
    out
}

fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn scale(a: Vec3, s: f32) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
fn dot(a: Vec3, b: Vec3) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn length(a: Vec3) -> f32 {
    dot(a, a).sqrt()
}
fn normalize(a: Vec3) -> Vec3 {
    let l = length(a);
    if l > 0.0 { scale(a, 1.0 / l) } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Vec3, b: Vec3, eps: f32) -> bool {
        (0..3).all(|k| (a[k] - b[k]).abs() < eps)
    }

    #[test]
    fn view_and_world_transforms_are_inverse() {
        let mut cam = Camera {
            pivot: [1.0, -2.0, 0.5],
            ..Camera::default()
        };
        cam.orbit(37.0, -12.0);
        let m = mat_mul(&cam.world_from_view(), &cam.view_from_world());
        for (c, col) in m.iter().enumerate() {
            for (r, v) in col.iter().enumerate() {
                let want = if r == c { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-4, "{m:?}");
            }
        }
    }

    #[test]
    fn pivot_projects_to_the_centre_and_up_axis_points_up() {
        for up in UpAxis::ALL {
            let cam = Camera {
                up,
                ..Camera::default()
            };
            let proj = Projector::new(&cam, [800.0, 600.0]);
            let c = proj.project(cam.pivot).unwrap();
            assert!((c[0] - 400.0).abs() < 1e-2 && (c[1] - 300.0).abs() < 1e-2);
            let up_vec = match up {
                UpAxis::PlusY => [0.0, 0.5, 0.0],
                UpAxis::PlusZ => [0.0, 0.0, 0.5],
            };
            let above = proj.project(up_vec).unwrap();
            assert!(
                above[1] < 300.0 - 10.0,
                "{up:?}: up axis must point up on screen"
            );
        }
    }

    #[test]
    fn fit_ignores_outliers() {
        let mut pts: Vec<Vec3> = (0..1000)
            .map(|i| {
                let t = i as f32 / 999.0;
                [t * 2.0 - 1.0, (t * 7.0).sin(), (t * 3.0).cos()]
            })
            .collect();
        pts.push([1e6, 1e6, 1e6]);
        let mut cam = Camera::default();
        cam.fit(&pts);
        assert!(
            cam.distance < 10.0,
            "one outlier must not blow the fit: {}",
            cam.distance
        );
        assert!(close(cam.pivot, [0.0, 0.0, 0.0], 0.3), "{:?}", cam.pivot);
    }

    #[test]
    fn pitch_is_clamped_and_zoom_pan_pivot_behave() {
        let mut cam = Camera::default();
        cam.orbit(0.0, 10_000.0);
        assert!(cam.pitch <= MAX_PITCH);
        let d = cam.distance;
        cam.zoom(0.5);
        assert!((cam.distance - d * 0.5).abs() < 1e-6);
        cam.zoom(f32::NAN);
        assert!((cam.distance - d * 0.5).abs() < 1e-6);
        let before = cam.pivot;
        cam.pan(10.0, 0.0, 100.0);
        assert!(!close(before, cam.pivot, 1e-6));
        cam.set_pivot([3.0, 2.0, 1.0]);
        assert_eq!(cam.pivot, [3.0, 2.0, 1.0]);
        cam.set_pivot([f32::NAN, 0.0, 0.0]);
        assert_eq!(cam.pivot, [3.0, 2.0, 1.0]);
    }
}
