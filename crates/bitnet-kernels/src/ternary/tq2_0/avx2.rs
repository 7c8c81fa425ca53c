//! AVX2 TQ2_0 kernel. Like I2_S, codes are unsigned (0..=2) and multiplied with `maddubs`; since
//! every 256-value block has its own scale, the per-block `sum(q)` (precomputed per token) is
//! subtracted in the integer domain, then the block's i32 lanes are converted and accumulated with
//! one FMA by the block scale. The float accumulation order differs from the scalar twin (8 lanes
//! instead of one running sum), so results agree to f32 rounding, not bit for bit.

use crate::blocks::{Block, BlockTq2_0};
use crate::operands::{OutRows, QTokens};
use crate::ternary::tq2_0::{gemm_tiled, BlockSums, TqRows, BLOCK, BLOCK_BYTES, MAX_BLOCKS, TILE_TOKENS};
use crate::x86::{hsum_ps_256, sanitize_codes};
use core::arch::x86_64::*;

/// Dots of one row with `TT` tokens: `out[k] = sum_b d_b * (sum_j q[k][j] * t[j] over block b)`.
///
/// # Safety
/// AVX2 + FMA + F16C available. (Bounds are asserted on entry.)
// `b` indexes raw pointers and the sums table alike.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_tile<const TT: usize, const CLEAN: bool>(
    row: &[u8],
    toks: &[&[i8]],
    sums: &BlockSums,
    out: &mut [f32; TILE_TOKENS],
) {
    let nb = row.len() / BLOCK_BYTES;
    assert!(toks.len() == TT && TT <= TILE_TOKENS && nb <= MAX_BLOCKS);
    assert!(toks.iter().all(|t| t.len() >= nb * BLOCK));
    let m3 = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); TT];
    let blocks = BlockTq2_0::slice(row);
    for b in 0..nb {
        let block = &blocks[b];
        let blk = block.qs.as_ptr();
        let d_bits = i16::from_le_bytes(block.d);
        let d = _mm256_cvtph_ps(_mm_set1_epi16(d_bits));
        let mut c = [[_mm256_setzero_si256(); 4]; 2];
        for (h, ch) in c.iter_mut().enumerate() {
            // SAFETY: bytes 32h .. 32h + 32 (h < 2) of the block's 64 code bytes.
            let w = unsafe { _mm256_loadu_si256(blk.add(32 * h).cast()) };
            let w = if CLEAN { w } else { sanitize_codes(w) };
            // Plane l (bits 2l..2l+1) of byte m is value 128h + 32l + m.
            ch[0] = _mm256_and_si256(w, m3);
            ch[1] = _mm256_and_si256(_mm256_srli_epi16::<2>(w), m3);
            ch[2] = _mm256_and_si256(_mm256_srli_epi16::<4>(w), m3);
            ch[3] = _mm256_and_si256(_mm256_srli_epi16::<6>(w), m3);
        }
        for (k, a) in acc.iter_mut().enumerate() {
            let p = toks[k].as_ptr();
            // Eight maddubs results of at most 512 per i16 lane: at most 4096, no overflow.
            let mut s = _mm256_setzero_si256();
            for (h, ch) in c.iter().enumerate() {
                for (l, &cl) in ch.iter().enumerate() {
                    // SAFETY: values 256b + 128h + 32l .. + 32 are inside the token (asserted).
                    let qv = unsafe { _mm256_loadu_si256(p.add(b * BLOCK + 128 * h + 32 * l).cast()) };
                    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(cl, qv));
                }
            }
            // t = code - 1: subtract the block's activation sum (in lane 0) before scaling.
            let corr = _mm256_setr_epi32(sums[k][b], 0, 0, 0, 0, 0, 0, 0);
            let s = _mm256_sub_epi32(_mm256_madd_epi16(s, ones), corr);
            *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, *a);
        }
    }
    for (o, &a) in out.iter_mut().zip(&acc) {
        *o = hsum_ps_256(a);
    }
}

/// # Safety
/// As [`row_tile`], with `toks.len()` in `1..=TILE_TOKENS`.
unsafe fn dots<const CLEAN: bool>(row: &[u8], toks: &[&[i8]], sums: &BlockSums, out: &mut [f32; TILE_TOKENS]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match toks.len() {
            1 => row_tile::<1, CLEAN>(row, toks, sums, out),
            2 => row_tile::<2, CLEAN>(row, toks, sums, out),
            3 => row_tile::<3, CLEAN>(row, toks, sums, out),
            _ => row_tile::<TILE_TOKENS, CLEAN>(row, toks, sums, out),
        }
    }
}

/// Gemm over rows `row0 .. row0 + m` with the output layout of `TernaryMatrix::gemm`.
///
/// # Safety
/// AVX2 + FMA + F16C available; the bounds of `TernaryMatrix::gemm` hold; `cols / 256 <= MAX_BLOCKS`.
pub(crate) unsafe fn gemm(v: TqRows<'_>, x: QTokens<'_>, out: OutRows<'_>) {
    let clean = v.clean;
    gemm_tiled(v, x, out, |row, toks, sums, res| {
        // SAFETY: the caller guarantees AVX2 + FMA + F16C; gemm_tiled passes whole rows, 1..=4
        // tokens of cols values and their block sums.
        unsafe {
            if clean {
                dots::<true>(row, toks, sums, res)
            } else {
                dots::<false>(row, toks, sums, res)
            }
        }
    });
}
