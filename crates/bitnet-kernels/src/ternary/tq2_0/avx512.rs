//! AVX-512 VNNI TQ2_0 kernel: the I2_S broadcast trick applied to TQ2_0's plane order. Each
//! 32-byte half-block is broadcast to both halves of a zmm register and shifted per 16-bit lane by
//! 0 / 2 and 4 / 6, so each code vector lines up with 64 contiguous activations; four `vpdpbusd`
//! give a block's i32 lanes, from which the block's activation sum is subtracted (`t = code - 1`)
//! before one FMA by the block scale.

use crate::blocks::{Block, BlockTq2_0};
use crate::operands::{OutRows, QTokens};
use crate::ternary::tq2_0::{gemm_tiled, BlockSums, TqRows, BLOCK, BLOCK_BYTES, MAX_BLOCKS, TILE_TOKENS};
use crate::x86::sanitize_codes_vl;
use core::arch::x86_64::*;

/// # Safety
/// AVX-512 F/BW/VL + VNNI (and F16C) available. (Bounds are asserted on entry.)
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn row_tile<const TT: usize, const CLEAN: bool>(
    row: &[u8],
    toks: &[&[i8]],
    sums: &BlockSums,
    out: &mut [f32; TILE_TOKENS],
) {
    let nb = row.len() / BLOCK_BYTES;
    assert!(toks.len() == TT && TT <= TILE_TOKENS && nb <= MAX_BLOCKS);
    assert!(toks.iter().all(|t| t.len() >= nb * BLOCK));
    let m3 = _mm512_set1_epi8(3);
    // Low half of a code vector: plane 0 (resp. 2); high half: plane 1 (resp. 3).
    let sh_a = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
    let sh_b = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm256_set1_epi16(4)), _mm256_set1_epi16(6));
    let mut acc = [_mm512_setzero_ps(); TT];
    let blocks = BlockTq2_0::slice(row);
    for b in 0..nb {
        let block = &blocks[b];
        let blk = block.qs.as_ptr();
        let d_bits = i16::from_le_bytes(block.d);
        let d = _mm512_cvtph_ps(_mm256_set1_epi16(d_bits));
        let mut c = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            // SAFETY: bytes 32h .. 32h + 32 (h < 2) of the block's 64 code bytes.
            let w = unsafe { _mm256_loadu_si256(blk.add(32 * h).cast()) };
            let wz = _mm512_broadcast_i64x4(if CLEAN { w } else { sanitize_codes_vl(w) });
            // c[2h] pairs with values 128h .. 128h + 64, c[2h + 1] with 128h + 64 .. 128h + 128.
            c[2 * h] = _mm512_and_si512(_mm512_srlv_epi16(wz, sh_a), m3);
            c[2 * h + 1] = _mm512_and_si512(_mm512_srlv_epi16(wz, sh_b), m3);
        }
        for (k, a) in acc.iter_mut().enumerate() {
            let p = toks[k].as_ptr();
            // The block's sum enters negated in lane 0, so the dots give sum q * (code - 1).
            let mut s = _mm512_maskz_set1_epi32(1, -sums[k][b]);
            for (j, &cj) in c.iter().enumerate() {
                // SAFETY: values 256b + 64j .. + 64 are inside the token (asserted).
                let qv = unsafe { _mm512_loadu_si512(p.add(b * BLOCK + 64 * j).cast()) };
                s = _mm512_dpbusd_epi32(s, cj, qv);
            }
            *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, *a);
        }
    }
    for (o, &a) in out.iter_mut().zip(&acc) {
        *o = _mm512_reduce_add_ps(a);
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
/// AVX-512 F/BW/VL + VNNI available; the bounds of `TernaryMatrix::gemm` hold;
/// `cols / 256 <= MAX_BLOCKS`.
pub(crate) unsafe fn gemm(v: TqRows<'_>, x: QTokens<'_>, out: OutRows<'_>) {
    let clean = v.clean;
    gemm_tiled(v, x, out, |row, toks, sums, res| {
        // SAFETY: the caller guarantees AVX-512 VNNI; gemm_tiled passes whole rows, 1..=4 tokens
        // of cols values and their block sums.
        unsafe {
            if clean {
                dots::<true>(row, toks, sums, res)
            } else {
                dots::<false>(row, toks, sums, res)
            }
        }
    });
}
