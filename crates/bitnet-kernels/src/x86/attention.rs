//! AVX-512 attention loops (see `crate::attention` for the scalar twins and the layout).

use crate::attention::{sum_lanes, KvElem, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2E};
use core::arch::x86_64::*;

/// 16 cache values at `p` as f32: a plain load, or an f16 load and conversion.
///
/// # Safety
/// AVX-512 F + F16C available; 16 values of `T` are readable at `p`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load16<T: KvElem>(p: *const T) -> __m512 {
    // SAFETY: forwarded from the caller; T is f32 or u16 (sealed), matching each branch's reading.
    unsafe {
        if T::F16 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
        } else {
            _mm512_loadu_ps(p.cast())
        }
    }
}

/// # Safety
/// AVX-512 F + F16C available; `q.len() % 16 == 0`, `q.len() <= 256`, and for every `j < out.len()` the
/// row `k[j * stride + offset .. + q.len()]` is in bounds.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn scores_avx512<T: KvElem>(
    q: &[f32],
    k: &[T],
    stride: usize,
    offset: usize,
    scale: f32,
    out: &mut [f32],
) {
    let c = q.len() / 16;
    let mut qv = [_mm512_setzero_ps(); 16];
    for (u, v) in qv.iter_mut().enumerate().take(c) {
        // SAFETY: 16 * u + 16 <= q.len().
        *v = unsafe { _mm512_loadu_ps(q.as_ptr().add(16 * u)) };
    }
    let kp = k.as_ptr();
    for (j, o) in out.iter_mut().enumerate() {
        // SAFETY (loads below): row j lies inside k (caller's contract), and 16 * u + 16 <= q.len().
        let row = unsafe { kp.add(j * stride + offset) };
        let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut u = 0;
        while u + 2 <= c {
            // SAFETY: see above.
            let (k0, k1) = unsafe { (load16(row.add(16 * u)), load16(row.add(16 * u + 16))) };
            a0 = _mm512_fmadd_ps(qv[u], k0, a0);
            a1 = _mm512_fmadd_ps(qv[u + 1], k1, a1);
            u += 2;
        }
        if u < c {
            // SAFETY: see above.
            a0 = _mm512_fmadd_ps(qv[u], unsafe { load16(row.add(16 * u)) }, a0);
        }
        *o = scale * _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
}

/// # Safety
/// AVX-512 F + F16C available; `out.len() % 16 == 0`, and for every `j < p.len()` the row
/// `v[j * stride + offset .. + out.len()]` is in bounds.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn weighted_sum_avx512<T: KvElem>(p: &[f32], v: &[T], stride: usize, offset: usize, out: &mut [f32]) {
    let d = out.len();
    let vp = v.as_ptr();
    // Up to 128 outputs (8 registers) at a time stay in registers across all rows.
    for c0 in (0..d).step_by(128) {
        let w = ((d - c0) / 16).min(8);
        let mut acc = [_mm512_setzero_ps(); 8];
        for (j, &pj) in p.iter().enumerate() {
            let pv = _mm512_set1_ps(pj);
            // SAFETY: row j lies inside v (caller's contract); c0 + 16 * u + 16 <= d.
            let row = unsafe { vp.add(j * stride + offset + c0) };
            for (u, a) in acc.iter_mut().enumerate().take(w) {
                // SAFETY: see above.
                *a = _mm512_fmadd_ps(pv, unsafe { load16(row.add(16 * u)) }, *a);
            }
        }
        for (u, a) in acc.iter().enumerate().take(w) {
            // SAFETY: c0 + 16 * u + 16 <= d = out.len().
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(c0 + 16 * u), *a) };
        }
    }
}

/// `crate::attention::softmax_scalar` 16 lanes at a time: lane `i` of the running sum holds the
/// values at positions `i mod 16`, as in the scalar twin, and every `exp` is the same sequence of
/// fused operations as `exp_approx`, so the results are identical.
///
/// # Safety
/// AVX-512 F available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) unsafe fn softmax_avx512(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mask = |i: usize| -> __mmask16 {
        if n - i >= 16 {
            0xFFFF
        } else {
            (1u16 << (n - i)) - 1
        }
    };
    let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < n {
        // SAFETY: masked lanes at or past n are not accessed.
        let v = unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask(i), p.add(i)) };
        mx = _mm512_max_ps(mx, v);
        i += 16;
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        let m = mask(i);
        // SAFETY: as above.
        let v = unsafe { _mm512_maskz_loadu_ps(m, p.add(i)) };
        let e = exp16(_mm512_sub_ps(v, max));
        // Masked-off lanes add +0.0, which leaves the running sums unchanged.
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
        // SAFETY: as above.
        unsafe { _mm512_mask_storeu_ps(p.add(i), m, e) };
        i += 16;
    }
    let mut lanes = [0f32; 16];
    // SAFETY: 16 floats into a 16-float array.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
    let inv = _mm512_set1_ps(1.0 / sum_lanes(lanes));
    let mut i = 0;
    while i < n {
        let m = mask(i);
        // SAFETY: as above.
        unsafe {
            let v = _mm512_maskz_loadu_ps(m, p.add(i));
            _mm512_mask_storeu_ps(p.add(i), m, _mm512_mul_ps(v, inv));
        }
        i += 16;
    }
}

/// `exp_approx` on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn exp16(x: __m512) -> __m512 {
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(EXP_MIN));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(LOG2E),
    ));
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
    let mut poly = _mm512_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(c));
    }
    let y = _mm512_add_ps(_mm512_fmadd_ps(poly, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
    // In range, n is in -126..=127, so n + 127 is a valid biased exponent.
    let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(_mm512_maskz_mov_ps(keep, n)),
        _mm512_set1_epi32(127),
    ));
    let e = _mm512_maskz_mov_ps(keep, _mm512_mul_ps(y, _mm512_castsi512_ps(bits)));
    _mm512_mask_mov_ps(e, nan, x)
}
