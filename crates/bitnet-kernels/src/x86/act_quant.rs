//! SIMD twins of `quantize_row_i8_scalar`: same f32 max, same f32 multiply, round-half-even, and
//! saturating narrowing (equal to the scalar clamp), so the results are bit-identical.

use crate::act_quant::scale_from_absmax;
use core::arch::x86_64::*;

const ROUND_EVEN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// # Safety
/// The CPU must support AVX2 (and FMA/F16C, enabled with it); `q.len() == x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_i8_avx2(x: &[f32], q: &mut [i8]) -> f32 {
    let n = x.len().min(q.len());
    let xp = x.as_ptr();
    let qp = q.as_mut_ptr();
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut vmax = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= x.len(); loadu has no alignment requirement.
        let v = unsafe { _mm256_loadu_ps(xp.add(i)) };
        vmax = _mm256_max_ps(vmax, _mm256_and_ps(v, abs_mask));
        i += 8;
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: lanes has room for 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vmax) };
    let mut amax = lanes.iter().fold(0.0f32, |m, &v| m.max(v));
    for &v in &x[i..n] {
        amax = amax.max(v.abs());
    }
    let sx = scale_from_absmax(amax);
    let vs = _mm256_set1_ps(sx);
    let fix_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut i = 0;
    while i + 32 <= n {
        let mut v = [_mm256_setzero_si256(); 4];
        for (k, vk) in v.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= i + 32 <= n <= x.len().
            let xv = unsafe { _mm256_loadu_ps(xp.add(i + 8 * k)) };
            *vk = _mm256_cvtps_epi32(_mm256_round_ps::<ROUND_EVEN>(_mm256_mul_ps(xv, vs)));
        }
        // Saturating packs clamp to -128..=127; they interleave 128-bit lanes, undone by the permute.
        let p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
        let p = _mm256_permutevar8x32_epi32(p, fix_order);
        // SAFETY: i + 32 <= n <= q.len(); storeu has no alignment requirement.
        unsafe { _mm256_storeu_si256(qp.add(i).cast(), p) };
        i += 32;
    }
    for (o, &v) in q[i..n].iter_mut().zip(&x[i..n]) {
        *o = (v * sx).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    sx
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL (plus AVX2/FMA/F16C); `q.len() == x.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_i8_avx512(x: &[f32], q: &mut [i8]) -> f32 {
    let n = x.len().min(q.len());
    let xp = x.as_ptr();
    let qp = q.as_mut_ptr();
    let mut vmax = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        let k: __mmask16 = if n - i >= 16 { 0xFFFF } else { (1u16 << (n - i)) - 1 };
        // SAFETY: the mask covers only lanes i..min(i + 16, n), all inside x; masked-off lanes are
        // not read (no fault) and load as 0, which does not change the max of absolute values.
        let v = unsafe { _mm512_maskz_loadu_ps(k, xp.add(i)) };
        vmax = _mm512_max_ps(vmax, _mm512_abs_ps(v));
        i += 16;
    }
    let sx = scale_from_absmax(_mm512_reduce_max_ps(vmax));
    let vs = _mm512_set1_ps(sx);
    let mut i = 0;
    while i < n {
        let k: __mmask16 = if n - i >= 16 { 0xFFFF } else { (1u16 << (n - i)) - 1 };
        // SAFETY: as above, only lanes inside x are read.
        let v = unsafe { _mm512_maskz_loadu_ps(k, xp.add(i)) };
        let r = _mm512_cvt_roundps_epi32::<ROUND_EVEN>(_mm512_mul_ps(v, vs));
        // SAFETY: the same mask limits the 16 byte stores to q[i..min(i + 16, n)]; vpmovsdb
        // saturates to -128..=127 like the scalar clamp.
        unsafe { _mm512_mask_cvtsepi32_storeu_epi8(qp.add(i), k, r) };
        i += 16;
    }
    sx
}

/// Exact sum of int8 values: bytes are flipped to unsigned (`x ^ 0x80 = x + 128`), summed eight at a
/// time by `vpsadbw` against zero into 64-bit lanes, and `128 * len` is subtracted at the end.
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn sum_i8_avx2(q: &[i8]) -> i32 {
    let n = q.len();
    let p = q.as_ptr();
    let flip = _mm256_set1_epi8(i8::MIN);
    let zero = _mm256_setzero_si256();
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: bytes i .. i + 32 <= n are inside q.
        let v = unsafe { _mm256_loadu_si256(p.add(i).cast()) };
        acc = _mm256_add_epi64(acc, _mm256_sad_epu8(_mm256_xor_si256(v, flip), zero));
        i += 32;
    }
    let mut lanes = [0i64; 4];
    // SAFETY: 32 bytes written to a 32-byte array.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
    // Each lane holds at most n * 255 / 4 < 2^62: no overflow; the result fits i32 for n < 2^24.
    let unsigned: i64 = lanes.iter().sum();
    let mut s = unsigned - 128 * i as i64;
    for &v in &q[i..] {
        s += i64::from(v);
    }
    s as i32
}
