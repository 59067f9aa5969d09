//! Colormaps for scalar fields and a categorical palette for labels (ux.md §1.5).
//!
//! Colours are computed on the CPU (per point, when the colouring changes) and uploaded as
//! 8-bit sRGB, so there is one implementation to keep right, tested below at 0, 0.5 and 1.

use serde::{Deserialize, Serialize};

/// sRGB colour with components in 0..=1.
pub type Rgb = [f32; 3];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Colormap {
    /// Perceptually uniform sequential; the default for non-negative magnitudes.
    #[default]
    Viridis,
    /// High-contrast rainbow-like map (Google's polynomial approximation).
    Turbo,
    /// Diverging (Moreland), for signed quantities centred at 0.
    Coolwarm,
    Grayscale,
}

impl Colormap {
    pub const ALL: [Colormap; 4] = [
        Colormap::Viridis,
        Colormap::Turbo,
        Colormap::Coolwarm,
        Colormap::Grayscale,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colormap::Viridis => "viridis",
            Colormap::Turbo => "turbo",
            Colormap::Coolwarm => "coolwarm",
            Colormap::Grayscale => "grayscale",
        }
    }

    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|&c| c == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    /// Colour at `t` (clamped to 0..=1; NaN maps to 0).
    pub fn sample(self, t: f32) -> Rgb {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        match self {
            Colormap::Viridis => lerp_stops(&VIRIDIS, t),
            Colormap::Turbo => turbo(t),
            Colormap::Coolwarm => lerp_stops(&COOLWARM, t),
            Colormap::Grayscale => [t, t, t],
        }
    }

    pub fn sample_u8(self, t: f32) -> [u8; 4] {
        to_u8(self.sample(t))
    }
}

/// Maps a value to 0..=1 within `range` (degenerate ranges map to 0.5).
pub fn normalize(value: f32, range: (f32, f32)) -> f32 {
    let (lo, hi) = range;
    if (hi - lo).abs() <= f32::EPSILON * lo.abs().max(1.0) {
        0.5
    } else {
        (value - lo) / (hi - lo)
    }
}

pub fn to_u8(c: Rgb) -> [u8; 4] {
    [
        (c[0].clamp(0.0, 1.0) * 255.0).round() as u8,
        (c[1].clamp(0.0, 1.0) * 255.0).round() as u8,
        (c[2].clamp(0.0, 1.0) * 255.0).round() as u8,
        255,
    ]
}

fn hex(h: u32) -> Rgb {
    [
        ((h >> 16) & 0xff) as f32 / 255.0,
        ((h >> 8) & 0xff) as f32 / 255.0,
        (h & 0xff) as f32 / 255.0,
    ]
}

/// viridis at 9 equally spaced stops (matplotlib / viridisLite `viridis(9)`).
const VIRIDIS: [u32; 9] = [
    0x440154, 0x472D7B, 0x3B528B, 0x2C728E, 0x21908C, 0x27AD81, 0x5DC863, 0xAADC32, 0xFDE725,
];

/// Moreland's "smooth cool-warm" at 5 stops (0, .25, .5, .75, 1).
const COOLWARM: [u32; 5] = [0x3B4CC0, 0x8DB0FE, 0xDDDDDD, 0xF49A7B, 0xB40426];

fn lerp_stops(stops: &[u32], t: f32) -> Rgb {
    let x = t * (stops.len() - 1) as f32;
    let i = (x.floor() as usize).min(stops.len() - 2);
    let f = x - i as f32;
    let (a, b) = (hex(stops[i]), hex(stops[i + 1]));
    [
        a[0] + (b[0] - a[0]) * f,
        a[1] + (b[1] - a[1]) * f,
        a[2] + (b[2] - a[2]) * f,
    ]
}

/// Google's polynomial approximation of Turbo (Ruofei Du, 2019), also used by rerun.
fn turbo(x: f32) -> Rgb {
    const R4: [f32; 4] = [0.135_721_38, 4.615_392_6, -42.660_324, 132.131_08];
    const G4: [f32; 4] = [0.091_402_61, 2.194_188_4, 4.842_966_6, -14.185_033];
    const B4: [f32; 4] = [0.106_673_3, 12.641_946, -60.582_05, 110.362_77];
    const R2: [f32; 2] = [-152.942_4, 59.286_38];
    const G2: [f32; 2] = [4.277_298_6, 2.829_566];
    const B2: [f32; 2] = [-89.903_11, 27.348_25];
    let v4 = [1.0, x, x * x, x * x * x];
    let v2 = [v4[2] * v4[2], v4[3] * v4[2]];
    let d4 = |k: [f32; 4]| k[0] * v4[0] + k[1] * v4[1] + k[2] * v4[2] + k[3] * v4[3];
    let d2 = |k: [f32; 2]| k[0] * v2[0] + k[1] * v2[1];
    [
        (d4(R4) + d2(R2)).clamp(0.0, 1.0),
        (d4(G4) + d2(G2)).clamp(0.0, 1.0),
        (d4(B4) + d2(B2)).clamp(0.0, 1.0),
    ]
}

/// Tableau-20, saturated colours first, then their light partners: 20 distinct colours.
const CATEGORICAL: [u32; 20] = [
    0x1F77B4, 0xFF7F0E, 0x2CA02C, 0xD62728, 0x9467BD, 0x8C564B, 0xE377C2, 0x7F7F7F, 0xBCBD22,
    0x17BECF, 0xAEC7E8, 0xFFBB78, 0x98DF8A, 0xFF9896, 0xC5B0D5, 0xC49C94, 0xF7B6D2, 0xC7C7C7,
    0xDBDB8D, 0x9EDAE5,
];

/// Number of hand-picked categorical colours; ids beyond it get golden-ratio hues.
pub const CATEGORICAL_LEN: usize = CATEGORICAL.len();

/// Colour of class / part / patch `id`; distinct for the first 20 ids, deterministic after.
pub fn categorical(id: usize) -> Rgb {
    if id < CATEGORICAL.len() {
        return hex(CATEGORICAL[id]);
    }
    let h = (id as f32 * 0.618_034).fract();
    let s = if id.is_multiple_of(2) { 0.65 } else { 0.45 };
    let v = if id.is_multiple_of(3) { 0.95 } else { 0.8 };
    hsv(h, s, v)
}

fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    match (i as i32).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Rgb, b: Rgb) -> bool {
        (0..3).all(|k| (a[k] - b[k]).abs() < 0.01)
    }

    #[test]
    fn known_values_at_0_half_and_1() {
        use Colormap::*;
        assert!(close(Viridis.sample(0.0), [0.267, 0.004, 0.329]));
        assert!(close(Viridis.sample(0.5), [0.129, 0.565, 0.549]));
        assert!(close(Viridis.sample(1.0), [0.992, 0.906, 0.145]));
        assert!(close(Turbo.sample(0.0), [0.136, 0.091, 0.107]));
        assert!(close(Turbo.sample(0.5), [0.589, 0.982, 0.313]));
        assert!(
            close(Turbo.sample(1.0), [0.566, 0.050, 0.0]),
            "{:?}",
            Turbo.sample(1.0)
        );
        assert!(close(Coolwarm.sample(0.0), [0.231, 0.298, 0.753]));
        assert!(close(Coolwarm.sample(0.5), [0.867, 0.867, 0.867]));
        assert!(close(Coolwarm.sample(1.0), [0.706, 0.016, 0.149]));
        assert!(close(Grayscale.sample(0.0), [0.0; 3]));
        assert!(close(Grayscale.sample(0.5), [0.5; 3]));
        assert!(close(Grayscale.sample(1.0), [1.0; 3]));
    }

    #[test]
    fn out_of_range_and_nan_are_clamped() {
        for cm in Colormap::ALL {
            assert_eq!(cm.sample(-3.0), cm.sample(0.0));
            assert_eq!(cm.sample(7.0), cm.sample(1.0));
            assert_eq!(cm.sample(f32::NAN), cm.sample(0.0));
        }
        assert_eq!(normalize(5.0, (5.0, 5.0)), 0.5);
        assert_eq!(normalize(2.0, (0.0, 4.0)), 0.5);
    }

    #[test]
    fn categorical_palette_has_20_distinct_colours() {
        let cols: Vec<Rgb> = (0..CATEGORICAL_LEN).map(categorical).collect();
        for i in 0..cols.len() {
            for j in 0..i {
                let d: f32 = (0..3).map(|k| (cols[i][k] - cols[j][k]).abs()).sum();
                assert!(d > 0.1, "{i} and {j} are too close");
            }
        }
        // beyond the table: deterministic and valid
        assert_eq!(categorical(57), categorical(57));
        assert!(categorical(57).iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
