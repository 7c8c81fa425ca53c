//! I2_S, bitnet.cpp's x86 ternary layout, and our in-memory layout built on it.
//!
//! The matrix (rows = out, cols = in, row-major) is flattened and cut into blocks of 128 values,
//! 32 bytes each: byte `p` of a block holds value `p` in bits 7-6, `p + 32` in bits 5-4, `p + 64`
//! in bits 3-2 and `p + 96` in bits 1-0, as codes `0 = -1, 1 = 0, 2 = +1` (code 3 is never
//! written and reads as 0). After the `n / 4` packed bytes comes one little-endian f32 per-tensor
//! scale and 28 bytes of padding: `n / 4 + 32` bytes in all.
//!
//! When `cols % 128 == 0` every row is a whole number of blocks, so row `r` starts at byte
//! `r * cols / 4`. [`crate::TernaryMatrix::from_codes`] uses the same blocks with each row padded to
//! a multiple of 128 (padding codes are 1 = zero), so one set of kernels serves both.

// The tiled drivers and row views below serve the x86 SIMD kernels; other targets (NEON has no
// kernels yet) only run the scalar paths.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

use crate::blocks::{Block, BlockI2s};
use crate::error::KernelError;
use crate::operands::{OutRows, QTokens};
use crate::simd::SimdLevel;
use crate::ternary::layout::{GemmFn, Layout};
use crate::ternary::tiled::{self, RowView};
use crate::ternary::{TernaryFormat, TernaryMatrix};

/// Values per block.
pub const BLOCK: usize = 128;
/// Bytes per block.
pub const BLOCK_BYTES: usize = BlockI2s::BYTES;
/// Bytes after the packed values: f32 scale + 28 bytes of padding.
pub const TRAILER_BYTES: usize = 32;

/// Weight value of each 2-bit code (code 3 is invalid and reads as 0).
pub(crate) const CODE_VALUE: [i8; 4] = [-1, 0, 1, 0];

/// Bytes of an I2_S tensor with `n` values (`n` must be a multiple of 128 to be valid).
pub fn tensor_bytes(n: usize) -> usize {
    n / 4 + TRAILER_BYTES
}

/// 2-bit code of a ternary value.
#[inline]
pub(crate) fn code_of(v: i8) -> Result<u8, KernelError> {
    match v {
        -1 => Ok(0),
        0 => Ok(1),
        1 => Ok(2),
        _ => Err(KernelError::InvalidData(format!("ternary code {v} is not -1, 0 or 1"))),
    }
}

/// Packs up to 128 values into one 32-byte block; missing values are zeros (code 1).
pub(crate) fn pack_block(vals: &[i8], out: &mut [u8]) -> Result<(), KernelError> {
    debug_assert!(vals.len() <= BLOCK && out.len() == BLOCK_BYTES);
    let code = |j: usize| -> Result<u8, KernelError> { vals.get(j).map_or(Ok(1), |&v| code_of(v)) };
    for (p, o) in out.iter_mut().enumerate() {
        *o = (code(p)? << 6) | (code(p + 32)? << 4) | (code(p + 64)? << 2) | code(p + 96)?;
    }
    Ok(())
}

/// Code of value `j` (0..128) of a 32-byte block.
#[inline]
pub(crate) fn block_code(block: &[u8], j: usize) -> u8 {
    (block[j % 32] >> (6 - 2 * (j / 32))) & 3
}

/// Encodes ternary values (-1/0/1) as an I2_S tensor with per-tensor `scale`:
/// `n / 4` packed bytes, the f32 scale, 28 zero bytes.
pub fn encode(codes: &[i8], scale: f32) -> Result<Vec<u8>, KernelError> {
    if !codes.len().is_multiple_of(BLOCK) {
        return Err(KernelError::Shape(format!(
            "I2_S needs a multiple of {BLOCK} values, got {}",
            codes.len()
        )));
    }
    let nbytes = codes.len() / 4;
    let mut out = vec![0u8; nbytes + TRAILER_BYTES];
    for (vals, blk) in codes
        .chunks_exact(BLOCK)
        .zip(out[..nbytes].chunks_exact_mut(BLOCK_BYTES))
    {
        pack_block(vals, blk)?;
    }
    out[nbytes..nbytes + 4].copy_from_slice(&scale.to_le_bytes());
    Ok(out)
}

/// Decodes an I2_S tensor of `codes.len()` values into -1/0/1 and returns its scale. Needs at least
/// `n / 4 + 4` bytes (the padding after the scale is not read).
pub fn decode(data: &[u8], codes: &mut [i8]) -> Result<f32, KernelError> {
    let n = codes.len();
    if !n.is_multiple_of(BLOCK) {
        return Err(KernelError::Shape(format!(
            "I2_S needs a multiple of {BLOCK} values, got {n}"
        )));
    }
    let scale = read_scale(data, n)?;
    for (blk, vals) in data[..n / 4]
        .chunks_exact(BLOCK_BYTES)
        .zip(codes.chunks_exact_mut(BLOCK))
    {
        decode_block(blk, vals);
    }
    Ok(scale)
}

/// The per-tensor scale that follows the packed bytes of an `n`-value tensor.
pub(crate) fn read_scale(data: &[u8], n: usize) -> Result<f32, KernelError> {
    let needed = n / 4 + 4;
    if data.len() < needed {
        return Err(KernelError::DataTooShort {
            format: "I2_S",
            needed,
            got: data.len(),
        });
    }
    let b = &data[n / 4..n / 4 + 4];
    let scale = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    // A NaN or infinite scale makes every logit NaN (greedy decoding then emits token 0 forever).
    if !scale.is_finite() {
        return Err(KernelError::InvalidData(format!(
            "the I2_S scale is {scale}; a weight scale must be a finite number"
        )));
    }
    Ok(scale)
}

/// Decodes (up to) 128 values of one block.
pub(crate) fn decode_block(blk: &[u8], vals: &mut [i8]) {
    for (j, v) in vals.iter_mut().enumerate() {
        *v = CODE_VALUE[block_code(blk, j) as usize];
    }
}

/// Whether any 2-bit field of `packed` is the invalid code 3. Matrices without it (every file
/// written by a correct converter, and everything `from_codes` builds) run kernels that skip the
/// step neutralizing code 3. One pass over the bytes at load time (about as fast as memory).
pub(crate) fn contains_code3(packed: &[u8]) -> bool {
    const LOW: u64 = 0x5555_5555_5555_5555;
    let mut words = packed.chunks_exact(8);
    // OR-reduce so the loop has no early exit and vectorizes.
    let mut any = 0u64;
    for w in &mut words {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        any |= w & (w >> 1) & LOW;
    }
    let tail = words.remainder().iter().fold(0u8, |a, &b| a | (b & (b >> 1) & 0x55));
    any != 0 || tail != 0
}

/// Row-blocked view of I2_S bytes: row `r` is `stride` bytes at `r * stride`, made of
/// `ceil(cols / 128)` blocks (the last one partial when `cols % 128 != 0`).
#[derive(Clone, Copy)]
pub(crate) struct I2sRows<'a> {
    pub data: &'a [u8],
    pub cols: usize,
    pub stride: usize,
    /// No byte holds the invalid code 3, so SIMD kernels may skip neutralizing it.
    pub clean: bool,
}

impl<'a> I2sRows<'a> {
    /// Bytes per row for `cols` values.
    pub fn stride_for(cols: usize) -> usize {
        cols.div_ceil(BLOCK) * BLOCK_BYTES
    }

    /// Number of complete 128-value blocks per row (what the SIMD loops cover).
    #[inline]
    pub fn full_blocks(&self) -> usize {
        self.cols / BLOCK
    }

    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.stride..(r + 1) * self.stride]
    }

    /// Decodes row `r` to -1/0/1.
    pub fn row_codes(&self, r: usize, out: &mut [i8]) {
        let row = self.row(r);
        for (blk, vals) in row.chunks_exact(BLOCK_BYTES).zip(out[..self.cols].chunks_mut(BLOCK)) {
            decode_block(blk, vals);
        }
    }
}

/// `sum q[j] * t[j]` over the partial last block of a row (zero when `cols % 128 == 0`). Shared by
/// every level so the tail never differs between a kernel and its twin.
#[inline]
pub(crate) fn tail_dot(row: &[u8], cols: usize, q: &[i8]) -> i32 {
    let nb = cols / BLOCK;
    let tail = cols % BLOCK;
    if tail == 0 {
        return 0;
    }
    let blk = &row[nb * BLOCK_BYTES..(nb + 1) * BLOCK_BYTES];
    let qb = &q[nb * BLOCK..nb * BLOCK + tail];
    qb.iter()
        .enumerate()
        .map(|(j, &x)| i32::from(x) * i32::from(CODE_VALUE[block_code(blk, j) as usize]))
        .sum()
}

/// Scalar twin: `sum q[j] * t[j]` over a whole row.
pub(crate) fn row_dot_scalar(row: &[u8], cols: usize, q: &[i8]) -> i32 {
    let nb = cols / BLOCK;
    let mut acc = 0i32;
    for (blk, qb) in row[..nb * BLOCK_BYTES]
        .chunks_exact(BLOCK_BYTES)
        .zip(q[..nb * BLOCK].chunks_exact(BLOCK))
    {
        let mut s = 0i32;
        for p in 0..32 {
            let b = blk[p] as usize;
            s += i32::from(qb[p]) * i32::from(CODE_VALUE[b >> 6])
                + i32::from(qb[p + 32]) * i32::from(CODE_VALUE[(b >> 4) & 3])
                + i32::from(qb[p + 64]) * i32::from(CODE_VALUE[(b >> 2) & 3])
                + i32::from(qb[p + 96]) * i32::from(CODE_VALUE[b & 3]);
        }
        acc += s;
    }
    acc + tail_dot(row, cols, q)
}

impl RowView for I2sRows<'_> {
    fn data(&self) -> &[u8] {
        self.data
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn stride(&self) -> usize {
        self.stride
    }
    fn tiled_cols(&self) -> usize {
        self.full_blocks() * BLOCK
    }
    fn tail_dot(&self, r: usize, q: &[i8]) -> i32 {
        tail_dot(self.row(r), self.cols, q)
    }
    fn row_dot(&self, r: usize, q: &[i8]) -> i32 {
        row_dot_scalar(self.row(r), self.cols, q)
    }
}

/// The I2_S layout (and [`crate::TernaryMatrix::from_codes`]'s padded rows).
pub(crate) struct I2s;

impl Layout for I2s {
    const FORMAT: TernaryFormat = TernaryFormat::I2S;
    const BLOCK: usize = BLOCK;

    fn row_codes(m: &TernaryMatrix, r: usize, out: &mut [i8]) {
        m.i2s_rows().row_codes(r, out)
    }

    fn gemm_scalar(m: &TernaryMatrix, x: QTokens<'_>, out: OutRows<'_>) {
        tiled::gemm_scalar(m.i2s_rows(), m.w_scale(), x, out)
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

#[cfg(target_arch = "x86_64")]
fn gemm_avx512vnni(m: &TernaryMatrix, x: QTokens<'_>, out: OutRows<'_>) {
    // SAFETY: only reachable through `I2s::kernel` for a level clamped to the CPU that includes
    // AVX-512 VNNI; `TernaryMatrix::gemm_with` checked the bounds.
    unsafe { avx512::gemm(m.i2s_rows(), m.w_scale(), x, out) }
}

#[cfg(target_arch = "x86_64")]
fn gemm_avx2(m: &TernaryMatrix, x: QTokens<'_>, out: OutRows<'_>) {
    // SAFETY: only reachable through `I2s::kernel` for a level clamped to the CPU that includes
    // AVX2 + FMA + F16C; `TernaryMatrix::gemm_with` checked the bounds.
    unsafe { avx2::gemm(m.i2s_rows(), m.w_scale(), x, out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_bit_layout() {
        // Value p in bits 7-6, p+32 in 5-4, p+64 in 3-2, p+96 in 1-0.
        let mut vals = [0i8; 128];
        vals[0] = 1; // code 2 -> byte 0 bits 7-6 = 0b10
        vals[32] = -1; // code 0 -> byte 0 bits 5-4 = 0b00
        vals[97] = 1; // code 2 -> byte 1 bits 1-0
        let enc = encode(&vals, 0.5).unwrap();
        assert_eq!(enc.len(), 32 + 32);
        assert_eq!(enc[0], 0b10_00_01_01);
        assert_eq!(enc[1], 0b01_01_01_10);
        assert_eq!(enc[2], 0b01_01_01_01);
        assert_eq!(&enc[32..36], &0.5f32.to_le_bytes());
        assert!(enc[36..].iter().all(|&b| b == 0));
    }

    #[test]
    fn code_three_reads_as_zero() {
        let mut data = vec![0xFFu8; 32];
        data.extend_from_slice(&1.0f32.to_le_bytes());
        let mut out = [9i8; 128];
        assert_eq!(decode(&data, &mut out).unwrap(), 1.0);
        assert!(out.iter().all(|&v| v == 0));
    }

    #[test]
    fn code3_scan() {
        assert!(!contains_code3(&[0b10_01_00_10; 37]));
        for len in [1usize, 7, 8, 9, 40] {
            for pos in 0..len {
                for field in 0..4 {
                    let mut v = vec![0b10_01_00_10u8; len];
                    v[pos] |= 3 << (2 * field);
                    assert!(contains_code3(&v), "len {len} pos {pos} field {field}");
                }
            }
        }
    }

    #[test]
    fn errors() {
        assert!(matches!(encode(&[0; 100], 1.0), Err(KernelError::Shape(_))));
        assert!(matches!(encode(&[2; 128], 1.0), Err(KernelError::InvalidData(_))));
        let mut out = [0i8; 128];
        assert!(matches!(
            decode(&[0; 35], &mut out),
            Err(KernelError::DataTooShort { needed: 36, .. })
        ));
    }
}
