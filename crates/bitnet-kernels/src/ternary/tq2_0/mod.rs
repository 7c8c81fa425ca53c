//! TQ2_0, ggml's 2-bit ternary type: blocks of 256 values along each row, 66 bytes each:
//! `qs[64]` then an f16 scale `d`. Value `128h + 32l + m` (`h < 2, l < 4, m < 32`) is bits
//! `2l..2l+1` of `qs[32h + m]`, as code `c` meaning `(c - 1) * d` (code 3 never written; read as 0).

// The tiled drivers and row views below serve the x86 SIMD kernels; other targets (NEON has no
// kernels yet) only run the scalar paths.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

use crate::blocks::{Block, BlockTq1_0, BlockTq2_0};
use crate::bytes::Bytes;
use crate::error::KernelError;
use crate::operands::{OutRows, QTokens};
use crate::simd::SimdLevel;
use crate::ternary::i2s::{code_of, CODE_VALUE};
use crate::ternary::layout::{block_row_codes, block_row_scales, BlockLayout, GemmFn, Layout};
use crate::ternary::tiled::CHUNK_BYTES;
use crate::ternary::tq1_0;
use crate::ternary::{TernaryFormat, TernaryMatrix};
use half::f16;

/// Values per block.
pub const BLOCK: usize = 256;
/// Bytes per block.
pub const BLOCK_BYTES: usize = BlockTq2_0::BYTES;

/// Bytes of a TQ2_0 tensor with `n` values (`n` must be a multiple of 256).
pub fn tensor_bytes(n: usize) -> usize {
    n / BLOCK * BLOCK_BYTES
}

/// Index into the block of value `j`: (byte, shift).
#[inline]
fn position(j: usize) -> (usize, u32) {
    let (h, l, m) = (j / 128, (j % 128) / 32, j % 32);
    (32 * h + m, 2 * l as u32)
}

/// Encodes ternary values with one scale per 256-value block (`block_scales.len() == n / 256`,
/// stored as f16).
pub fn encode(codes: &[i8], block_scales: &[f32]) -> Result<Vec<u8>, KernelError> {
    let nb = check_len(codes.len(), block_scales.len())?;
    let mut out = vec![0u8; nb * BLOCK_BYTES];
    for ((vals, blk), &d) in codes
        .chunks_exact(BLOCK)
        .zip(BlockTq2_0::slice_mut(&mut out))
        .zip(block_scales)
    {
        for (j, &v) in vals.iter().enumerate() {
            let (byte, shift) = position(j);
            blk.qs[byte] |= code_of(v)? << shift;
        }
        blk.d = f16::from_f32(d).to_bits().to_le_bytes();
    }
    Ok(out)
}

/// Decodes a TQ2_0 tensor of `codes.len()` values into -1/0/1 and the per-block scales.
pub fn decode(data: &[u8], codes: &mut [i8], block_scales: &mut [f32]) -> Result<(), KernelError> {
    let nb = check_len(codes.len(), block_scales.len())?;
    let needed = nb * BLOCK_BYTES;
    if data.len() < needed {
        return Err(KernelError::DataTooShort {
            format: "TQ2_0",
            needed,
            got: data.len(),
        });
    }
    for ((blk, vals), d) in data
        .chunks_exact(BLOCK_BYTES)
        .zip(codes.chunks_exact_mut(BLOCK))
        .zip(block_scales)
    {
        *d = decode_block(blk, vals);
    }
    Ok(())
}

fn check_len(n: usize, n_scales: usize) -> Result<usize, KernelError> {
    if !n.is_multiple_of(BLOCK) {
        return Err(KernelError::Shape(format!(
            "TQ2_0 needs a multiple of {BLOCK} values, got {n}"
        )));
    }
    if n_scales != n / BLOCK {
        return Err(KernelError::Shape(format!(
            "TQ2_0: {n} values need {} block scales, got {n_scales}",
            n / BLOCK
        )));
    }
    Ok(n / BLOCK)
}

/// The block's scale `d`.
#[inline]
pub(crate) fn block_scale(blk: &[u8]) -> f32 {
    BlockTq2_0::view(blk).scale()
}

/// Unsigned codes (`value + 1`, 0..=2; the invalid code 3 reads as zero, 1) of one block's 256
/// values, in value order.
pub(crate) fn unsigned_block(blk: &[u8], u: &mut [u8]) {
    // Fixed sizes and arithmetic instead of a table, so that the loops vectorize.
    let qs = &BlockTq2_0::view(blk).qs;
    let Some(u) = u.first_chunk_mut::<256>() else {
        panic!("unsigned_block: a block holds 256 values");
    };
    for h in 0..2 {
        for l in 0..4 {
            for m in 0..32 {
                let x = (qs[32 * h + m] >> (2 * l)) & 3;
                // Code 3 -> 1: clear the high bit when both bits are set.
                u[128 * h + 32 * l + m] = x & !((x & (x >> 1)) << 1);
            }
        }
    }
}

/// Packs one block's unsigned codes (0..=2, value order) and its f16 scale bits into TQ2_0's 66
/// bytes (`out` zeroed by the caller).
pub(crate) fn pack_unsigned_block(u: &[u8], d_bits: [u8; 2], out: &mut [u8]) {
    let Some(u) = u.first_chunk::<256>() else {
        panic!("pack_unsigned_block: a block holds 256 values");
    };
    let blk = &mut BlockTq2_0::slice_mut(out)[0];
    for h in 0..2 {
        for m in 0..32 {
            let v = &u[128 * h + m..];
            blk.qs[32 * h + m] = v[0] | v[32] << 2 | v[64] << 4 | v[96] << 6;
        }
    }
    blk.d = d_bits;
}

/// Decodes one block's 256 values; returns its scale.
pub(crate) fn decode_block(blk: &[u8], vals: &mut [i8]) -> f32 {
    let b = BlockTq2_0::view(blk);
    for (j, v) in vals.iter_mut().enumerate().take(BLOCK) {
        let (byte, shift) = position(j);
        *v = CODE_VALUE[((b.qs[byte] >> shift) & 3) as usize];
    }
    b.scale()
}

/// `sum q[j] * t[j]` over one block (scalar twin of the SIMD block dots).
#[inline]
pub(crate) fn block_dot_scalar(blk: &[u8], q: &[i8]) -> i32 {
    let qs = &BlockTq2_0::view(blk).qs;
    let mut s = 0i32;
    for h in 0..2 {
        for m in 0..32 {
            let b = qs[32 * h + m] as usize;
            let qh = &q[128 * h + m..];
            s += i32::from(qh[0]) * i32::from(CODE_VALUE[b & 3])
                + i32::from(qh[32]) * i32::from(CODE_VALUE[(b >> 2) & 3])
                + i32::from(qh[64]) * i32::from(CODE_VALUE[(b >> 4) & 3])
                + i32::from(qh[96]) * i32::from(CODE_VALUE[b >> 6]);
        }
    }
    s
}

/// `sum_b d_b * dot_b` over a row, accumulated in f32 in block order.
pub(crate) fn row_dot_scalar(row: &[u8], q: &[i8]) -> f32 {
    row.chunks_exact(BLOCK_BYTES)
        .zip(q.chunks_exact(BLOCK))
        .fold(0.0f32, |acc, (blk, qb)| {
            acc + block_scale(blk) * block_dot_scalar(blk, qb) as f32
        })
}

/// Row view of a TQ2_0 matrix.
#[derive(Clone, Copy)]
pub(crate) struct TqRows<'a> {
    pub data: &'a [u8],
    pub cols: usize,
    pub stride: usize,
    /// No code 3 in the packed values.
    pub clean: bool,
}

/// Most blocks per row the SIMD kernels handle (their per-block activation sums live on the
/// stack: 8 KiB); longer rows use the scalar kernel.
pub(crate) const MAX_BLOCKS: usize = 512;
/// Tokens per SIMD tile (the per-tensor-scaled driver's tile width).
pub(crate) const TILE_TOKENS: usize = crate::ternary::tiled::TILE_TOKENS;
/// `sums[k][b]`: sum of token `k`'s activations in block `b`.
pub(crate) type BlockSums = [[i32; MAX_BLOCKS]; TILE_TOKENS];

/// Shared loop nest of the SIMD levels. `dots(row, toks, sums, res)` must set
/// `res[k] = sum_b d_b * (sum_j toks[k][j] * t[j] over block b)` for one row (`t = code - 1`,
/// using `sums` for the `-1`). Writes `res / x_scale` for each row of `out`. Chunks of rows stay
/// in cache (the same [`CHUNK_BYTES`] as the per-tensor-scaled driver) while the token tiles pass.
pub(crate) fn gemm_tiled(
    v: TqRows<'_>,
    x: QTokens<'_>,
    mut out: OutRows<'_>,
    mut dots: impl FnMut(&[u8], &[&[i8]], &BlockSums, &mut [f32; TILE_TOKENS]),
) {
    let (q, x_scales) = (x.q, x.scales);
    let (row0, m) = (out.row0(), out.m());
    let cols = v.cols;
    assert!(cols / BLOCK <= MAX_BLOCKS);
    let n = x_scales.len();
    let mut sums: BlockSums = [[0; MAX_BLOCKS]; TILE_TOKENS];
    let mut res = [0f32; TILE_TOKENS];
    let chunk_rows = (CHUNK_BYTES / v.stride.max(1)).max(1);
    let mut c0 = 0;
    while c0 < m {
        let c1 = m.min(c0 + chunk_rows);
        let mut t0 = 0;
        while t0 < n {
            let nt = TILE_TOKENS.min(n - t0);
            let mut toks: [&[i8]; TILE_TOKENS] = [&[]; TILE_TOKENS];
            for k in 0..nt {
                toks[k] = &q[(t0 + k) * cols..(t0 + k + 1) * cols];
                for (s, qb) in sums[k].iter_mut().zip(toks[k].chunks_exact(BLOCK)) {
                    *s = qb.iter().map(|&x| i32::from(x)).sum();
                }
            }
            for i in c0..c1 {
                let r = row0 + i;
                dots(&v.data[r * v.stride..(r + 1) * v.stride], &toks[..nt], &sums, &mut res);
                for k in 0..nt {
                    out.set(t0 + k, i, res[k] / x_scales[t0 + k]);
                }
            }
            t0 += nt;
        }
        c0 = c1;
    }
}

/// The TQ2_0 layout.
pub(crate) struct Tq2;

impl Layout for Tq2 {
    const FORMAT: TernaryFormat = TernaryFormat::TQ2_0;
    const BLOCK: usize = BLOCK;

    fn row_codes(m: &TernaryMatrix, r: usize, out: &mut [i8]) {
        block_row_codes::<Self>(m, r, out)
    }

    fn row_scales(m: &TernaryMatrix, r: usize, out: &mut [f32]) {
        block_row_scales::<Self>(m, r, out)
    }

    fn gemm_scalar(m: &TernaryMatrix, x: QTokens<'_>, mut out: OutRows<'_>) {
        for (t, &xs) in x.scales.iter().enumerate() {
            let qt = x.token(t, m.cols);
            for i in 0..out.m() {
                out.set(t, i, row_dot_scalar(m.row_bytes(out.row0() + i), qt) / xs);
            }
        }
    }

    /// TQ1_0 matrices. See [`TernaryMatrix::to_tq2_0`].
    fn repack_from(src: &TernaryMatrix) -> Option<TernaryMatrix> {
        if src.format() != TernaryFormat::TQ1_0 {
            return None;
        }
        let nb = src.cols / tq1_0::BLOCK;
        let stride = nb * BLOCK_BYTES;
        let mut data = vec![0u8; src.rows * stride];
        let rows_per_task = (1 << 20) / stride.max(1) + 1;
        crate::pool::for_each_chunk_mut(&mut data, rows_per_task * stride, |i, out| {
            let mut u = [0u8; tq1_0::BLOCK];
            for (k, o) in out.chunks_exact_mut(stride).enumerate() {
                let row = src.row_bytes(i * rows_per_task + k);
                for (blk, ob) in row
                    .chunks_exact(tq1_0::BLOCK_BYTES)
                    .zip(o.chunks_exact_mut(BLOCK_BYTES))
                {
                    tq1_0::unsigned_block(blk, &mut u);
                    pack_unsigned_block(&u, BlockTq1_0::view(blk).d, ob);
                }
            }
        });
        Some(TernaryMatrix::with_layout::<Tq2>(
            src.rows,
            src.cols,
            stride,
            None,
            true,
            Bytes::from_vec(data),
        ))
    }

    fn kernel(level: SimdLevel) -> GemmFn {
        #[cfg(target_arch = "x86_64")]
        {
            if level.has_avx512_vnni() {
                return gemm_avx512vnni;
            }
            if level.has_avx2() {
                return gemm_avx2;
            }
        }
        let _ = level;
        Self::gemm_scalar
    }
}

impl BlockLayout for Tq2 {
    const NAME: &'static str = "TQ2_0";
    const BLOCK_BYTES: usize = BLOCK_BYTES;
    fn block_scale(blk: &[u8]) -> f32 {
        block_scale(blk)
    }
    fn unsigned_block(blk: &[u8], u: &mut [u8]) {
        unsigned_block(blk, u)
    }
    fn decode_block(blk: &[u8], vals: &mut [i8]) {
        decode_block(blk, vals);
    }
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn rows_of(m: &TernaryMatrix) -> TqRows<'_> {
    TqRows {
        clean: m.clean,
        data: &m.data[..m.rows * m.stride],
        cols: m.cols,
        stride: m.stride,
    }
}

#[cfg(target_arch = "x86_64")]
fn gemm_avx512vnni(m: &TernaryMatrix, x: QTokens<'_>, out: OutRows<'_>) {
    if m.cols / BLOCK > MAX_BLOCKS {
        return Tq2::gemm_scalar(m, x, out);
    }
    // SAFETY: only reachable through `Tq2::kernel` for a level clamped to the CPU that includes
    // AVX-512 VNNI; `TernaryMatrix::gemm_with` checked the bounds; the row fits the block table.
    unsafe { avx512::gemm(rows_of(m), x, out) }
}

#[cfg(target_arch = "x86_64")]
fn gemm_avx2(m: &TernaryMatrix, x: QTokens<'_>, out: OutRows<'_>) {
    if m.cols / BLOCK > MAX_BLOCKS {
        return Tq2::gemm_scalar(m, x, out);
    }
    // SAFETY: only reachable through `Tq2::kernel` for a level clamped to the CPU that includes
    // AVX2 + FMA + F16C; `TernaryMatrix::gemm_with` checked the bounds; the row fits the table.
    unsafe { avx2::gemm(rows_of(m), x, out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_positions() {
        // Element 128h + 32l + m sits in bits 2l of qs[32h + m].
        let mut vals = [0i8; 256];
        vals[128 + 64 + 5] = 1; // h=1, l=2, m=5 -> qs[37] bits 4-5 = code 2
        vals[3] = -1; // h=0, l=0, m=3 -> qs[3] bits 0-1 = code 0
        let enc = encode(&vals, &[2.0]).unwrap();
        assert_eq!(enc.len(), 66);
        assert_eq!(enc[37], 0b01_10_01_01);
        assert_eq!(enc[3], 0b01_01_01_00);
        assert_eq!(enc[0], 0b01_01_01_01);
        assert_eq!(block_scale(&enc), 2.0);
    }

    #[test]
    fn errors() {
        assert!(encode(&[0; 255], &[1.0]).is_err());
        assert!(encode(&[0; 256], &[1.0, 2.0]).is_err());
        let mut c = [0i8; 256];
        let mut d = [0f32; 1];
        assert!(matches!(
            decode(&[0; 65], &mut c, &mut d),
            Err(KernelError::DataTooShort { .. })
        ));
    }
}
