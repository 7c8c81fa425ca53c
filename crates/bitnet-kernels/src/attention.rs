//! The two inner loops of attention over an f32 or f16 KV cache (row `j` of a head starts at
//! `j * stride + offset`): scores `K·q` and the probability-weighted sum
//! of V rows. With a long context they dominate decoding after the weights, so each has an AVX-512
//! kernel (query and output kept in registers) next to its scalar twin. Between them, [`softmax`]
//! turns scores into probabilities with a polynomial `exp` that every level evaluates with the same
//! fused operations in the same order (libm's `expf`, one call per score, cost as much as the rest of
//! attention at a 1024-token context).

use crate::{simd_level, SimdLevel};
use half::f16;

/// An element type of the KV cache: `f32`, or `u16` holding f16 bit patterns.
pub trait KvElem: Copy + Sync + sealed::Sealed {
    /// Whether the values are f16 bits (the SIMD kernels convert them with `vcvtph2ps`).
    const F16: bool;
    fn to_f32(self) -> f32;
}

impl KvElem for f32 {
    const F16: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl KvElem for u16 {
    const F16: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::from_bits(self).to_f32()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u16 {}
}

/// Panics unless `rows` rows of `d` values at `j * stride + offset` lie inside `len` values.
fn check_rows(what: &str, rows: usize, stride: usize, offset: usize, d: usize, len: usize) {
    if let Some(last) = rows.checked_sub(1) {
        assert!(last * stride + offset + d <= len, "{what}: rows past the end");
    }
}

/// `out[j] = scale * dot(q, k[j * stride + offset .. + q.len()])` for `j < out.len()`, over an f32
/// or f16 ([`KvElem`]) cache.
///
/// # Panics
/// If a K row would reach past the end of `k`.
pub fn attn_scores<T: KvElem>(q: &[f32], k: &[T], stride: usize, offset: usize, scale: f32, out: &mut [f32]) {
    attn_scores_with(simd_level(), q, k, stride, offset, scale, out)
}

/// [`attn_scores`] at an explicit SIMD level (lowered to what the CPU supports).
pub fn attn_scores_with<T: KvElem>(
    level: SimdLevel,
    q: &[f32],
    k: &[T],
    stride: usize,
    offset: usize,
    scale: f32,
    out: &mut [f32],
) {
    let d = q.len();
    check_rows("attn_scores: K", out.len(), stride, offset, d, k.len());
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(16) && d <= 256 && matches!(level.clamp_to_cpu(), SimdLevel::Avx512 | SimdLevel::Avx512Vnni) {
        // SAFETY: AVX-512 F (+ F16C) is present (level clamped to the CPU); every row read is in bounds
        // (checked above).
        unsafe { crate::x86::attention::scores_avx512(q, k, stride, offset, scale, out) };
        return;
    }
    let _ = level;
    for (j, o) in out.iter_mut().enumerate() {
        let r = &k[j * stride + offset..j * stride + offset + d];
        *o = scale * dot_scalar(q, r);
    }
}

/// The order of `crate::float::dot_f32_scalar` (8 partial sums, then the tail), over any element.
fn dot_scalar<T: KvElem>(a: &[f32], b: &[T]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k].to_f32();
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y.to_f32();
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `out = sum_j p[j] * v[j * stride + offset .. + out.len()]` over `j < p.len()`, over an f32 or f16
/// ([`KvElem`]) cache.
///
/// # Panics
/// If a V row would reach past the end of `v`.
pub fn attn_weighted_sum<T: KvElem>(p: &[f32], v: &[T], stride: usize, offset: usize, out: &mut [f32]) {
    attn_weighted_sum_with(simd_level(), p, v, stride, offset, out)
}

/// [`attn_weighted_sum`] at an explicit SIMD level (lowered to what the CPU supports).
pub fn attn_weighted_sum_with<T: KvElem>(
    level: SimdLevel,
    p: &[f32],
    v: &[T],
    stride: usize,
    offset: usize,
    out: &mut [f32],
) {
    let d = out.len();
    check_rows("attn_weighted_sum: V", p.len(), stride, offset, d, v.len());
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(16) && matches!(level.clamp_to_cpu(), SimdLevel::Avx512 | SimdLevel::Avx512Vnni) {
        // SAFETY: AVX-512 F (+ F16C) is present (level clamped to the CPU); every row read is in bounds
        // (checked above).
        unsafe { crate::x86::attention::weighted_sum_avx512(p, v, stride, offset, out) };
        return;
    }
    let _ = level;
    out.fill(0.0);
    for (j, &pj) in p.iter().enumerate() {
        let r = &v[j * stride + offset..j * stride + offset + d];
        for (o, &x) in out.iter_mut().zip(r) {
            *o += pj * x.to_f32();
        }
    }
}

/// Softmax in place: `x[j] = exp(x[j] - max) / sum`. Identical results at every level: the same
/// [`exp_approx`] per value and the same summation order (16 running lane sums, then a fixed tree).
pub fn softmax(x: &mut [f32]) {
    softmax_with(simd_level(), x)
}

/// [`softmax`] at an explicit SIMD level (lowered to what the CPU supports).
pub fn softmax_with(level: SimdLevel, x: &mut [f32]) {
    match level.clamp_to_cpu() {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 | SimdLevel::Avx512Vnni => {
            // SAFETY: AVX-512 F is present (level clamped to the CPU).
            unsafe { crate::x86::attention::softmax_avx512(x) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => {
            // SAFETY: AVX2 + FMA are present (level clamped to the CPU).
            unsafe { softmax_fma(x) }
        }
        _ => softmax_scalar(x),
    }
}

/// The scalar twin compiled with FMA enabled, so that `mul_add` is one instruction instead of a libm
/// call (same operations, same results).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_fma(x: &mut [f32]) {
    softmax_scalar(x)
}

#[inline(always)]
fn softmax_scalar(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut lanes = [0f32; 16];
    for (j, v) in x.iter_mut().enumerate() {
        *v = exp_approx(*v - max);
        lanes[j % 16] += *v;
    }
    let inv = 1.0 / sum_lanes(lanes);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// The fixed reduction tree of 16 lane sums: halves added pairwise (lane i + lane i + 8, then + 4,
/// + 2, + 1).
#[inline(always)]
pub(crate) fn sum_lanes(mut l: [f32; 16]) -> f32 {
    for w in [8, 4, 2, 1] {
        for i in 0..w {
            l[i] += l[i + w];
        }
    }
    l[0]
}

/// Below this `exp` is taken as 0 (`exp(-87)` is near the smallest normal f32).
pub(crate) const EXP_MIN: f32 = -87.0;
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so that `x - n ln 2` is exact enough (Cody-Waite).
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// Minimax coefficients of `(exp(r) - 1 - r) / r^2` on `|r| <= ln2 / 2` (Cephes `expf`).
pub(crate) const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `exp(x)` for `x <= 88` within about 2 ulp (0 below -87): `2^n * p(r)` with `n` the nearest
/// integer to `x / ln 2`. Written with explicit fused multiply-adds so that the SIMD kernels, which
/// do the same operations lane by lane, agree with it bit for bit.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < EXP_MIN {
        return 0.0;
    }
    let n = (x * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supported_simd_levels;
    use proptest::prelude::*;

    fn vals(seed: u64, n: usize, mag: f32) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * mag
            })
            .collect()
    }

    #[test]
    fn exp_approx_is_close_to_exp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(exp_approx(0.0), 1.0);
        assert_eq!(exp_approx(-100.0), 0.0);
        assert_eq!(exp_approx(f32::NEG_INFINITY), 0.0);
        assert!(exp_approx(f32::NAN).is_nan());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Softmax is bit-identical at every level (odd lengths, huge spreads, -inf entries) and sums
        /// to one.
        #[test]
        fn softmax_levels_agree(n in 1usize..300, seed in 1u64..u64::MAX, mag in prop_oneof![Just(1.0f32), Just(30.0), Just(1e4)], ninf in 0usize..3) {
            let mut x = vals(seed, n, mag);
            for j in 0..ninf.min(n - 1) {
                x[(j * 7) % n] = f32::NEG_INFINITY;
            }
            let mut want = x.clone();
            softmax_with(SimdLevel::Scalar, &mut want);
            let total: f32 = want.iter().sum();
            prop_assert!((total - 1.0).abs() < 1e-4, "sum {total}");
            let max_at = (0..n).max_by(|&a, &b| x[a].total_cmp(&x[b])).unwrap_or(0);
            prop_assert!(want[max_at] > 0.0);
            for level in supported_simd_levels() {
                let mut got = x.clone();
                softmax_with(level, &mut got);
                prop_assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{:?}", level);
            }
        }

        /// Every level agrees with the scalar twin, for head sizes on and off the SIMD path (multiples
        /// of 16 up to 256, and odd ones), any number of positions, and large magnitudes.
        #[test]
        fn kernels_match_scalar(d16 in 1usize..17, odd in 0usize..2, n in 0usize..70, heads in 1usize..4,
                                seed in 1u64..u64::MAX, big in 0usize..2) {
            let d = if odd == 1 { d16 * 16 - 3 } else { d16 * 16 };
            let mag = [1.0f32, 1e15][big];
            let stride = d * heads + 5;
            let offset = (heads - 1) * d;
            let kv = vals(seed, n * stride + offset + d, mag);
            let q = vals(seed ^ 0x55, d, 1.0);
            let p = vals(seed ^ 0xaa, n, 1.0);
            let mut s0 = vec![0f32; n];
            attn_scores_with(SimdLevel::Scalar, &q, &kv, stride, offset, 0.125, &mut s0);
            let mut o0 = vec![0f32; d];
            attn_weighted_sum_with(SimdLevel::Scalar, &p, &kv, stride, offset, &mut o0);
            for level in supported_simd_levels() {
                let mut s = vec![f32::NAN; n];
                attn_scores_with(level, &q, &kv, stride, offset, 0.125, &mut s);
                for j in 0..n {
                    let r = &kv[j * stride + offset..j * stride + offset + d];
                    let bound = 0.125 * q.iter().zip(r).map(|(a, b)| (a * b).abs()).sum::<f32>() * 1e-5 + 1e-30;
                    prop_assert!((s[j] - s0[j]).abs() <= bound, "{level:?} score {j}: {} vs {}", s[j], s0[j]);
                }
                let mut o = vec![f32::NAN; d];
                attn_weighted_sum_with(level, &p, &kv, stride, offset, &mut o);
                for i in 0..d {
                    let bound = (0..n).map(|j| (p[j] * kv[j * stride + offset + i]).abs()).sum::<f32>() * 1e-5 + 1e-30;
                    prop_assert!((o[i] - o0[i]).abs() <= bound, "{level:?} out {i}: {} vs {}", o[i], o0[i]);
                }
            }
            // The f16 kernels against the f32 scalar twin on the f16-rounded cache (kept in f16 range).
            let kv16: Vec<u16> = kv.iter().map(|&x| f16::from_f32(x.clamp(-6e4, 6e4)).to_bits()).collect();
            let kvr: Vec<f32> = kv16.iter().map(|&b| f16::from_bits(b).to_f32()).collect();
            let mut s1 = vec![0f32; n];
            attn_scores_with(SimdLevel::Scalar, &q, &kvr, stride, offset, 0.125, &mut s1);
            let mut o1 = vec![0f32; d];
            attn_weighted_sum_with(SimdLevel::Scalar, &p, &kvr, stride, offset, &mut o1);
            for level in supported_simd_levels() {
                let mut s = vec![f32::NAN; n];
                attn_scores_with(level, &q, &kv16, stride, offset, 0.125, &mut s);
                for j in 0..n {
                    let r = &kvr[j * stride + offset..j * stride + offset + d];
                    let bound = 0.125 * q.iter().zip(r).map(|(a, b)| (a * b).abs()).sum::<f32>() * 1e-5 + 1e-30;
                    prop_assert!((s[j] - s1[j]).abs() <= bound, "f16 {level:?} score {j}: {} vs {}", s[j], s1[j]);
                }
                let mut o = vec![f32::NAN; d];
                attn_weighted_sum_with(level, &p, &kv16, stride, offset, &mut o);
                for i in 0..d {
                    let bound = (0..n).map(|j| (p[j] * kvr[j * stride + offset + i]).abs()).sum::<f32>() * 1e-5 + 1e-30;
                    prop_assert!((o[i] - o1[i]).abs() <= bound, "f16 {level:?} out {i}: {} vs {}", o[i], o1[i]);
                }
            }
        }
    }
}
