//! Dot products of f32 activations with F32 / F16 / BF16 / Q8_0 rows stored as (possibly
//! unaligned) little-endian bytes. Four independent accumulators hide the FMA latency; the output
//! head (vocab x hidden in F16) is the largest float product per token and is bandwidth bound.

use super::hsum_ps_256;
use crate::blocks::BlockQ8_0;
use core::arch::x86_64::*;
use half::{bf16, f16};

/// Q8_0's block size and field offsets, from its typed block.
const Q8_BYTES: usize = core::mem::size_of::<BlockQ8_0>();
const Q8_D: usize = core::mem::offset_of!(BlockQ8_0, d);
const Q8_QS: usize = core::mem::offset_of!(BlockQ8_0, qs);

/// # Safety
/// AVX2 + FMA available; `w` points to `n` readable f32 values (any alignment); `n <= x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32_avx2(w: *const u8, x: &[f32], n: usize) -> f32 {
    let n = n.min(x.len());
    let w = w.cast::<f32>();
    let xp = x.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= n: inside both buffers; loadu accepts any alignment.
            let (wv, xv) = unsafe { (_mm256_loadu_ps(w.add(i + 8 * k)), _mm256_loadu_ps(xp.add(i + 8 * k))) };
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let (wv, xv) = unsafe { (_mm256_loadu_ps(w.add(i)), _mm256_loadu_ps(xp.add(i))) };
        acc[0] = _mm256_fmadd_ps(wv, xv, acc[0]);
        i += 8;
    }
    let mut s = hsum_ps_256(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        // SAFETY: i < n; read_unaligned accepts any alignment.
        s += unsafe { w.add(i).read_unaligned() } * x[i];
        i += 1;
    }
    s
}

/// # Safety
/// AVX-512 F available; `w` points to `x.len()` readable f32 values (any alignment).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32_avx512(w: *const u8, x: &[f32]) -> f32 {
    let n = x.len();
    let w = w.cast::<f32>();
    let xp = x.as_ptr();
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16k + 16 <= n: inside both buffers.
            let (wv, xv) = unsafe { (_mm512_loadu_ps(w.add(i + 16 * k)), _mm512_loadu_ps(xp.add(i + 16 * k))) };
            *a = _mm512_fmadd_ps(wv, xv, *a);
        }
        i += 64;
    }
    while i < n {
        let m: __mmask16 = if n - i >= 16 { 0xFFFF } else { (1u16 << (n - i)) - 1 };
        // SAFETY: the mask limits the reads to lanes below n; masked lanes are not accessed.
        let (wv, xv) = unsafe { (_mm512_maskz_loadu_ps(m, w.add(i)), _mm512_maskz_loadu_ps(m, xp.add(i))) };
        acc[0] = _mm512_fmadd_ps(wv, xv, acc[0]);
        i += 16;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ))
}

/// # Safety
/// AVX2 + FMA + F16C available; `w` points to `2 * x.len()` readable bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16_avx2(w: *const u8, x: &[f32]) -> f32 {
    let n = x.len();
    let xp = x.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: values i + 8k .. i + 8k + 8 <= n: bytes 2(i + 8k) .. + 16 are inside w.
            let (wv, xv) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * (i + 8 * k)).cast())),
                    _mm256_loadu_ps(xp.add(i + 8 * k)),
                )
            };
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let (wv, xv) = unsafe {
            (
                _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i).cast())),
                _mm256_loadu_ps(xp.add(i)),
            )
        };
        acc[0] = _mm256_fmadd_ps(wv, xv, acc[0]);
        i += 8;
    }
    let mut s = hsum_ps_256(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        // SAFETY: bytes 2i, 2i + 1 are inside w since i < n.
        let bits = unsafe { u16::from_le_bytes([*w.add(2 * i), *w.add(2 * i + 1)]) };
        s += f16::from_bits(bits).to_f32() * x[i];
        i += 1;
    }
    s
}

/// F16 rows times f32 vectors, `R` rows x `T` tokens at once: each row's values are loaded and converted
/// once for all `T` tokens and each token's values loaded once for all `R` rows.
///
/// Every (row, token) result has the same four partial sums (groups of 16 values in turn, then a masked
/// tail into the first) added in the same order, so results are bit-identical for every `R` and `T`:
/// batched decoding gives exactly the logits of one sequence.
///
/// # Safety
/// AVX-512 F (+ F16C) available; every `w[r]` points to `2 * n` readable bytes and every `x[t]` to `n`
/// readable f32 values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // acc[r][t][k]: indexes read more plainly than nested iterators here
pub(crate) unsafe fn dot_tile_f16_avx512<const R: usize, const T: usize>(
    w: [*const u8; R],
    x: [*const f32; T],
    n: usize,
) -> [[f32; T]; R] {
    let mut acc = [[[_mm512_setzero_ps(); 4]; T]; R];
    let mut xv = [_mm512_setzero_ps(); T];
    let mut i = 0;
    while i + 64 <= n {
        for k in 0..4 {
            let j = i + 16 * k;
            for t in 0..T {
                // SAFETY: j + 16 <= n values are readable at x[t].
                xv[t] = unsafe { _mm512_loadu_ps(x[t].add(j)) };
            }
            for r in 0..R {
                // SAFETY: values j .. j + 16 <= n: bytes 2j .. 2j + 32 are inside w[r].
                let wv = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(w[r].add(2 * j).cast())) };
                for t in 0..T {
                    acc[r][t][k] = _mm512_fmadd_ps(wv, xv[t], acc[r][t][k]);
                }
            }
        }
        i += 64;
    }
    while i < n {
        let m: __mmask16 = if n - i >= 16 { 0xFFFF } else { (1u16 << (n - i)) - 1 };
        for t in 0..T {
            // SAFETY: the mask limits the reads to values below n; masked-off lanes are not accessed.
            xv[t] = unsafe { _mm512_maskz_loadu_ps(m, x[t].add(i)) };
        }
        for r in 0..R {
            // SAFETY: as above, for bytes below 2n of w[r].
            let wv = unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w[r].add(2 * i).cast())) };
            for t in 0..T {
                acc[r][t][0] = _mm512_fmadd_ps(wv, xv[t], acc[r][t][0]);
            }
        }
        i += 16;
    }
    let mut out = [[0.0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            let a = &acc[r][t];
            out[r][t] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
        }
    }
    out
}

/// One F16 row times one vector: the 1 x 1 [`dot_tile_f16_avx512`].
///
/// # Safety
/// AVX-512 F (+ F16C) available; `w` points to `2 * x.len()` readable bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16_avx512(w: *const u8, x: &[f32]) -> f32 {
    // SAFETY: forwarded from the caller.
    unsafe { dot_tile_f16_avx512::<1, 1>([w], [x.as_ptr()], x.len())[0][0] }
}

/// # Safety
/// AVX2 + FMA available; `w` points to `2 * x.len()` readable bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_bf16_avx2(w: *const u8, x: &[f32]) -> f32 {
    let n = x.len();
    let xp = x.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: values i + 8k .. + 8 <= n: 16 bytes at 2(i + 8k) are inside w.
            let (h, xv) = unsafe {
                (
                    _mm_loadu_si128(w.add(2 * (i + 8 * k)).cast()),
                    _mm256_loadu_ps(xp.add(i + 8 * k)),
                )
            };
            // bf16 is the top half of an f32.
            let wv = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)));
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
        i += 16;
    }
    let mut s = hsum_ps_256(_mm256_add_ps(acc[0], acc[1]));
    while i < n {
        // SAFETY: bytes 2i, 2i + 1 are inside w since i < n.
        let bits = unsafe { u16::from_le_bytes([*w.add(2 * i), *w.add(2 * i + 1)]) };
        s += bf16::from_bits(bits).to_f32() * x[i];
        i += 1;
    }
    s
}

/// `sum_b d_b * (sum_i q_i * x_i)` over Q8_0 blocks: the one-token [`dot_tile_q8_0_avx2`].
///
/// # Safety
/// AVX2 + FMA + F16C available; `x.len() % 32 == 0` and `w` points to `x.len() / 32 * 34` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_avx2(w: *const u8, x: &[f32]) -> f32 {
    // SAFETY: forwarded from the caller.
    unsafe { dot_tile_q8_0_avx2::<1>(w, [x.as_ptr()], x.len())[0] }
}

/// One Q8_0 row times `T` tokens: each block is converted to f32 once for all tokens. Per token the
/// operations are those of the one-token kernel in the same order (two partial sums per block, then
/// `acc += (s0 + s1) * d`), so the results are bit-identical for every `T`.
///
/// # Safety
/// AVX2 + FMA + F16C available; `n % 32 == 0`, `w` points to `n / 32 * 34` bytes and every `x[t]` to `n`
/// readable values.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // acc[t], s[t][k]: indexes read more plainly here
pub(crate) unsafe fn dot_tile_q8_0_avx2<const T: usize>(w: *const u8, x: [*const f32; T], n: usize) -> [f32; T] {
    let nb = n / 32;
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: block b occupies bytes 34b .. 34b + 34 of w (b < nb); its values pair with
        // x[t][32b .. 32b + 32].
        unsafe {
            let blk = w.add(Q8_BYTES * b);
            let d = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes([*blk.add(Q8_D), *blk.add(Q8_D + 1)])));
            let mut qf = [_mm256_setzero_ps(); 4];
            for (k, q) in qf.iter_mut().enumerate() {
                *q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(blk.add(Q8_QS + 8 * k).cast())));
            }
            for t in 0..T {
                let mut s = [_mm256_setzero_ps(); 2];
                for k in 0..4 {
                    s[k & 1] = _mm256_fmadd_ps(qf[k], _mm256_loadu_ps(x[t].add(32 * b + 8 * k)), s[k & 1]);
                }
                acc[t] = _mm256_fmadd_ps(_mm256_add_ps(s[0], s[1]), d, acc[t]);
            }
        }
    }
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = hsum_ps_256(acc[t]);
    }
    out
}

/// [`dot_tile_q8_0_avx2`] with 16-lane conversions and products: a block's 32 values are two vectors
/// whose low halves hold the AVX2 kernel's chunks 0 and 2 and whose high halves hold chunks 1 and 3,
/// so each lane sees that kernel's operations in its order (two partial sums per block, added, then
/// `acc += (s0 + s1) * d` in 8 lanes) and the results are bit-identical, with about two thirds of
/// the instructions per block.
///
/// # Safety
/// AVX-512 F + F16C available; `n % 32 == 0`, `w` points to `n / 32 * 34` bytes and every `x[t]` to
/// `n` readable values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // acc[t]: indexes read more plainly here
pub(crate) unsafe fn dot_tile_q8_0_avx512<const T: usize>(w: *const u8, x: [*const f32; T], n: usize) -> [f32; T] {
    let nb = n / 32;
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: block b occupies bytes 34b .. 34b + 34 of w (b < nb); its values pair with
        // x[t][32b .. 32b + 32].
        unsafe {
            let blk = w.add(Q8_BYTES * b);
            let d = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes([*blk.add(Q8_D), *blk.add(Q8_D + 1)])));
            // Chunks (0, 1) and (2, 3) of the AVX2 kernel: values 0..16 and 16..32.
            let q01 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(blk.add(Q8_QS).cast())));
            let q23 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(blk.add(Q8_QS + 16).cast())));
            for t in 0..T {
                let xb = x[t].add(32 * b);
                let s = _mm512_fmadd_ps(q01, _mm512_loadu_ps(xb), _mm512_setzero_ps());
                let s = _mm512_fmadd_ps(q23, _mm512_loadu_ps(xb.add(16)), s);
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s)));
                acc[t] = _mm256_fmadd_ps(_mm256_add_ps(_mm512_castps512_ps256(s), hi), d, acc[t]);
            }
        }
    }
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = hsum_ps_256(acc[t]);
    }
    out
}
