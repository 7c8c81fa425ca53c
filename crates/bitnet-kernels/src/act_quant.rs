//! BitNet's quantizers: per-token absmax int8 for activations, per-tensor absmean ternary for
//! weights. Both must match the PyTorch reference bit for bit, so every step is done in f32 in the
//! reference's order and rounding is half-to-even (`torch.round`).

use crate::simd::{simd_level, SimdLevel};

/// Floor of the absmax / absmean denominators (the reference's `clamp(min=1e-5)`).
const EPS: f32 = 1e-5;

/// Quantizes one activation row to int8: returns `sx = 127 / max(max|x|, 1e-5)` and writes
/// `q = clamp(round_half_even(x * sx), -128, 127)`. Dequantize with `x ≈ q / sx`.
///
/// # Panics
/// If `q.len() != x.len()`.
pub fn quantize_row_i8(x: &[f32], q: &mut [i8]) -> f32 {
    quantize_row_i8_with(simd_level(), x, q)
}

/// [`quantize_row_i8`] at an explicit SIMD level (lowered to what the CPU supports); every level
/// gives identical results.
pub fn quantize_row_i8_with(level: SimdLevel, x: &[f32], q: &mut [i8]) -> f32 {
    assert_eq!(
        x.len(),
        q.len(),
        "quantize_row_i8: x has {} values, q has {}",
        x.len(),
        q.len()
    );
    match level.clamp_to_cpu() {
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx512() => {
            // SAFETY: clamp_to_cpu only returns an AVX-512 level when the CPU has AVX-512 F/BW/VL.
            unsafe { crate::x86::act_quant::quantize_row_i8_avx512(x, q) }
        }
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx2() => {
            // SAFETY: clamp_to_cpu only returns Avx2 when the CPU has AVX2, FMA and F16C.
            unsafe { crate::x86::act_quant::quantize_row_i8_avx2(x, q) }
        }
        _ => quantize_row_i8_scalar(x, q),
    }
}

/// Sum of int8 values (the ternary kernels subtract `sum(q)` per token to turn unsigned 0..=2 codes
/// back into -1..=1). Every level gives the same (exact) result.
pub fn sum_i8_with(level: SimdLevel, q: &[i8]) -> i32 {
    match level.clamp_to_cpu() {
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx2() => {
            // SAFETY: these levels imply AVX2, which clamp_to_cpu checked.
            unsafe { crate::x86::act_quant::sum_i8_avx2(q) }
        }
        _ => sum_i8_scalar(q),
    }
}

/// Scalar twin of [`sum_i8_with`].
pub(crate) fn sum_i8_scalar(q: &[i8]) -> i32 {
    q.iter().map(|&v| i32::from(v)).sum()
}

/// Scalar twin of the SIMD quantizers (and the reference for their tests).
pub(crate) fn quantize_row_i8_scalar(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let sx = scale_from_absmax(amax);
    for (o, &v) in q.iter_mut().zip(x) {
        *o = (v * sx).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    sx
}

/// `127 / max(amax, 1e-5)` in f32, shared by every quantizer so they agree exactly.
#[inline]
pub(crate) fn scale_from_absmax(amax: f32) -> f32 {
    127.0f32 / amax.max(EPS)
}

/// Ternarizes weights with BitNet's absmean rule: `m = mean|w|` (summed in f64, then cast to f32),
/// `s = 1 / max(m, 1e-5)`, `codes = clamp(round_half_even(w * s), -1, 1)`. Returns the weight
/// scale `1 / s` (so `w ≈ codes * scale`).
///
/// # Panics
/// If `codes.len() != w.len()`.
pub fn ternarize_absmean(w: &[f32], codes: &mut [i8]) -> f32 {
    assert_eq!(
        w.len(),
        codes.len(),
        "ternarize_absmean: w has {} values, codes has {}",
        w.len(),
        codes.len()
    );
    let sum: f64 = w.iter().map(|&v| f64::from(v.abs())).sum();
    // An empty tensor gives NaN here; `max` then picks EPS.
    let mean = (sum / w.len() as f64) as f32;
    let s = 1.0f32 / mean.max(EPS);
    for (c, &v) in codes.iter_mut().zip(w) {
        *c = (v * s).round_ties_even().clamp(-1.0, 1.0) as i8;
    }
    1.0f32 / s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_round_to_even() {
        // max|x| = 127 gives sx = 1 exactly, so x * sx = x and the ties are the inputs themselves.
        let x = [127.0f32, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -126.5];
        let mut q = [0i8; 9];
        for level in crate::supported_simd_levels() {
            let sx = quantize_row_i8_with(level, &x, &mut q);
            assert_eq!(sx, 1.0);
            assert_eq!(q, [127, 0, 2, 2, 0, -2, -2, 4, -126], "{level:?}");
        }
    }

    #[test]
    fn zero_row_and_tiny_values() {
        let mut q = [1i8; 5];
        for level in crate::supported_simd_levels() {
            let sx = quantize_row_i8_with(level, &[0.0; 5], &mut q);
            assert_eq!(sx, 127.0 / 1e-5);
            assert_eq!(q, [0; 5]);
        }
        // Below the 1e-5 floor the values are not stretched to ±127.
        let x = [1e-6f32, -2e-6, 0.0];
        let mut q = [0i8; 3];
        let sx = quantize_row_i8(&x, &mut q);
        assert_eq!(sx, 127.0f32 / 1e-5);
        assert_eq!(
            q,
            [
                (1e-6f32 * sx).round_ties_even() as i8,
                (-2e-6f32 * sx).round_ties_even() as i8,
                0
            ]
        );
    }

    #[test]
    fn extremes_map_to_127() {
        let x = [-3.0f32, 3.0, 1.0, -1.5];
        let mut q = [0i8; 4];
        let sx = quantize_row_i8(&x, &mut q);
        assert_eq!(sx, 127.0f32 / 3.0);
        assert_eq!(q[0], -127);
        assert_eq!(q[1], 127);
        assert_eq!(q[2], (1.0f32 * sx).round_ties_even() as i8);
    }

    #[test]
    fn clamp_saturates() {
        // The scalar path clamps even when x * sx overflows the i8 range (only reachable with
        // non-finite inputs or a hand-made scale, but the contract says clamp).
        assert_eq!((300.0f32).round_ties_even().clamp(-128.0, 127.0) as i8, 127);
        assert_eq!((-300.0f32).round_ties_even().clamp(-128.0, 127.0) as i8, -128);
    }

    #[test]
    fn absmean_ternarization() {
        let w = [0.4f32, -0.2, 0.0, 0.1, -0.9, 0.05];
        let mut c = [0i8; 6];
        let scale = ternarize_absmean(&w, &mut c);
        let mean = (w.iter().map(|v| f64::from(v.abs())).sum::<f64>() / 6.0) as f32;
        let s = 1.0f32 / mean;
        assert_eq!(scale, 1.0 / s);
        let want: Vec<i8> = w
            .iter()
            .map(|v| (v * s).round_ties_even().clamp(-1.0, 1.0) as i8)
            .collect();
        assert_eq!(c.to_vec(), want);
        assert_eq!(c, [1, -1, 0, 0, -1, 0]);
        // All-zero weights: mean floors at 1e-5, codes all zero.
        let mut c = [5i8; 3];
        let scale = ternarize_absmean(&[0.0; 3], &mut c);
        assert_eq!(scale, 1.0 / (1.0f32 / 1e-5));
        assert_eq!(c, [0; 3]);
    }

    #[test]
    fn absmean_ties_to_even() {
        // mean|w| = 1 (s = 1): 0.5 -> 0, -0.5 -> 0, 1.5 -> 2 -> clamp 1.
        let w = [0.5f32, -0.5, 1.5, 1.5];
        let mut c = [0i8; 4];
        assert_eq!(ternarize_absmean(&w, &mut c), 1.0);
        assert_eq!(c, [0, 0, 1, 1]);
    }
}
