//! Q8_0 (ggml): blocks of 32 values, 34 bytes: f16 scale `d`, then 32 int8 `q`; value = `d * q`.

use crate::blocks::{Block, BlockQ8_0};
use crate::float::dot_f32_scalar;
use crate::simd::SimdLevel;
use half::f16;

pub(crate) const BLOCK: usize = 32;
pub(crate) const BLOCK_BYTES: usize = BlockQ8_0::BYTES;

#[inline]
fn scale(blk: &[u8]) -> f32 {
    BlockQ8_0::view(blk).scale()
}

pub(crate) fn dequantize(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
        let b = BlockQ8_0::view(blk);
        let d = b.scale();
        for (v, &q) in o.iter_mut().zip(&b.qs) {
            *v = d * f32::from(q);
        }
    }
}

/// `sum_b d_b * (sum_i q_i * x_i)`.
pub(crate) fn dot(level: SimdLevel, row: &[u8], x: &[f32]) -> f32 {
    assert!(row.len() >= x.len() / BLOCK * BLOCK_BYTES && x.len().is_multiple_of(BLOCK));
    match level {
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx512() => {
            // SAFETY: level is clamped to the CPU (AVX-512 F + F16C present); row holds x.len() / 32
            // blocks of 34 bytes (asserted above).
            unsafe { crate::x86::float_dot::dot_tile_q8_0_avx512::<1>(row.as_ptr(), [x.as_ptr()], x.len())[0] }
        }
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx2() => {
            // SAFETY: level is clamped to the CPU (AVX2 + FMA + F16C present); row holds
            // x.len() / 32 blocks of 34 bytes (asserted above).
            unsafe { crate::x86::float_dot::dot_q8_0_avx2(row.as_ptr(), x) }
        }
        _ => {
            let mut acc = 0.0f32;
            let mut buf = [0.0f32; BLOCK];
            for (blk, xb) in row.chunks_exact(BLOCK_BYTES).zip(x.chunks_exact(BLOCK)) {
                for (v, &q) in buf.iter_mut().zip(&BlockQ8_0::view(blk).qs) {
                    *v = f32::from(q);
                }
                acc += scale(blk) * dot_f32_scalar(&buf, xb);
            }
            acc
        }
    }
}

/// ggml's reference quantizer (`d = max|x| / 127`, `q = round(x / d)`, ties away from zero) of whole
/// blocks: `out` holds `x.len() / 32 * 34` bytes.
pub(crate) fn quantize_into(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(BLOCK).zip(BlockQ8_0::slice_mut(out)) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        ob.d = f16::from_f32(d).to_bits().to_le_bytes();
        for (o, v) in ob.qs.iter_mut().zip(xb) {
            *o = (v * id).round().clamp(-127.0, 127.0) as i8;
        }
    }
}

/// [`quantize_into`] into a new buffer, for tests.
#[cfg(test)]
pub(crate) fn quantize(x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / BLOCK * BLOCK_BYTES];
    quantize_into(x, &mut out);
    out
}
