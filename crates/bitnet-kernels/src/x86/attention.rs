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

/// The sums of the 16 lanes of each `v[k]`, `k < 8`, in lane `4 * k` for `k < 4` and lane
/// `4 * (k - 4) + 1` for `k >= 4`, each added in exactly the order of `_mm512_reduce_add_ps` (lane
/// `i` + lane `i + 8`, then `+ 4`, `+ 2`, `+ 1`), so that blocked scores equal one-row-at-a-time ones
/// bit for bit. A transpose-and-add tree: 21 instructions for 8 sums where 8 separate reductions
/// take about 70.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn hsum8(v: &[__m512; 8]) -> __m512 {
    // (No closures or `array::from_fn` in these kernels: closures do not inherit the target features,
    // and the vectors would go through memory.)
    // Lane i + lane i + 8: x[i] holds v[2i] in its low 256 bits and v[2i + 1] in its high ones.
    let mut x = [_mm512_setzero_ps(); 4];
    for i in 0..4 {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        x[i] = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        );
    }
    // + 4: 128-bit block k of y[i] holds v[4i + k].
    let mut y = [_mm512_setzero_ps(); 2];
    for i in 0..2 {
        let (a, b) = (x[2 * i], x[2 * i + 1]);
        y[i] = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        );
    }
    // + 2: block k holds two partial sums of v[k], then two of v[k + 4].
    let (a, b) = (_mm512_castps_pd(y[0]), _mm512_castps_pd(y[1]));
    let z = _mm512_add_ps(
        _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
        _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
    );
    // + 1: block k holds the sum of v[k], then that of v[k + 4].
    _mm512_add_ps(
        _mm512_shuffle_ps::<0b10_00_10_00>(z, z),
        _mm512_shuffle_ps::<0b11_01_11_01>(z, z),
    )
}

/// Lane of [`hsum8`]'s result that holds the sum of `v[k]`.
const HSUM8_LANE: [usize; 8] = [0, 4, 8, 12, 1, 5, 9, 13];

/// Scores of `HB` heads (at `q`, `d` apart) against rows `0..n` (at `kp + j * stride`), written to
/// `out + h * n + j`: blocks of `R` rows (`HB * R = 8` dot products), each K vector loaded once for
/// the `HB` heads, reduced together by [`hsum8`]. Each dot product keeps the order of the one-row
/// loop (even and odd 16-value chunks in two running sums, added, then reduced), so every score is
/// the same bit for bit however the rows and heads are blocked.
///
/// # Safety
/// AVX-512 F + F16C; `d % 16 == 0`; `HB` heads of `d` values readable at `q`; rows `0..n` of `d`
/// values readable at `kp + j * stride`; `HB * n` scores writable at `out`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_heads<T: KvElem, const HB: usize, const R: usize>(
    q: *const f32,
    d: usize,
    kp: *const T,
    stride: usize,
    n: usize,
    scale: f32,
    out: *mut f32,
) {
    const { assert!(HB * R == 8) };
    let c = d / 16;
    let scale_v = _mm512_set1_ps(scale);
    let mut j = 0;
    while j + R <= n {
        // Running sums over even chunks u (in `even`) and odd ones (in `odd`), as in `row_score`.
        let (mut even, mut odd) = ([_mm512_setzero_ps(); 8], [_mm512_setzero_ps(); 8]);
        let mut u = 0;
        while u < c {
            let pair = u + 1 < c;
            let (mut q0, mut q1) = ([_mm512_setzero_ps(); HB], [_mm512_setzero_ps(); HB]);
            for h in 0..HB {
                // SAFETY (loads): heads h < HB and 16 * (u + 1) + 16 <= d when `pair`; rows j + r < n
                // (caller's contract).
                // SAFETY: as stated above for this block.
                q0[h] = unsafe { _mm512_loadu_ps(q.add(h * d + 16 * u)) };
                if pair {
                    // SAFETY: as stated above for this block.
                    q1[h] = unsafe { _mm512_loadu_ps(q.add(h * d + 16 * u + 16)) };
                }
            }
            for r in 0..R {
                // SAFETY: see above.
                let row = unsafe { kp.add((j + r) * stride + 16 * u) };
                // SAFETY: as stated above for this block.
                let k0 = unsafe { load16(row) };
                for h in 0..HB {
                    even[h * R + r] = _mm512_fmadd_ps(q0[h], k0, even[h * R + r]);
                }
                if pair {
                    // SAFETY: see above.
                    let k1 = unsafe { load16(row.add(16)) };
                    for h in 0..HB {
                        odd[h * R + r] = _mm512_fmadd_ps(q1[h], k1, odd[h * R + r]);
                    }
                }
            }
            u += 2;
        }
        let mut sums = [_mm512_setzero_ps(); 8];
        for i in 0..8 {
            sums[i] = _mm512_add_ps(even[i], odd[i]);
        }
        let mut lanes = [0f32; 16];
        // SAFETY: 16 floats into a 16-float array.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), _mm512_mul_ps(hsum8(&sums), scale_v)) };
        for h in 0..HB {
            for r in 0..R {
                // SAFETY: h < HB and j + r < n.
                unsafe { *out.add(h * n + j + r) = lanes[HSUM8_LANE[h * R + r]] };
            }
        }
        j += R;
    }
    // The last n % R rows one at a time.
    while j < n {
        for h in 0..HB {
            // SAFETY: as above.
            unsafe { *out.add(h * n + j) = row_score(q.add(h * d), kp.add(j * stride), c, scale) };
        }
        j += 1;
    }
}

/// `scale * dot(q, row)` over `16 * c` values: even and odd chunks in two running sums, added, then
/// `_mm512_reduce_add_ps`.
///
/// # Safety
/// AVX-512 F + F16C; `16 * c` values readable at `q` and at `row`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn row_score<T: KvElem>(q: *const f32, row: *const T, c: usize, scale: f32) -> f32 {
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut u = 0;
    while u + 2 <= c {
        // SAFETY: 16 * u + 32 <= 16 * c (caller's contract).
        unsafe {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q.add(16 * u)), load16(row.add(16 * u)), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q.add(16 * u + 16)), load16(row.add(16 * u + 16)), a1);
        }
        u += 2;
    }
    if u < c {
        // SAFETY: 16 * u + 16 <= 16 * c.
        a0 = unsafe { _mm512_fmadd_ps(_mm512_loadu_ps(q.add(16 * u)), load16(row.add(16 * u)), a0) };
    }
    scale * _mm512_reduce_add_ps(_mm512_add_ps(a0, a1))
}

/// # Safety
/// AVX-512 F + F16C available; `d % 16 == 0`, `d <= 256`, `q.len() = hg * d`, `out.len() = hg * n`,
/// and for every `j < n` the row `k[j * stride + offset .. + d]` is in bounds.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn scores_avx512<T: KvElem>(
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
    // SAFETY: offset is in bounds whenever a row is read (caller's contract); with n = 0 nothing is.
    let kp = k.as_ptr().wrapping_add(offset);
    let mut h = 0;
    while h < hg {
        // SAFETY (each call): heads h.. of q and their score rows of out are in bounds (h + step <= hg);
        // rows are the caller's.
        // SAFETY: as stated above for this block.
        let (qh, oh) = (unsafe { q.as_ptr().add(h * d) }, unsafe { out.as_mut_ptr().add(h * n) });
        let step = match hg - h {
            4.. => {
                // SAFETY: see "each call" above.
                unsafe { scores_heads::<T, 4, 2>(qh, d, kp, stride, n, scale, oh) };
                4
            }
            2 | 3 => {
                // SAFETY: see "each call" above.
                unsafe { scores_heads::<T, 2, 4>(qh, d, kp, stride, n, scale, oh) };
                2
            }
            _ => {
                // SAFETY: see "each call" above.
                unsafe { scores_heads::<T, 1, 8>(qh, d, kp, stride, n, scale, oh) };
                1
            }
        };
        h += step;
    }
}

/// Rows per pass of [`weighted_sum_avx512`]: the block of V rows is read once per group of columns,
/// and 64 rows (16-32 KiB for 128-value heads) stay in L1 between those passes.
const WS_ROWS: usize = 64;

/// `out_h[c0..c0 + 16 W] += sum_j p_h[j] * v[row j][c0..c0 + 16 W]` over rows `j < rows` for `HB`
/// heads (weights at `p + h * pstride`, outputs at `out + h * d`): each V vector is loaded once for
/// the `HB` heads, and each output is one running fused sum over the rows in order.
///
/// # Safety
/// AVX-512 F + F16C; weights `0..rows` of each head readable at `p + h * pstride`; `HB * d` outputs
/// writable at `out` with `c0 + 16 * W <= d`; rows `0..rows` of `d` values readable at
/// `vp + j * stride`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn weighted_block<T: KvElem, const HB: usize, const W: usize>(
    p: *const f32,
    pstride: usize,
    rows: usize,
    vp: *const T,
    stride: usize,
    d: usize,
    c0: usize,
    out: *mut f32,
) {
    const { assert!(HB * W <= 16) };
    // (A flat array with constant indices and no closures, so that it lives in registers.)
    let mut acc = [_mm512_setzero_ps(); 16];
    for h in 0..HB {
        for u in 0..W {
            // SAFETY: h < HB and c0 + 16 * u + 16 <= d.
            acc[h * W + u] = unsafe { _mm512_loadu_ps(out.add(h * d + c0 + 16 * u)) };
        }
    }
    for j in 0..rows {
        let mut vv = [_mm512_setzero_ps(); W];
        for (u, x) in vv.iter_mut().enumerate() {
            // SAFETY: row j < rows and c0 + 16 * u + 16 <= d (caller's contract).
            *x = unsafe { load16(vp.add(j * stride + c0 + 16 * u)) };
        }
        for h in 0..HB {
            // SAFETY: h < HB, j < rows.
            let pj = _mm512_set1_ps(unsafe { *p.add(h * pstride + j) });
            for u in 0..W {
                acc[h * W + u] = _mm512_fmadd_ps(pj, vv[u], acc[h * W + u]);
            }
        }
    }
    for h in 0..HB {
        for u in 0..W {
            // SAFETY: as for the loads.
            unsafe { _mm512_storeu_ps(out.add(h * d + c0 + 16 * u), acc[h * W + u]) };
        }
    }
}

/// [`weighted_block`] over all columns, in blocks of [`WS_ROWS`] rows (read from L1 by every
/// column block after the first), `W` vectors of columns at a time and one at a time for the rest.
///
/// # Safety
/// As [`weighted_block`], with `d % 16 == 0` in place of the column range.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn weighted_heads<T: KvElem, const HB: usize, const W: usize>(
    p: *const f32,
    n: usize,
    vp: *const T,
    stride: usize,
    d: usize,
    out: *mut f32,
) {
    for j0 in (0..n).step_by(WS_ROWS) {
        let rows = WS_ROWS.min(n - j0);
        // SAFETY (all below): rows j0.. of the block are rows of the caller's range, and weights j0..
        // of each head (n apart) are in bounds; the column ranges stay within d.
        // SAFETY: as stated above for this block.
        let (pj, vj) = (unsafe { p.add(j0) }, unsafe { vp.add(j0 * stride) });
        let mut c0 = 0;
        while c0 + 16 * W <= d {
            // SAFETY: as stated above for this block.
            unsafe { weighted_block::<T, HB, W>(pj, n, rows, vj, stride, d, c0, out) };
            c0 += 16 * W;
        }
        while c0 < d {
            // SAFETY: as stated above for this block.
            unsafe { weighted_block::<T, HB, 1>(pj, n, rows, vj, stride, d, c0, out) };
            c0 += 16;
        }
    }
}

/// `out_h += sum_j p_h[j] * v[row j]` for the `hg = out.len() / d` heads.
///
/// # Safety
/// AVX-512 F + F16C available; `d % 16 == 0`, `out.len() = hg * d`, `p.len() = hg * n`, and for every
/// `j < n` the row `v[j * stride + offset .. + d]` is in bounds.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn weighted_sum_avx512<T: KvElem>(
    p: &[f32],
    v: &[T],
    stride: usize,
    offset: usize,
    d: usize,
    out: &mut [f32],
) {
    let hg = out.len() / d;
    let n = p.len() / hg;
    // SAFETY: offset is in bounds whenever a row is read (caller's contract); with n = 0 nothing is.
    let vp = v.as_ptr().wrapping_add(offset);
    let mut h = 0;
    while h < hg {
        // SAFETY (each call): heads h.. of p and out are in bounds (h + step <= hg); rows are the caller's.
        // SAFETY: as stated above for this block.
        let (ph, oh) = (unsafe { p.as_ptr().add(h * n) }, unsafe { out.as_mut_ptr().add(h * d) });
        let step = match hg - h {
            4.. => {
                // SAFETY: see "each call" above.
                unsafe { weighted_heads::<T, 4, 4>(ph, n, vp, stride, d, oh) };
                4
            }
            2 | 3 => {
                // SAFETY: see "each call" above.
                unsafe { weighted_heads::<T, 2, 8>(ph, n, vp, stride, d, oh) };
                2
            }
            _ => {
                // SAFETY: see "each call" above.
                unsafe { weighted_heads::<T, 1, 8>(ph, n, vp, stride, d, oh) };
                1
            }
        };
        h += step;
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
