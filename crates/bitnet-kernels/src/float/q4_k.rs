//! Q4_K (ggml): blocks of 256 values, 144 bytes: f16 `d`, f16 `dmin`, `scales[12]` (eight 6-bit
//! scales and eight 6-bit mins), `qs[128]` (4-bit values). Value = `d * sc_j * q - dmin * m_j` for
//! sub-block `j` of 32 values.
//!
//! Each 64 values use 32 `qs` bytes: the low nibbles are sub-block `2k`, the high nibbles `2k + 1`.
//! Scales/mins: for `j < 4`, `sc = s[j] & 63`, `m = s[j + 4] & 63`; for `j >= 4`,
//! `sc = s[j + 4] & 15 | (s[j - 4] >> 6) << 4`, `m = s[j + 4] >> 4 | (s[j] >> 6) << 4`.

use crate::blocks::{f16_le, Block, BlockQ4K};
use crate::float::{dot_f32_scalar, dot_f32_slices};
use crate::simd::SimdLevel;

pub(crate) const BLOCK: usize = 256;
pub(crate) const BLOCK_BYTES: usize = BlockQ4K::BYTES;

/// (scale, min) of sub-block `j` (0..8).
#[inline]
fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

pub(crate) fn dequantize_block(blk: &[u8], out: &mut [f32]) {
    let b = BlockQ4K::view(blk);
    let (d, dmin) = (f16_le(b.d), f16_le(b.dmin));
    let (s, qs) = (&b.scales, &b.qs);
    for k in 0..4 {
        let (sc1, m1) = scale_min(2 * k, s);
        let (sc2, m2) = scale_min(2 * k + 1, s);
        let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let q = &qs[32 * k..32 * k + 32];
        let y = &mut out[64 * k..64 * k + 64];
        for l in 0..32 {
            y[l] = d1 * f32::from(q[l] & 0xF) - m1;
            y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// Dequantizes each block to the stack and dots it with `x` (f32 partial sums per block).
pub(crate) fn dot(level: SimdLevel, row: &[u8], x: &[f32]) -> f32 {
    let mut buf = [0.0f32; BLOCK];
    let mut acc = 0.0f32;
    for (blk, xb) in row.chunks_exact(BLOCK_BYTES).zip(x.chunks_exact(BLOCK)) {
        dequantize_block(blk, &mut buf);
        acc += match level {
            SimdLevel::Scalar | SimdLevel::Neon => dot_f32_scalar(&buf, xb),
            _ => dot_f32_slices(level, &buf, xb),
        };
    }
    acc
}

/// Builds a block from its integer fields (6-bit `sc`/`m`, 4-bit `q`); for tests.
#[cfg(test)]
pub(crate) fn encode_block(d: f32, dmin: f32, sc: &[u8; 8], m: &[u8; 8], q: &[u8; 256]) -> Vec<u8> {
    use half::f16;
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = sc[j];
            s[j + 4] = m[j];
        } else {
            s[j + 4] = (sc[j] & 0xF) | ((m[j] & 0xF) << 4);
            s[j - 4] |= (sc[j] >> 4) << 6;
            s[j] |= (m[j] >> 4) << 6;
        }
    }
    let mut out = Vec::with_capacity(BLOCK_BYTES);
    out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
    out.extend_from_slice(&f16::from_f32(dmin).to_bits().to_le_bytes());
    out.extend_from_slice(&s);
    for k in 0..4 {
        for l in 0..32 {
            out.push(q[64 * k + l] | (q[64 * k + 32 + l] << 4));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_round_trip() {
        let sc = [1, 63, 17, 32, 5, 63, 40, 2];
        let m = [63, 0, 9, 33, 62, 1, 48, 31];
        let blk = encode_block(1.0, 1.0, &sc, &m, &[0; 256]);
        for j in 0..8 {
            assert_eq!(scale_min(j, &blk[4..16]), (sc[j], m[j]), "j={j}");
        }
    }
}
