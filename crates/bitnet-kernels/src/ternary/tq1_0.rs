//! TQ1_0, ggml's 1.6875-bit ternary type: blocks of 256 values, 54 bytes: `qs[48]` (5 trits per
//! byte), `qh[4]` (4 trits per byte), f16 scale `d`.
//!
//! A byte holds its trits as a base-3 fixed-point fraction: for trits `t0..t4` (`t0` most
//! significant, each `value + 1`), `v = sum t_i 3^(4-i)` and the byte is `ceil(v * 256 / 243)`.
//! Trit `i` comes back as `((byte * 3^i) mod 256) * 3 >> 8`. `qh` bytes hold 4 trits shifted up
//! one place (`v * 3`), so the same extraction applies.
//!
//! Value order in a block: `qs[0..32]` hold values `32i + m` (byte `m`, trit `i`, i < 5: values
//! 0..160), `qs[32..48]` hold `160 + 16i + m` (byte `32 + m`: values 160..240), and `qh[j]` holds
//! `240 + 4i + j` (i < 4).

use crate::blocks::{Block, BlockTq1_0};
use crate::error::KernelError;
use crate::operands::{OutRows, QTokens};
use crate::ternary::layout::{block_row_codes, block_row_scales, BlockLayout, Layout};
use crate::ternary::{TernaryFormat, TernaryMatrix};
use half::f16;

/// Values per block.
pub const BLOCK: usize = 256;
/// Bytes per block.
pub const BLOCK_BYTES: usize = BlockTq1_0::BYTES;

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Bytes of a TQ1_0 tensor with `n` values (`n` must be a multiple of 256).
pub fn tensor_bytes(n: usize) -> usize {
    n / BLOCK * BLOCK_BYTES
}

/// (byte, trit) of value `j` in a block.
#[inline]
fn position(j: usize) -> (usize, usize) {
    if j < 160 {
        (j % 32, j / 32)
    } else if j < 240 {
        let k = j - 160;
        (32 + k % 16, k / 16)
    } else {
        let k = j - 240;
        (48 + k % 4, k / 4)
    }
}

/// Trit `i` (0..=2) of a byte.
#[inline]
pub(crate) fn trit(byte: u8, i: usize) -> u8 {
    let q = byte.wrapping_mul(POW3[i]);
    ((u16::from(q) * 3) >> 8) as u8
}

/// Unsigned codes (`value + 1`, 0..=2) of one block's 256 values, in value order.
pub(crate) fn unsigned_block(blk: &[u8], u: &mut [u8]) {
    // Fixed sizes so that the loops vectorize.
    let b = BlockTq1_0::view(blk);
    let Some(u) = u.first_chunk_mut::<256>() else {
        panic!("unsigned_block: a block holds 256 values");
    };
    for i in 0..5 {
        for m in 0..32 {
            u[32 * i + m] = trit(b.qs[m], i);
        }
        for m in 0..16 {
            u[160 + 16 * i + m] = trit(b.qs[32 + m], i);
        }
    }
    for i in 0..4 {
        for j in 0..4 {
            u[240 + 4 * i + j] = trit(b.qh[j], i);
        }
    }
}

/// Packs base-3 digits (most significant first) into a fixed-point byte.
fn pack_trits(trits: &[u8]) -> u8 {
    let mut v = trits.iter().fold(0u16, |acc, &t| acc * 3 + u16::from(t));
    // 4-trit bytes are shifted up one place so every byte is read as 5 trits.
    for _ in trits.len()..5 {
        v *= 3;
    }
    ((v * 256).div_ceil(243)) as u8
}

/// Encodes ternary values with one scale per 256-value block (stored as f16).
pub fn encode(codes: &[i8], block_scales: &[f32]) -> Result<Vec<u8>, KernelError> {
    let nb = check_len(codes.len(), block_scales.len())?;
    let mut out = vec![0u8; nb * BLOCK_BYTES];
    for ((vals, blk), &d) in codes
        .chunks_exact(BLOCK)
        .zip(BlockTq1_0::slice_mut(&mut out))
        .zip(block_scales)
    {
        // Gather the digits of every byte, then pack them.
        let mut digits = [[0u8; 5]; 52];
        for (j, &v) in vals.iter().enumerate() {
            let (byte, i) = position(j);
            digits[byte][i] = crate::ternary::i2s::code_of(v)?;
        }
        for (q, d) in blk.qs.iter_mut().zip(&digits[..48]) {
            *q = pack_trits(&d[..5]);
        }
        for (q, d) in blk.qh.iter_mut().zip(&digits[48..]) {
            *q = pack_trits(&d[..4]);
        }
        blk.d = f16::from_f32(d).to_bits().to_le_bytes();
    }
    Ok(out)
}

/// Decodes a TQ1_0 tensor of `codes.len()` values into -1/0/1 and the per-block scales.
pub fn decode(data: &[u8], codes: &mut [i8], block_scales: &mut [f32]) -> Result<(), KernelError> {
    let nb = check_len(codes.len(), block_scales.len())?;
    let needed = nb * BLOCK_BYTES;
    if data.len() < needed {
        return Err(KernelError::DataTooShort {
            format: "TQ1_0",
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
            "TQ1_0 needs a multiple of {BLOCK} values, got {n}"
        )));
    }
    if n_scales != n / BLOCK {
        return Err(KernelError::Shape(format!(
            "TQ1_0: {n} values need {} block scales, got {n_scales}",
            n / BLOCK
        )));
    }
    Ok(n / BLOCK)
}

/// The block's scale `d`.
#[inline]
pub(crate) fn block_scale(blk: &[u8]) -> f32 {
    BlockTq1_0::view(blk).scale()
}

/// Decodes one block's 256 values to -1/0/1 (in block order); returns its scale.
pub(crate) fn decode_block(blk: &[u8], vals: &mut [i8]) -> f32 {
    let vals = &mut vals[..BLOCK];
    let b = BlockTq1_0::view(blk);
    for i in 0..5 {
        for m in 0..32 {
            vals[32 * i + m] = trit(b.qs[m], i) as i8 - 1;
        }
        for m in 0..16 {
            vals[160 + 16 * i + m] = trit(b.qs[32 + m], i) as i8 - 1;
        }
    }
    for i in 0..4 {
        for j in 0..4 {
            vals[240 + 4 * i + j] = trit(b.qh[j], i) as i8 - 1;
        }
    }
    b.scale()
}

/// For each token `k`: `out[k] = sum_b d_b * (sum_j toks[k][j] * t[j] over block b)`, with
/// integer sums per block and f32 accumulation in block order. Each block is decoded once for all
/// tokens (decoding costs more than the dot).
pub(crate) fn row_dots(row: &[u8], toks: &[&[i8]], out: &mut [f32]) {
    let mut vals = [0i8; BLOCK];
    out.fill(0.0);
    for (b, blk) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let d = decode_block(blk, &mut vals);
        for (o, q) in out.iter_mut().zip(toks) {
            let qb = &q[b * BLOCK..(b + 1) * BLOCK];
            let s: i32 = qb.iter().zip(&vals).map(|(&x, &t)| i32::from(x) * i32::from(t)).sum();
            *o += d * s as f32;
        }
    }
}

/// The TQ1_0 layout. Its only kernel is the scalar one: loaders on SIMD CPUs repack it
/// (`repack.rs`), since decoding base-3 bytes costs more than the dot.
pub(crate) struct Tq1;

impl Layout for Tq1 {
    const FORMAT: TernaryFormat = TernaryFormat::TQ1_0;
    const BLOCK: usize = BLOCK;

    fn row_codes(m: &TernaryMatrix, r: usize, out: &mut [i8]) {
        block_row_codes::<Self>(m, r, out)
    }

    fn row_scales(m: &TernaryMatrix, r: usize, out: &mut [f32]) {
        block_row_scales::<Self>(m, r, out)
    }

    /// Each block is decoded once for a tile of up to four tokens.
    fn gemm_scalar(m: &TernaryMatrix, x: QTokens<'_>, mut out: OutRows<'_>) {
        const T: usize = 4;
        let n = x.n();
        let mut t0 = 0;
        while t0 < n {
            let nt = T.min(n - t0);
            let mut toks: [&[i8]; T] = [&[]; T];
            for (k, tk) in toks.iter_mut().enumerate().take(nt) {
                *tk = x.token(t0 + k, m.cols);
            }
            for i in 0..out.m() {
                let mut acc = [0.0f32; T];
                row_dots(m.row_bytes(out.row0() + i), &toks[..nt], &mut acc[..nt]);
                for (k, (&a, &xs)) in acc.iter().zip(&x.scales[t0..t0 + nt]).enumerate() {
                    out.set(t0 + k, i, a / xs);
                }
            }
            t0 += nt;
        }
    }
}

impl BlockLayout for Tq1 {
    const NAME: &'static str = "TQ1_0";
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trit_pattern_round_trips() {
        for v in 0..243u16 {
            let digits: Vec<u8> = (0..5).map(|i| ((v / 3u16.pow(4 - i)) % 3) as u8).collect();
            let b = pack_trits(&digits);
            for (i, &d) in digits.iter().enumerate() {
                assert_eq!(trit(b, i), d, "v={v} i={i}");
            }
        }
        for v in 0..81u16 {
            let digits: Vec<u8> = (0..4).map(|i| ((v / 3u16.pow(3 - i)) % 3) as u8).collect();
            let b = pack_trits(&digits);
            for (i, &d) in digits.iter().enumerate() {
                assert_eq!(trit(b, i), d, "v={v} i={i}");
            }
        }
    }

    #[test]
    fn known_bytes() {
        // All zeros (trits 1): v = 121, ceil(121 * 256 / 243) = 128 (ggml's all-zero qs byte).
        let enc = encode(&[0; 256], &[1.0]).unwrap();
        assert!(enc[..48].iter().all(|&b| b == 128));
        // qh: 4 trits of 1 -> v = 40, *3 = 120, ceil(120 * 256 / 243) = 127.
        assert!(enc[48..52].iter().all(|&b| b == 127));
        // Value 33 is byte 1, trit 1.
        let mut vals = [0i8; 256];
        vals[33] = 1;
        let enc = encode(&vals, &[1.0]).unwrap();
        assert_eq!(enc[1], ((121u16 + 27) * 256).div_ceil(243) as u8);
        let mut back = [0i8; 256];
        decode_block(&enc, &mut back);
        assert_eq!(back, vals);
    }
}
