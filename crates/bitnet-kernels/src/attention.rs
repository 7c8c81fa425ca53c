//! The two inner loops of attention over an f32 KV cache whose rows hold all KV heads side by side
//! (row `j` of head `h` starts at `j * stride + h * d`): scores `K·q` and the probability-weighted sum
//! of V rows. With a long context they dominate decoding after the weights, so each has an AVX-512
//! kernel (query and output kept in registers) next to its scalar twin.

use crate::{simd_level, SimdLevel};

/// `out[j] = scale * dot(q, k[j * stride + offset .. + q.len()])` for `j < out.len()`.
///
/// # Panics
/// If a K row would reach past the end of `k`.
pub fn attn_scores(q: &[f32], k: &[f32], stride: usize, offset: usize, scale: f32, out: &mut [f32]) {
    attn_scores_with(simd_level(), q, k, stride, offset, scale, out)
}

/// [`attn_scores`] at an explicit SIMD level (lowered to what the CPU supports).
pub fn attn_scores_with(
    level: SimdLevel,
    q: &[f32],
    k: &[f32],
    stride: usize,
    offset: usize,
    scale: f32,
    out: &mut [f32],
) {
    let d = q.len();
    if let Some(last) = out.len().checked_sub(1) {
        assert!(
            last * stride + offset + d <= k.len(),
            "attn_scores: K rows past the end"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(16) && d <= 256 && matches!(level.clamp_to_cpu(), SimdLevel::Avx512 | SimdLevel::Avx512Vnni) {
        // SAFETY: AVX-512 F is present (level clamped to the CPU); every row read is in bounds (asserted).
        unsafe { crate::x86::attention::scores_avx512(q, k, stride, offset, scale, out) };
        return;
    }
    let _ = level;
    for (j, o) in out.iter_mut().enumerate() {
        let r = &k[j * stride + offset..j * stride + offset + d];
        *o = scale * crate::float::dot_f32_scalar(q, r);
    }
}

/// `out = sum_j p[j] * v[j * stride + offset .. + out.len()]` over `j < p.len()`.
///
/// # Panics
/// If a V row would reach past the end of `v`.
pub fn attn_weighted_sum(p: &[f32], v: &[f32], stride: usize, offset: usize, out: &mut [f32]) {
    attn_weighted_sum_with(simd_level(), p, v, stride, offset, out)
}

/// [`attn_weighted_sum`] at an explicit SIMD level (lowered to what the CPU supports).
pub fn attn_weighted_sum_with(level: SimdLevel, p: &[f32], v: &[f32], stride: usize, offset: usize, out: &mut [f32]) {
    let d = out.len();
    if let Some(last) = p.len().checked_sub(1) {
        assert!(
            last * stride + offset + d <= v.len(),
            "attn_weighted_sum: V rows past the end"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(16) && matches!(level.clamp_to_cpu(), SimdLevel::Avx512 | SimdLevel::Avx512Vnni) {
        // SAFETY: AVX-512 F is present (level clamped to the CPU); every row read is in bounds (asserted).
        unsafe { crate::x86::attention::weighted_sum_avx512(p, v, stride, offset, out) };
        return;
    }
    let _ = level;
    out.fill(0.0);
    for (j, &pj) in p.iter().enumerate() {
        let r = &v[j * stride + offset..j * stride + offset + d];
        for (o, &x) in out.iter_mut().zip(r) {
            *o += pj * x;
        }
    }
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

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

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
        }
    }
}
