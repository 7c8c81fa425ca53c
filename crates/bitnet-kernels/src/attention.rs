//! The two inner loops of attention over an f32 or f16 KV cache (row `j` of a head starts at
//! `j * stride + offset`): scores `K·q` and the probability-weighted sum
//! of V rows. With a long context they dominate decoding after the weights, so each has an AVX-512
//! and an AVX2 kernel (the query heads of a group share each K/V load) next to its scalar twin. Between them, [`softmax`]
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

/// Scores of one or more query heads against the same K rows: `q` holds `hg = q.len() / d` heads of
/// `d` values, `out` holds `n = out.len() / hg` scores per head, and
/// `out[h * n + j] = scale * dot(q_h, k[j * stride + offset .. + d])`, over an f32 or f16
/// ([`KvElem`]) cache. The query heads of a GQA group share their KV head, so passing them together
/// lets the SIMD kernel load (and convert) each K row once for all of them.
///
/// # Panics
/// If `d` is 0 or does not divide `q.len()`, `hg` does not divide `out.len()`, or a K row would reach
/// past the end of `k`.
pub fn attn_scores<T: KvElem>(q: &[f32], d: usize, k: &[T], stride: usize, offset: usize, scale: f32, out: &mut [f32]) {
    attn_scores_with(simd_level(), q, d, k, stride, offset, scale, out)
}

/// [`attn_scores`] at an explicit SIMD level (lowered to what the CPU supports).
#[allow(clippy::too_many_arguments)] // the cache's geometry (stride, offset) and the scale are all needed
pub fn attn_scores_with<T: KvElem>(
    level: SimdLevel,
    q: &[f32],
    d: usize,
    k: &[T],
    stride: usize,
    offset: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hg = heads("attn_scores", q.len(), d);
    assert!(
        out.len().is_multiple_of(hg),
        "attn_scores: {} scores for {hg} heads",
        out.len()
    );
    let n = out.len() / hg;
    check_rows("attn_scores: K", n, stride, offset, d, k.len());
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(16) && d <= 256 && level.clamp_to_cpu().has_avx512() {
        // SAFETY: AVX-512 F (+ F16C) is present (level clamped to the CPU); every row read is in bounds
        // (checked above), q holds hg heads of d values and out hg * n scores.
        unsafe { crate::x86::attention::scores_avx512(q, d, k, stride, offset, scale, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level.clamp_to_cpu().has_avx2() {
        // SAFETY: AVX2 + FMA + F16C are present (level clamped to the CPU); d > 0 and every row read
        // is in bounds (checked above).
        unsafe { crate::x86::attention_avx2::scores_avx2(q, d, k, stride, offset, scale, out) };
        return;
    }
    let _ = level;
    for (qh, oh) in q.chunks_exact(d).zip(out.chunks_exact_mut(n.max(1))) {
        for (j, o) in oh.iter_mut().enumerate() {
            let r = &k[j * stride + offset..j * stride + offset + d];
            *o = scale * dot_scalar(qh, r);
        }
    }
}

/// The number of heads of `d` values in `len` values.
fn heads(what: &str, len: usize, d: usize) -> usize {
    assert!(
        d > 0 && len.is_multiple_of(d),
        "{what}: {len} values are not whole heads of {d}"
    );
    len / d
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

/// Probability-weighted sums of V rows for one or more heads that read the same rows: `out` holds
/// `hg = out.len() / d` heads of `d` values, `p` holds `n = p.len() / hg` weights per head, and
/// `out_h = sum_j p[h * n + j] * v[j * stride + offset .. + d]`, over an f32 or f16 ([`KvElem`])
/// cache. Every output is one running sum over the rows in order, at every level, whether the heads
/// come together or one at a time.
///
/// # Panics
/// If `d` is 0 or does not divide `out.len()`, `hg` does not divide `p.len()`, or a V row would reach
/// past the end of `v`.
pub fn attn_weighted_sum<T: KvElem>(p: &[f32], v: &[T], stride: usize, offset: usize, d: usize, out: &mut [f32]) {
    attn_weighted_sum_with(simd_level(), p, v, stride, offset, d, out)
}

/// [`attn_weighted_sum`] at an explicit SIMD level (lowered to what the CPU supports).
pub fn attn_weighted_sum_with<T: KvElem>(
    level: SimdLevel,
    p: &[f32],
    v: &[T],
    stride: usize,
    offset: usize,
    d: usize,
    out: &mut [f32],
) {
    let hg = heads("attn_weighted_sum", out.len(), d);
    assert!(
        p.len().is_multiple_of(hg),
        "attn_weighted_sum: {} weights for {hg} heads",
        p.len()
    );
    let n = p.len() / hg;
    check_rows("attn_weighted_sum: V", n, stride, offset, d, v.len());
    out.fill(0.0);
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(16) && level.clamp_to_cpu().has_avx512() {
        // SAFETY: AVX-512 F (+ F16C) is present (level clamped to the CPU); every row read is in bounds
        // (checked above), out holds hg heads of d values and p hg * n weights.
        unsafe { crate::x86::attention::weighted_sum_avx512(p, v, stride, offset, d, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level.clamp_to_cpu().has_avx2() {
        // SAFETY: AVX2 + FMA + F16C are present (level clamped to the CPU); d > 0 and every row read
        // is in bounds (checked above).
        unsafe { crate::x86::attention_avx2::weighted_sum_avx2(p, v, stride, offset, d, out) };
        return;
    }
    let _ = level;
    for (ph, oh) in p.chunks_exact(n.max(1)).zip(out.chunks_exact_mut(d)) {
        for (j, &pj) in ph.iter().enumerate() {
            let r = &v[j * stride + offset..j * stride + offset + d];
            for (o, &x) in oh.iter_mut().zip(r) {
                *o += pj * x.to_f32();
            }
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
        l if l.has_avx512() => {
            // SAFETY: AVX-512 F is present (level clamped to the CPU).
            unsafe { crate::x86::attention::softmax_avx512(x) }
        }
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx2() => {
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
        /// of 16 up to 256, and odd ones), 1 to 6 query heads at once (every head-block shape and its
        /// remainders), any number of positions (row blocks and their tails), and large magnitudes.
        /// Heads passed together give exactly what each head gives on its own.
        #[test]
        fn kernels_match_scalar(d16 in 1usize..17, odd in 0usize..2, n in 0usize..70, heads in 1usize..4,
                                hg in 1usize..7, seed in 1u64..u64::MAX, big in 0usize..2) {
            let d = if odd == 1 { d16 * 16 - 3 } else { d16 * 16 };
            let mag = [1.0f32, 1e15][big];
            let stride = d * heads + 5;
            let offset = (heads - 1) * d;
            let kv = vals(seed, n * stride + offset + d, mag);
            let q = vals(seed ^ 0x55, hg * d, 1.0);
            let p = vals(seed ^ 0xaa, hg * n, 1.0);
            let check = |kv: &[f32], got_s: &[f32], got_o: &[f32], what: &str| -> Result<(), TestCaseError> {
                let mut s0 = vec![0f32; hg * n];
                attn_scores_with(SimdLevel::Scalar, &q, d, kv, stride, offset, 0.125, &mut s0);
                let mut o0 = vec![0f32; hg * d];
                attn_weighted_sum_with(SimdLevel::Scalar, &p, kv, stride, offset, d, &mut o0);
                for h in 0..hg {
                    for j in 0..n {
                        let r = &kv[j * stride + offset..j * stride + offset + d];
                        let bound = 0.125 * q[h * d..(h + 1) * d].iter().zip(r).map(|(a, b)| (a * b).abs()).sum::<f32>() * 1e-5 + 1e-30;
                        let (g, w) = (got_s[h * n + j], s0[h * n + j]);
                        prop_assert!((g - w).abs() <= bound, "{what} head {h} score {j}: {g} vs {w}");
                    }
                    for i in 0..d {
                        let bound = (0..n).map(|j| (p[h * n + j] * kv[j * stride + offset + i]).abs()).sum::<f32>() * 1e-5 + 1e-30;
                        let (g, w) = (got_o[h * d + i], o0[h * d + i]);
                        prop_assert!((g - w).abs() <= bound, "{what} head {h} out {i}: {g} vs {w}");
                    }
                }
                Ok(())
            };
            // The f16 cache (kept in f16 range) against the f32 scalar twin on its rounded values.
            let kv16: Vec<u16> = kv.iter().map(|&x| f16::from_f32(x.clamp(-6e4, 6e4)).to_bits()).collect();
            let kvr: Vec<f32> = kv16.iter().map(|&b| f16::from_bits(b).to_f32()).collect();
            for level in supported_simd_levels() {
                let (mut s, mut o) = (vec![f32::NAN; hg * n], vec![f32::NAN; hg * d]);
                attn_scores_with(level, &q, d, &kv, stride, offset, 0.125, &mut s);
                attn_weighted_sum_with(level, &p, &kv, stride, offset, d, &mut o);
                check(&kv, &s, &o, &format!("{level:?}"))?;
                let (mut s16, mut o16) = (vec![f32::NAN; hg * n], vec![f32::NAN; hg * d]);
                attn_scores_with(level, &q, d, &kv16, stride, offset, 0.125, &mut s16);
                attn_weighted_sum_with(level, &p, &kv16, stride, offset, d, &mut o16);
                check(&kvr, &s16, &o16, &format!("f16 {level:?}"))?;
                // One head at a time, and one row at a time: the same scores and sums bit for bit.
                for h in 0..hg {
                    let mut s1 = vec![f32::NAN; n];
                    attn_scores_with(level, &q[h * d..(h + 1) * d], d, &kv, stride, offset, 0.125, &mut s1);
                    prop_assert_eq!(s1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                    s[h * n..(h + 1) * n].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                    "{:?} alone, head {} scores", level, h);
                    for j in 0..n {
                        let mut one = [f32::NAN];
                        attn_scores_with(level, &q[h * d..(h + 1) * d], d, &kv[j * stride..], stride, offset, 0.125, &mut one);
                        prop_assert_eq!(one[0].to_bits(), s[h * n + j].to_bits(), "{:?} row {} alone, head {}", level, j, h);
                    }
                    let mut o1 = vec![f32::NAN; d];
                    attn_weighted_sum_with(level, &p[h * n..(h + 1) * n], &kv, stride, offset, d, &mut o1);
                    prop_assert_eq!(o1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                    o[h * d..(h + 1) * d].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                    "{:?} alone, head {}", level, h);
                }
            }
        }
    }
}
