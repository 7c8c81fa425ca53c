//! Q6_K (ggml): blocks of 256 values, 210 bytes: `ql[128]` (low 4 bits), `qh[64]` (high 2 bits),
//! int8 `scales[16]` (one per 16 values), f16 `d`. Value = `d * scale * (q - 32)`, q in 0..64.
//!
//! Each 128-value half uses 64 `ql`, 32 `qh` and 8 scales. For `l < 32` in a half: value `l` is
//! `ql[l] & 15 | (qh[l] & 3) << 4`, value `l + 32` is `ql[l + 32] & 15 | (qh[l] >> 2 & 3) << 4`,
//! value `l + 64` is `ql[l] >> 4 | (qh[l] >> 4 & 3) << 4`, value `l + 96` is
//! `ql[l + 32] >> 4 | (qh[l] >> 6) << 4`; value `v` uses scale `v / 16`.

use crate::blocks::{f16_le, Block, BlockQ6K};
use crate::float::{dot_f32_scalar, dot_f32_slices};
use crate::simd::SimdLevel;

pub(crate) const BLOCK: usize = 256;
pub(crate) const BLOCK_BYTES: usize = BlockQ6K::BYTES;

pub(crate) fn dequantize_block(blk: &[u8], out: &mut [f32]) {
    let b = BlockQ6K::view(blk);
    let (ql, qh, sc) = (&b.ql, &b.qh, &b.scales);
    let d = f16_le(b.d);
    for h in 0..2 {
        let (ql, qh, sc, y) = (&ql[64 * h..], &qh[32 * h..], &sc[8 * h..], &mut out[128 * h..]);
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) << 4)) as i32 - 32;
            // Same association as ggml: (d * scale) * q.
            y[l] = d * f32::from(sc[is]) * q1 as f32;
            y[l + 32] = d * f32::from(sc[is + 2]) * q2 as f32;
            y[l + 64] = d * f32::from(sc[is + 4]) * q3 as f32;
            y[l + 96] = d * f32::from(sc[is + 6]) * q4 as f32;
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

/// Builds a block from its integer fields (`q` in 0..64), the inverse of [`dequantize_block`]'s
/// bit layout; for tests.
#[cfg(test)]
pub(crate) fn encode_block(d: f32, scales: &[i8; 16], q: &[u8; 256]) -> Vec<u8> {
    use half::f16;
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for h in 0..2 {
        let qv = &q[128 * h..];
        for l in 0..32 {
            ql[64 * h + l] = (qv[l] & 0xF) | ((qv[l + 64] & 0xF) << 4);
            ql[64 * h + l + 32] = (qv[l + 32] & 0xF) | ((qv[l + 96] & 0xF) << 4);
            qh[32 * h + l] =
                (qv[l] >> 4) | ((qv[l + 32] >> 4) << 2) | ((qv[l + 64] >> 4) << 4) | ((qv[l + 96] >> 4) << 6);
        }
    }
    let mut out = Vec::with_capacity(BLOCK_BYTES);
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(scales.iter().map(|&s| s as u8));
    out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
    out
}
