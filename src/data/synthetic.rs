//! A built-in synthetic shape set, generated deterministically from a seed, so that
//! training, evaluation and the app work (and are tested) without any downloaded data.
//!
//! Ten primitive classes are sampled on their surfaces with per-point part labels. Part ids
//! are global across classes, like ShapeNetPart's 50 (see [`category_parts`]). To keep the
//! classes separable but not trivially so, each shape gets a mild anisotropic scale, a random
//! rotation, Gaussian noise and, sometimes, a cut-out (the points beyond a random plane are
//! removed). Every cloud is finally normalised with `pc_normalize`.
//!
//! The rotation is about the vertical axis only by default ([`Rotation::Upright`]): shapes
//! stand upright with +Y up, as ModelNet40's do and as the viewer shows them, and the official
//! recipe, which has no rotation augmentation, learns them as it learns ModelNet40. A uniformly
//! random rotation in 3D ([`Rotation::Any`], `synthetic:rotate=any`) is the harder variant:
//! the network must then learn rotation invariance from a few hundred clouds.

use super::transform::pc_normalize;
use super::{PointCloud, Rng};

/// Class names, in label order.
pub const CLASS_NAMES: [&str; 10] = [
    "sphere",
    "cube",
    "cylinder",
    "cone",
    "torus",
    "capsule",
    "pyramid",
    "ellipsoid",
    "octahedron",
    "disk",
];

/// Part names per class, in local order; the global id is the running index.
pub const PART_NAMES: [&[&str]; 10] = [
    &["upper hemisphere", "lower hemisphere"],
    &["top and bottom faces", "x faces", "y faces"],
    &["body", "top cap", "bottom cap"],
    &["side", "base"],
    &["inner half", "outer half"],
    &["body", "hemispheres"],
    &["base", "sides"],
    &["ends", "middle"],
    &["upper half", "lower half"],
    &["faces", "rim"],
];

/// Probability that a shape loses the points beyond a random plane.
const CUT_PROBABILITY: f32 = 0.3;
/// Standard deviation of the Gaussian noise, relative to a unit-sized shape.
const NOISE_SIGMA: f32 = 0.01;

/// How each shape is oriented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    /// A uniformly random angle about the vertical (+Y) axis: upright, like ModelNet40.
    #[default]
    Upright,
    /// A uniformly random rotation in 3D.
    Any,
}

impl Rotation {
    pub fn as_str(self) -> &'static str {
        match self {
            Rotation::Upright => "upright",
            Rotation::Any => "any",
        }
    }
}

/// What to generate. The default is small enough for tests and the app's demo mode.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SyntheticConfig {
    pub seed: u64,
    pub train_per_class: usize,
    pub test_per_class: usize,
    /// Points per cloud.
    pub points: usize,
    pub rotation: Rotation,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            train_per_class: 40,
            test_per_class: 10,
            points: 1024,
            rotation: Rotation::Upright,
        }
    }
}

/// The generated clouds (with `class_label` and per-point global part `labels`).
#[derive(Clone, Debug)]
pub struct SyntheticSet {
    pub class_names: Vec<String>,
    pub category_parts: Vec<Vec<usize>>,
    pub train: Vec<PointCloud>,
    pub test: Vec<PointCloud>,
}

/// Global part ids of each class.
pub fn category_parts() -> Vec<Vec<usize>> {
    let mut next = 0;
    PART_NAMES
        .iter()
        .map(|parts| {
            let ids = (next..next + parts.len()).collect();
            next += parts.len();
            ids
        })
        .collect()
}

/// Total number of parts over all classes.
pub fn num_parts() -> usize {
    PART_NAMES.iter().map(|p| p.len()).sum()
}

/// Generates the whole set. Train and test draw from separate streams of the same seed.
pub fn generate(cfg: &SyntheticConfig) -> SyntheticSet {
    let parts = category_parts();
    let mut master = Rng::new(cfg.seed);
    let split = |per_class: usize, master: &mut Rng| {
        let mut stream = master.fork();
        let mut out = Vec::with_capacity(per_class * CLASS_NAMES.len());
        for class in 0..CLASS_NAMES.len() {
            for _ in 0..per_class {
                let mut rng = stream.fork();
                out.push(generate_shape(
                    class,
                    cfg.points,
                    cfg.rotation,
                    &parts,
                    &mut rng,
                ));
            }
        }
        out
    };
    let train = split(cfg.train_per_class, &mut master);
    let test = split(cfg.test_per_class, &mut master);
    SyntheticSet {
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        category_parts: parts,
        train,
        test,
    }
}

fn unit_vector(rng: &mut Rng) -> [f32; 3] {
    loop {
        let v = [rng.normal(), rng.normal(), rng.normal()];
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        if n > 1e-6 {
            return v.map(|x| x / n);
        }
    }
}

fn triangle(a: [f32; 3], b: [f32; 3], c: [f32; 3], rng: &mut Rng) -> [f32; 3] {
    let r1 = rng.uniform().sqrt();
    let r2 = rng.uniform();
    let (wa, wb, wc) = (1.0 - r1, r1 * (1.0 - r2), r1 * r2);
    std::array::from_fn(|i| wa * a[i] + wb * b[i] + wc * c[i])
}

fn disk(r: f32, z: f32, rng: &mut Rng) -> [f32; 3] {
    let rr = r * rng.uniform().sqrt();
    let t = rng.range(0.0, std::f32::consts::TAU);
    [rr * t.cos(), rr * t.sin(), z]
}

fn ring(r: f32, z: f32, t: f32) -> [f32; 3] {
    [r * t.cos(), r * t.sin(), z]
}

/// Picks a piece index with probability proportional to `areas`.
fn pick(areas: &[f32], rng: &mut Rng) -> usize {
    let total: f32 = areas.iter().sum();
    let mut u = rng.uniform() * total;
    for (i, a) in areas.iter().enumerate() {
        if u < *a {
            return i;
        }
        u -= a;
    }
    areas.len() - 1
}

/// One surface point of a canonical (unrotated, unit-sized) shape and its local part.
fn surface_point(class: usize, rng: &mut Rng) -> ([f32; 3], usize) {
    use std::f32::consts::{PI, TAU};
    match class {
        0 => {
            let d = unit_vector(rng);
            (d, usize::from(d[2] < 0.0))
        }
        1 => {
            let face = rng.below(6);
            let axis = face / 2;
            let sign = if face.is_multiple_of(2) { 1.0 } else { -1.0 };
            let mut p = [
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
            ];
            p[axis] = sign;
            (p, [1, 2, 0][axis])
        }
        2 => {
            let (r, h) = (0.6f32, 1.0f32);
            match pick(&[TAU * r * 2.0 * h, PI * r * r, PI * r * r], rng) {
                0 => (ring(r, rng.range(-h, h), rng.range(0.0, TAU)), 0),
                1 => (disk(r, h, rng), 1),
                _ => (disk(r, -h, rng), 2),
            }
        }
        3 => {
            let (r, height) = (0.8f32, 1.6f32);
            let slant = (r * r + height * height).sqrt();
            if pick(&[PI * r * slant, PI * r * r], rng) == 0 {
                let t = rng.uniform().sqrt();
                let a = rng.range(0.0, TAU);
                (ring(r * t, 0.8 - height * t, a), 0)
            } else {
                (disk(r, -0.8, rng), 1)
            }
        }
        4 => {
            let (big, small) = (0.8f32, 0.3f32);
            loop {
                let th = rng.range(0.0, TAU);
                let ph = rng.range(0.0, TAU);
                // accept in proportion to the local area element so the density is uniform
                if rng.uniform() * (big + small) <= big + small * th.cos() {
                    let rr = big + small * th.cos();
                    return (
                        [rr * ph.cos(), rr * ph.sin(), small * th.sin()],
                        usize::from(th.cos() >= 0.0),
                    );
                }
            }
        }
        5 => {
            let (r, h) = (0.45f32, 0.6f32);
            if pick(&[TAU * r * 2.0 * h, 4.0 * PI * r * r], rng) == 0 {
                (ring(r, rng.range(-h, h), rng.range(0.0, TAU)), 0)
            } else {
                let d = unit_vector(rng);
                let z = d[2] * r + if d[2] >= 0.0 { h } else { -h };
                ([d[0] * r, d[1] * r, z], 1)
            }
        }
        6 => {
            let (s, zb, apex) = (0.9f32, -0.6f32, [0.0, 0.0, 0.9f32]);
            let slant = ((apex[2] - zb).powi(2) + s * s).sqrt();
            let side = 0.5 * 2.0 * s * slant;
            match pick(&[4.0 * s * s, side, side, side, side], rng) {
                0 => ([rng.range(-s, s), rng.range(-s, s), zb], 0),
                k => {
                    let corners = [[s, s, zb], [-s, s, zb], [-s, -s, zb], [s, -s, zb]];
                    let a = corners[k - 1];
                    let b = corners[k % 4];
                    (triangle(a, b, apex, rng), 1)
                }
            }
        }
        7 => {
            let d = unit_vector(rng);
            let p = [d[0] * 1.4, d[1] * 0.6, d[2] * 0.6];
            (p, usize::from(p[0].abs() <= 0.7))
        }
        8 => {
            let sx = if rng.uniform() < 0.5 { 1.0 } else { -1.0 };
            let sy = if rng.uniform() < 0.5 { 1.0 } else { -1.0 };
            let sz = if rng.uniform() < 0.5 { 1.0 } else { -1.0 };
            let p = triangle([sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, sz], rng);
            (p, usize::from(sz < 0.0))
        }
        _ => {
            let (r, h) = (1.0f32, 0.08f32);
            match pick(&[PI * r * r, PI * r * r, TAU * r * 2.0 * h], rng) {
                0 => (disk(r, h, rng), 0),
                1 => (disk(r, -h, rng), 0),
                _ => (ring(r, rng.range(-h, h), rng.range(0.0, TAU)), 1),
            }
        }
    }
}

/// Rotation matrix of a uniformly random unit quaternion (Shoemake's method).
fn random_rotation(rng: &mut Rng) -> [[f32; 3]; 3] {
    use std::f32::consts::TAU;
    let (u1, u2, u3) = (rng.uniform(), rng.uniform(), rng.uniform());
    let (a, b) = ((1.0 - u1).sqrt(), u1.sqrt());
    let (w, x, y, z) = (
        a * (TAU * u2).sin(),
        a * (TAU * u2).cos(),
        b * (TAU * u3).sin(),
        b * (TAU * u3).cos(),
    );
    [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - z * w),
            2.0 * (x * z + y * w),
        ],
        [
            2.0 * (x * y + z * w),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - x * w),
        ],
        [
            2.0 * (x * z - y * w),
            2.0 * (y * z + x * w),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ]
}

/// The canonical shapes have their axis along +Z; an upright one is turned by a random angle
/// about that axis and then stood up with +Z becoming +Y (the viewer's and ModelNet40's up).
fn upright_rotation(rng: &mut Rng) -> [[f32; 3]; 3] {
    let t = rng.range(0.0, std::f32::consts::TAU);
    let (s, c) = t.sin_cos();
    // rows: x' = R_z x, then (x, y, z) -> (x, z, -y)
    [[c, -s, 0.0], [0.0, 0.0, 1.0], [-s, -c, 0.0]]
}

/// One cloud of class `class` (index into [`CLASS_NAMES`]) with `points` points, global
/// part labels from `parts` (as returned by [`category_parts`]) and `class_label` set.
pub fn generate_shape(
    class: usize,
    points: usize,
    rotation: Rotation,
    parts: &[Vec<usize>],
    rng: &mut Rng,
) -> PointCloud {
    let class = class.min(CLASS_NAMES.len() - 1);
    let cut = rng.uniform() < CUT_PROBABILITY;
    // a shape to be cut gets twice as many candidates, so removing up to 30% still leaves
    // enough distinct points and no duplicates are needed
    let candidates = points.max(1) * if cut { 2 } else { 1 };
    let scale: [f32; 3] = std::array::from_fn(|_| rng.range(0.85, 1.15));
    let rot = match rotation {
        Rotation::Upright => upright_rotation(rng),
        Rotation::Any => random_rotation(rng),
    };
    let mut pos = Vec::with_capacity(candidates);
    let mut labels = Vec::with_capacity(candidates);
    for _ in 0..candidates {
        let (p, part) = surface_point(class, rng);
        let s = [p[0] * scale[0], p[1] * scale[1], p[2] * scale[2]];
        let r: [f32; 3] = std::array::from_fn(|i| {
            rot[i][0] * s[0] + rot[i][1] * s[1] + rot[i][2] * s[2] + NOISE_SIGMA * rng.normal()
        });
        pos.push(r);
        let global = parts
            .get(class)
            .and_then(|ids| ids.get(part))
            .copied()
            .unwrap_or(part);
        labels.push(global as i64);
    }
    let mut keep: Vec<usize> = (0..candidates).collect();
    if cut {
        let d = unit_vector(rng);
        let proj: Vec<f32> = pos
            .iter()
            .map(|p| p[0] * d[0] + p[1] * d[1] + p[2] * d[2])
            .collect();
        let mut sorted = proj.clone();
        sorted.sort_by(f32::total_cmp);
        let q = rng.range(0.7, 0.9);
        let cut = sorted[((candidates as f32 * q) as usize).min(candidates - 1)];
        keep.retain(|&i| proj[i] <= cut);
    }
    let chosen = rng.choose_distinct(keep.len(), points.min(keep.len()));
    let mut positions: Vec<[f32; 3]> = chosen.iter().map(|&i| pos[keep[i]]).collect();
    let labels: Vec<i64> = chosen.iter().map(|&i| labels[keep[i]]).collect();
    pc_normalize(&mut positions);
    PointCloud {
        positions,
        labels: Some(labels),
        class_label: Some(class),
        ..PointCloud::default()
    }
}
