//! AVX2 attention loops (see `crate::attention` for the scalar twins and the layout): the same shape
//! as the AVX-512 ones, eight lanes wide. The query heads of a GQA group share each K or V load (and
//! its f16 conversion); every score and every output is computed by the same operations whether its
//! head comes alone or in a group, and whether its row comes alone or in a block, so grouping never
//! changes a bit.

use super::hsum_ps_256;
use crate::attention::KvElem;
use core::arch::x86_64::*;

/// Most query heads that share one pass over the rows (4 x 2 accumulators plus the loads fit the 16
/// registers).
const HB_MAX: usize = 4;

/// 8 cache values at `p` as f32: a plain load, or an f16 load and conversion.
///
/// # Safety
/// AVX2 + F16C available; 8 values of `T` are readable at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8<T: KvElem>(p: *const T) -> __m256 {
    // SAFETY: forwarded from the caller; T is f32 or u16 (sealed), matching each branch's reading.
    unsafe {
        if T::F16 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
        } else {
            _mm256_loadu_ps(p.cast())
        }
    }
}

/// `out[h * n + j] = scale * dot(q_h, k_j)` for the `hg = q.len() / d` heads of `q` and the
/// `n = out.len() / hg` rows at `k[j * stride + offset..]`.
///
/// # Safety
/// AVX2 + FMA + F16C available; `d > 0`; every row `j < n` of `d` values lies inside `k`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn scores_avx2<T: KvElem>(
    q: &[f32],
    d: usize,
    k: &[T],
    stride: usize,
    offset: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hg = q.len() / d;
    let n = out.len() / hg;
    let kp = k.as_ptr().wrapping_add(offset);
    let mut h = 0;
    while h < hg {
        let hb = (hg - h).min(HB_MAX);
        let (qh, oh) = (&q[h * d..(h + hb) * d], &mut out[h * n..(h + hb) * n]);
        // SAFETY: the caller's contract; qh holds hb heads and oh their hb * n scores.
        unsafe {
            match hb {
                4 => scores_heads::<T, 4>(qh, d, kp, stride, scale, oh),
                3 => scores_heads::<T, 3>(qh, d, kp, stride, scale, oh),
                2 => scores_heads::<T, 2>(qh, d, kp, stride, scale, oh),
                _ => scores_heads::<T, 1>(qh, d, kp, stride, scale, oh),
            }
        }
        h += hb;
    }
}

/// [`scores_avx2`] for `HB` heads: each row's 8-value chunks are loaded once for the heads; each
/// dot product keeps even and odd chunks in two running sums (added, then reduced), then adds the
/// `d % 8` tail in order.
///
/// # Safety
/// As [`scores_avx2`], with `q` holding `HB` heads and `out` `HB * n` scores.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // even[hh] beside q[hh * d + u]: as above
unsafe fn scores_heads<T: KvElem, const HB: usize>(
    q: &[f32],
    d: usize,
    kp: *const T,
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    let n = out.len() / HB;
    let full = d / 8 * 8;
    for j in 0..n {
        // SAFETY: row j lies inside the caller's K (contract).
        let row = unsafe { kp.add(j * stride) };
        let mut even = [_mm256_setzero_ps(); HB];
        let mut odd = [_mm256_setzero_ps(); HB];
        let mut u = 0;
        while u < full {
            // SAFETY: u + 8 <= d values of row j and of each head.
            let kv = unsafe { load8(row.add(u)) };
            for hh in 0..HB {
                // SAFETY: as above.
                let qv = unsafe { _mm256_loadu_ps(q.as_ptr().add(hh * d + u)) };
                if (u / 8) % 2 == 0 {
                    even[hh] = _mm256_fmadd_ps(qv, kv, even[hh]);
                } else {
                    odd[hh] = _mm256_fmadd_ps(qv, kv, odd[hh]);
                }
            }
            u += 8;
        }
        for hh in 0..HB {
            let mut s = hsum_ps_256(_mm256_add_ps(even[hh], odd[hh]));
            for i in full..d {
                // SAFETY: i < d: inside row j.
                s += q[hh * d + i] * unsafe { *row.add(i) }.to_f32();
            }
            out[hh * n + j] = scale * s;
        }
    }
}

/// `out_h = sum_j p[h * n + j] * v_j` for the `hg = out.len() / d` heads and the
/// `n = p.len() / hg` rows at `v[j * stride + offset..]`: per output, one running fused sum over
/// the rows in order.
///
/// # Safety
/// AVX2 + FMA + F16C available; `d > 0`; every row `j < n` of `d` values lies inside `v`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn weighted_sum_avx2<T: KvElem>(
    p: &[f32],
    v: &[T],
    stride: usize,
    offset: usize,
    d: usize,
    out: &mut [f32],
) {
    let hg = out.len() / d;
    let n = p.len() / hg;
    let vp = v.as_ptr().wrapping_add(offset);
    let mut h = 0;
    while h < hg {
        let hb = (hg - h).min(HB_MAX);
        let (ph, oh) = (&p[h * n..(h + hb) * n], &mut out[h * d..(h + hb) * d]);
        // SAFETY: the caller's contract; ph holds hb * n weights and oh hb heads.
        unsafe {
            match hb {
                4 => weighted_heads::<T, 4>(ph, n, vp, stride, d, oh),
                3 => weighted_heads::<T, 3>(ph, n, vp, stride, d, oh),
                2 => weighted_heads::<T, 2>(ph, n, vp, stride, d, oh),
                _ => weighted_heads::<T, 1>(ph, n, vp, stride, d, oh),
            }
        }
        h += hb;
    }
}

/// Rows per block of [`weighted_heads`]: a block's V rows stay in L1 while every column slice passes
/// over them (walking all rows once per slice read the cache from memory `d / 16` times).
const WS_ROWS: usize = 64;

/// [`weighted_sum_avx2`] for `HB` heads: blocks of [`WS_ROWS`] rows; within a block each 16-column
/// slice of every row is loaded once for the heads and added to the running sums, which live in
/// `out` between blocks (so every output is still one fused running sum over the rows in order); the
/// `d % 8` tail columns are summed the same way in scalar.
///
/// # Safety
/// As [`weighted_sum_avx2`], with `p` holding `HB * n` weights and `out` `HB` zeroed heads.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // acc[hh] beside p[hh * n + j]: indexes read more plainly here
unsafe fn weighted_heads<T: KvElem, const HB: usize>(
    p: &[f32],
    n: usize,
    vp: *const T,
    stride: usize,
    d: usize,
    out: &mut [f32],
) {
    let full = d / 8 * 8;
    let op = out.as_mut_ptr();
    for j0 in (0..n).step_by(WS_ROWS) {
        let j1 = n.min(j0 + WS_ROWS);
        let mut c0 = 0;
        while c0 < full {
            let two = c0 + 16 <= full;
            let mut acc = [[_mm256_setzero_ps(); 2]; HB];
            for hh in 0..HB {
                // SAFETY: columns c0..c0 + 8 (+ 8 more when `two`) of head hh lie inside out.
                unsafe {
                    acc[hh][0] = _mm256_loadu_ps(op.add(hh * d + c0));
                    if two {
                        acc[hh][1] = _mm256_loadu_ps(op.add(hh * d + c0 + 8));
                    }
                }
            }
            for j in j0..j1 {
                // SAFETY: columns c0..c0 + 8 (+ 8) <= d of row j lie inside the caller's V.
                let row = unsafe { vp.add(j * stride + c0) };
                // SAFETY: as above.
                let v0 = unsafe { load8(row) };
                let v1 = if two {
                    // SAFETY: as above.
                    unsafe { load8(row.add(8)) }
                } else {
                    v0
                };
                for hh in 0..HB {
                    let w = _mm256_set1_ps(p[hh * n + j]);
                    acc[hh][0] = _mm256_fmadd_ps(w, v0, acc[hh][0]);
                    if two {
                        acc[hh][1] = _mm256_fmadd_ps(w, v1, acc[hh][1]);
                    }
                }
            }
            for hh in 0..HB {
                // SAFETY: as for the loads above.
                unsafe {
                    _mm256_storeu_ps(op.add(hh * d + c0), acc[hh][0]);
                    if two {
                        _mm256_storeu_ps(op.add(hh * d + c0 + 8), acc[hh][1]);
                    }
                }
            }
            c0 += if two { 16 } else { 8 };
        }
        for i in full..d {
            for hh in 0..HB {
                // SAFETY: column i < d of head hh lies inside out (all writes go through `op`).
                let o = unsafe { op.add(hh * d + i) };
                // SAFETY: as above.
                let mut s = unsafe { *o };
                for j in j0..j1 {
                    // SAFETY: column i < d of row j lies inside the caller's V.
                    s = p[hh * n + j].mul_add(unsafe { *vp.add(j * stride + i) }.to_f32(), s);
                }
                // SAFETY: as above.
                unsafe { *o = s };
            }
        }
    }
}
