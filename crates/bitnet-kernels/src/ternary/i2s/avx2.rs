//! AVX2 I2_S kernels. Codes are unsigned (0..=2), so `maddubs(code, q)` multiplies them with the
//! signed activations; `t = code - 1` is restored by subtracting `sum(q)` once per token
//! (done by [`gemm_tiled`]).
//!
//! Per 32-byte block and row: 1 load, 3 ops to neutralize code 3, 3 shifts + 4 ands to split the
//! four 2-bit planes; then per token 4 `maddubs` against 4 contiguous 32-byte activation slices
//! (plane `k` of byte `p` is value `32k + p`, so no shuffles are needed).

use crate::operands::{OutRows, QTokens};
use crate::ternary::i2s::{I2sRows, BLOCK, BLOCK_BYTES};
use crate::ternary::tiled::{dispatch_tile, gemm_tiled, Tile};
use crate::x86::{hsum_epi32_256, sanitize_codes};
use core::arch::x86_64::*;

/// Rows per tile. Activations are re-read per row either way (as memory operands of `maddubs`), so
/// one row keeps the 4 i16 + 4 i32 accumulators and 4 code planes within the 16 ymm registers.
const R: usize = 1;
/// Tokens per tile.
const T: usize = 4;
/// Blocks summed in i16 before widening: each i16 lane gains at most 4 planes x 2 products x
/// |2 x -128| = 2048 per block (codes are 0..=2 after neutralizing code 3), and
/// 8 x 2048 = 16384 fits in i16.
const I16_BLOCKS: usize = 8;

/// `out[r][k] = sum_j toks[k][j] * code(row0 + r, j)` over the full blocks, for `RR` rows and `TT`
/// tokens.
///
/// # Safety
/// AVX2 available; rows `row0 .. row0 + RR` exist in `v`; `toks.len() == TT`; every token has at
/// least `full_blocks * 128` values. (Asserted on entry, once per tile.)
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const RR: usize, const TT: usize, const CLEAN: bool>(
    v: I2sRows<'_>,
    row0: usize,
    toks: &[&[i8]],
    out: &mut Tile,
) {
    let nb = v.full_blocks();
    assert!(toks.len() == TT && (row0 + RR) * v.stride <= v.data.len() && nb * BLOCK_BYTES <= v.stride);
    assert!(toks.iter().all(|t| t.len() >= nb * BLOCK));
    let m3 = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); TT]; RR];
    let w0 = v.data.as_ptr().wrapping_add(row0 * v.stride);
    let qp: [*const i8; TT] = core::array::from_fn(|k| toks[k].as_ptr());
    let mut b0 = 0;
    while b0 < nb {
        // i16 partial sums over up to I16_BLOCKS blocks, widened to i32 once per group.
        let b1 = nb.min(b0 + I16_BLOCKS);
        let mut acc16 = [[_mm256_setzero_si256(); TT]; RR];
        for b in b0..b1 {
            for (rr, acc_r) in acc16.iter_mut().enumerate() {
                // SAFETY: row row0 + rr < row0 + RR exists and block b < nb lies within its
                // stride (asserted above); loadu has no alignment requirement.
                let w = unsafe { _mm256_loadu_si256(w0.add(rr * v.stride + b * BLOCK_BYTES).cast()) };
                let w = if CLEAN { w } else { sanitize_codes(w) };
                let c = [
                    _mm256_and_si256(_mm256_srli_epi16::<6>(w), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(w), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(w), m3),
                    _mm256_and_si256(w, m3),
                ];
                for (a, &p) in acc_r.iter_mut().zip(&qp) {
                    let mut qv = [_mm256_setzero_si256(); 4];
                    for (k, qk) in qv.iter_mut().enumerate() {
                        // SAFETY: values 128b .. 128b + 128 are inside every token (asserted).
                        *qk = unsafe { _mm256_loadu_si256(p.add(b * BLOCK + 32 * k).cast()) };
                    }
                    let s01 = _mm256_add_epi16(_mm256_maddubs_epi16(c[0], qv[0]), _mm256_maddubs_epi16(c[1], qv[1]));
                    let s23 = _mm256_add_epi16(_mm256_maddubs_epi16(c[2], qv[2]), _mm256_maddubs_epi16(c[3], qv[3]));
                    *a = _mm256_add_epi16(*a, _mm256_add_epi16(s01, s23));
                }
            }
        }
        for (a32, a16) in acc.iter_mut().zip(&acc16) {
            for (x, &y) in a32.iter_mut().zip(a16) {
                *x = _mm256_add_epi32(*x, _mm256_madd_epi16(y, ones));
            }
        }
        b0 = b1;
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        for (ok, &ak) in o.iter_mut().zip(a) {
            *ok = hsum_epi32_256(ak);
        }
    }
}

/// Dispatches a tile shape to its instantiation.
///
/// # Safety
/// As [`tile`], with `nr` in `{1, R}` and `toks.len()` in `1..=T`.
unsafe fn dots(v: I2sRows<'_>, r: usize, nr: usize, toks: &[&[i8]], out: &mut Tile) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if v.clean {
            dots_with::<true>(v, r, nr, toks, out)
        } else {
            dots_with::<false>(v, r, nr, toks, out)
        }
    }
}

/// # Safety
/// As [`dots`].
unsafe fn dots_with<const CLEAN: bool>(v: I2sRows<'_>, r: usize, nr: usize, toks: &[&[i8]], out: &mut Tile) {
    // SAFETY: forwarded from the caller.
    unsafe { dispatch_tile!(tile, R, T, nr, toks.len(), [CLEAN], (v, r, toks, out)) }
}

/// # Safety
/// AVX2 + FMA + F16C available; the bounds of `TernaryMatrix::gemm` hold.
pub(crate) unsafe fn gemm(v: I2sRows<'_>, w_scale: f32, x: QTokens<'_>, out: OutRows<'_>) {
    gemm_tiled(v, w_scale, x, out, R, T, |r, nr, toks, out, _stream| {
        // SAFETY: the caller guarantees the CPU features; gemm_tiled passes rows inside the
        // output block, nr in {1, R} and 1..=T tokens of cols values.
        unsafe { dots(v, r, nr, toks, out) }
    });
}
