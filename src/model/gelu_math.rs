//! Exact GELU and its gradient as straight-line f32 arithmetic, so the compiler turns each
//! slice loop into AVX-512 or AVX2 code (chosen at run time) instead of a scalar `erff` call
//! per element.
//!
//! GELU is `x·Φ(x)`, its gradient `Φ(x) + x·φ(x)`. `Φ` comes from the lower tail
//! `Φ(−|x|) = ½·erfc(|x|/√2)`, with `erfc(z) = t·exp(−z² + P(t))`, `t = 1/(1 + z/2)` and `P`
//! the ninth-degree Chebyshev fit of Numerical Recipes (fractional error below 1.2e-7 for every
//! `z ≥ 0`); for `x ≥ 0`, `Φ(x) = 1 − Φ(−x)`. Computing the tail directly, rather than
//! `1 + erf(x/√2)` as burn-flex and PyTorch do, keeps its relative accuracy where `x` is very
//! negative. `exp` is a Cody–Waite reduction and a seventh-degree Taylor polynomial, with the
//! power of two made from the bits of the rounding constant, so there is no call and no
//! float-to-int conversion in the loop. Both polynomials and the reduction are evaluated with
//! fused multiply-adds (`mul_add`): a third less time per element than a multiply then an add
//! (BENCHMARKS.md), and every path (AVX-512, AVX2 with FMA, the portable loop, native FMA on
//! aarch64) rounds alike; only an x86 CPU without FMA takes the portable loop through libm's
//! `fmaf`, correct but slow. The values differ from burn-flex's `libm::erff` GELU by a few units
//! in the last place (the tests hold them to 3e-7 against an f64 reference).

use std::mem::MaybeUninit;

/// `1.5·2²³`: adding it rounds a float of magnitude below 2²² to an integer, left in the low
/// mantissa bits.
const ROUND: f32 = 12_582_912.0;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this `exp` is 0 in f32; above the upper bound (a little under f32's, so that `2ᵏ`
/// stays finite) it answers ∞. GELU only asks for `exp` of arguments at or below zero.
const EXP_MIN: f32 = -87.336_55;
const EXP_MAX: f32 = 88.0;
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `eʸ` to about one unit in the last place, for `y ≤ 88`.
#[inline(always)]
pub(super) fn exp(y: f32) -> f32 {
    let c = y.clamp(EXP_MIN, EXP_MAX);
    let shifted = c * std::f32::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, c));
    // Horner with fused multiply-adds: half the instructions of a multiply then an add, and
    // a shorter dependency chain, which is what bounds this loop
    let p = [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ]
    .iter()
    .fold(1.0 / 5040.0, |p: f32, &c| p.mul_add(r, c));
    // the integer k sits in the low bits of `shifted`; 2^k is (k + 127) << 23
    let two_k = f32::from_bits(
        shifted
            .to_bits()
            .wrapping_sub(ROUND.to_bits())
            .wrapping_add(127)
            .wrapping_shl(23),
    );
    let e = p * two_k;
    if y < EXP_MIN {
        0.0
    } else if y > EXP_MAX {
        f32::INFINITY
    } else {
        e
    }
}

/// `Φ(x)`, the standard normal CDF.
#[inline(always)]
fn normal_cdf(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = [
        -0.822_152_23,
        1.488_515_9,
        -1.135_204,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_7,
        -1.265_512_2,
    ]
    .iter()
    .fold(0.170_872_77, |p: f32, &c| p.mul_add(t, c));
    let tail = 0.5 * t * exp(p - z * z);
    if x < 0.0 { tail } else { 1.0 - tail }
}

#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    x * normal_cdf(x)
}

#[inline(always)]
fn gelu_grad_one(x: f32, g: f32) -> f32 {
    g * (normal_cdf(x) + x * INV_SQRT_2PI * exp(-0.5 * x * x))
}

#[inline(always)]
fn gelu_loop(xs: &[f32], out: &mut [MaybeUninit<f32>]) {
    for (o, &x) in out.iter_mut().zip(xs) {
        o.write(gelu_one(x));
    }
}

#[inline(always)]
fn gelu_grad_loop(xs: &[f32], gs: &[f32], out: &mut [MaybeUninit<f32>]) {
    for ((o, &x), &g) in out.iter_mut().zip(xs).zip(gs) {
        o.write(gelu_grad_one(x, g));
    }
}

/// The same loops compiled for wider vectors; called only when the CPU has them.
#[cfg(target_arch = "x86_64")]
mod wide {
    use super::*;

    #[target_feature(enable = "avx512f")]
    pub fn gelu_avx512(xs: &[f32], out: &mut [MaybeUninit<f32>]) {
        gelu_loop(xs, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn gelu_avx2(xs: &[f32], out: &mut [MaybeUninit<f32>]) {
        gelu_loop(xs, out)
    }

    #[target_feature(enable = "avx512f")]
    pub fn grad_avx512(xs: &[f32], gs: &[f32], out: &mut [MaybeUninit<f32>]) {
        gelu_grad_loop(xs, gs, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn grad_avx2(xs: &[f32], gs: &[f32], out: &mut [MaybeUninit<f32>]) {
        gelu_grad_loop(xs, gs, out)
    }
}

/// Writes `gelu(x)` for every `x` of `xs` into `out` (the shorter length wins).
pub fn gelu_into(xs: &[f32], out: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { wide::gelu_avx512(xs, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { wide::gelu_avx2(xs, out) };
        }
    }
    gelu_loop(xs, out)
}

/// Writes `g · gelu'(x)` for every pair into `out` (the shortest length wins).
pub fn gelu_grad_into(xs: &[f32], gs: &[f32], out: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { wide::grad_avx512(xs, gs, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { wide::grad_avx2(xs, gs, out) };
        }
    }
    gelu_grad_loop(xs, gs, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gelu_f64(x: f64) -> f64 {
        0.5 * x * libm::erfc(-x / std::f64::consts::SQRT_2)
    }

    fn gelu_grad_f64(x: f64) -> f64 {
        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        0.5 * libm::erfc(-x / std::f64::consts::SQRT_2) + x * pdf
    }

    fn run(f: fn(&[f32], &mut [MaybeUninit<f32>]), xs: &[f32]) -> Vec<f32> {
        let mut out = vec![MaybeUninit::new(f32::NAN); xs.len()];
        f(xs, &mut out);
        // SAFETY: initialised above, then overwritten.
        out.iter().map(|v| unsafe { v.assume_init() }).collect()
    }

    /// A sweep of [-20, 20] plus the values where the pieces meet.
    fn sweep() -> Vec<f32> {
        let mut xs: Vec<f32> = (-400_000..=400_000).map(|i| i as f32 * 5e-5).collect();
        xs.extend([
            0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 5.0, -5.0, 13.0, -13.0, 30.0, -30.0,
        ]);
        xs
    }

    #[test]
    fn gelu_and_its_gradient_are_within_a_few_ulps_of_the_f64_formula_on_every_path() {
        let xs = sweep();
        let gs: Vec<f32> = xs.iter().map(|_| 1.0).collect();
        let mut paths: Vec<(&str, Vec<f32>, Vec<f32>)> = vec![(
            "portable",
            run(gelu_loop, &xs),
            run(|x, o| gelu_grad_loop(x, &vec![1.0; x.len()], o), &xs),
        )];
        paths.push(("dispatched", run(gelu_into, &xs), {
            let mut out = vec![MaybeUninit::new(0.0); xs.len()];
            gelu_grad_into(&xs, &gs, &mut out);
            // SAFETY: written above.
            out.iter().map(|v| unsafe { v.assume_init() }).collect()
        }));
        for (path, y, dy) in paths {
            let (mut worst, mut worst_d) = ((0.0f64, 0.0f32), (0.0f64, 0.0f32));
            for (i, &x) in xs.iter().enumerate() {
                let (want, want_d) = (gelu_f64(x as f64), gelu_grad_f64(x as f64));
                // The exponent `p − z²` is rounded to f32, so in the far tail the relative
                // error grows with x² (1.6e-5 at x = −12, where GELU is 2e-32); near GELU's
                // zero and the gradient's, an absolute floor.
                let bound = (1.5e-7 * x as f64 * x as f64).max(1e-6);
                let err = (y[i] as f64 - want).abs() / want.abs().max(1e-30);
                let err_d = (dy[i] as f64 - want_d).abs() / want_d.abs().max(0.5);
                if err > worst.0 {
                    worst = (err, x);
                }
                if err_d > worst_d.0 {
                    worst_d = (err_d, x);
                }
                assert!(
                    err <= bound || (y[i] as f64 - want).abs() <= 1e-37,
                    "{path}: gelu({x}) = {} against {want}",
                    y[i]
                );
                assert!(
                    err_d <= bound,
                    "{path}: gelu'({x}) = {} against {want_d}",
                    dy[i]
                );
            }
            eprintln!("{path}: worst relative error {worst:?}, gradient {worst_d:?}");
        }
    }

    #[test]
    fn non_finite_inputs_give_what_burns_gelu_gives() {
        let xs = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        let y = run(gelu_into, &xs);
        assert_eq!(y[0], f32::INFINITY);
        assert!(
            y[1].is_nan() && y[2].is_nan(),
            "−∞·0 and NaN stay NaN: {y:?}"
        );
        let mut d = vec![MaybeUninit::new(0.0); 3];
        gelu_grad_into(&xs, &[1.0; 3], &mut d);
        // SAFETY: written above.
        let d: Vec<f32> = d.iter().map(|v| unsafe { v.assume_init() }).collect();
        // burn: Φ(±∞) + ±∞·φ(±∞) = Φ + ∞·0, NaN
        assert!(d.iter().all(|v| v.is_nan()), "{d:?}");
    }

    #[test]
    fn exp_is_within_two_ulps_over_its_range() {
        for i in -87_000..=87_900 {
            let y = i as f32 * 1e-3 + 3.7e-4;
            let want = (y as f64).exp();
            let got = exp(y) as f64;
            assert!(
                ((got - want) / want).abs() <= 2.5e-7,
                "exp({y}) = {got} against {want}"
            );
        }
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }
}
