//! AVX-512 attention loops (see `crate::attention` for the scalar twins and the layout).

use core::arch::x86_64::*;

/// # Safety
/// AVX-512 F available; `q.len() % 16 == 0`, `q.len() <= 256`, and for every `j < out.len()` the row
/// `k[j * stride + offset .. + q.len()]` is in bounds.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) unsafe fn scores_avx512(q: &[f32], k: &[f32], stride: usize, offset: usize, scale: f32, out: &mut [f32]) {
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
            let (k0, k1) = unsafe { (_mm512_loadu_ps(row.add(16 * u)), _mm512_loadu_ps(row.add(16 * u + 16))) };
            a0 = _mm512_fmadd_ps(qv[u], k0, a0);
            a1 = _mm512_fmadd_ps(qv[u + 1], k1, a1);
            u += 2;
        }
        if u < c {
            // SAFETY: see above.
            a0 = _mm512_fmadd_ps(qv[u], unsafe { _mm512_loadu_ps(row.add(16 * u)) }, a0);
        }
        *o = scale * _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
}

/// # Safety
/// AVX-512 F available; `out.len() % 16 == 0`, and for every `j < p.len()` the row
/// `v[j * stride + offset .. + out.len()]` is in bounds.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) unsafe fn weighted_sum_avx512(p: &[f32], v: &[f32], stride: usize, offset: usize, out: &mut [f32]) {
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
                *a = _mm512_fmadd_ps(pv, unsafe { _mm512_loadu_ps(row.add(16 * u)) }, *a);
            }
        }
        for (u, a) in acc.iter().enumerate().take(w) {
            // SAFETY: c0 + 16 * u + 16 <= d = out.len().
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(c0 + 16 * u), *a) };
        }
    }
}
