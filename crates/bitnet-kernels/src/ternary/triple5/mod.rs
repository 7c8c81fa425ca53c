//! Triple5: our load-time layout for per-tensor-scaled ternary weights, three values in five bits
//! (1.67 bits per weight against I2_S's 2). Decoding is bound by memory bandwidth, so 17% fewer
//! bytes per token is 17% less time in the projections, provided decoding stays cheap: on AVX-512
//! VBMI it takes 5 instructions per 192 weights (see `x86/triple5_avx512.rs`), fewer per weight than
//! splitting I2_S's 2-bit planes.
//!
//! A row of `cols` values (`cols % 64 == 0`) is `cols / 192` blocks of 192 values, then
//! `(cols % 192) / 64` tail units of 64 values. With `u = t + 1` (0..=2) the unsigned code of value
//! `t`:
//! - a block (40 bytes) packs triple `i` (0..64), the values `i`, `i + 64` and `i + 128`, as
//!   `c = u[i] + 3 u[i + 64] + 9 u[i + 128]` (0..=26) in bits `5i .. 5i + 5` of the block read as
//!   one 320-bit little-endian number;
//! - a tail unit (16 bytes) holds `u[16 l + p]` in bits `2l .. 2l + 2` of byte `p` (`l` < 4).
//!
//! Rows follow each other without gaps and the buffer ends with [`PAD`] zero bytes, so a kernel may
//! load 64 bytes at any block. Only [`crate::TernaryMatrix::to_triple5`] writes this layout, never a file.

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

use crate::bytes::Bytes;
use crate::operands::{OutRows, QTokens};
use crate::simd::simd_level;
use crate::simd::SimdLevel;
use crate::ternary::i2s;
use crate::ternary::i2s::I2sRows;
use crate::ternary::layout::{shared_block_scale, unsigned_row, GemmFn, Layout};
use crate::ternary::tiled::{self, RowView};
use crate::ternary::tq1_0::Tq1;
use crate::ternary::tq2_0::Tq2;
use crate::ternary::{TernaryFormat, TernaryMatrix};

/// Values per block.
pub const BLOCK: usize = 192;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 40;
/// Values per tail unit.
pub const UNIT: usize = 64;
/// Bytes per tail unit.
pub const UNIT_BYTES: usize = 16;
/// Zero bytes after the last row.
pub const PAD: usize = 64;

/// `u` of each digit position of a 5-bit code (codes 27..=31 never occur; they read as zeros).
pub(crate) const DIGITS: [[u8; 32]; 3] = {
    let mut t = [[1u8; 32]; 3];
    let mut c = 0;
    while c < 27 {
        t[0][c] = (c % 3) as u8;
        t[1][c] = (c / 3 % 3) as u8;
        t[2][c] = (c / 9) as u8;
        c += 1;
    }
    t
};

/// Bytes per row of `cols` values (`cols % 64 == 0`).
pub fn stride_for(cols: usize) -> usize {
    cols / BLOCK * BLOCK_BYTES + cols % BLOCK / UNIT * UNIT_BYTES
}

/// The 5-bit code of triple `i` (0..64) of a block.
#[inline]
pub(crate) fn triple_code(blk: &[u8], i: usize) -> usize {
    let bit = 5 * i;
    let lo = usize::from(blk[bit / 8]);
    // Bits 5i .. 5i + 5 span two bytes at most; the second exists whenever they do span it.
    let hi = blk.get(bit / 8 + 1).map_or(0, |&b| usize::from(b));
    ((lo | hi << 8) >> (bit % 8)) & 31
}

/// Packs one row of unsigned codes (`u.len() == cols`, every value 0..=2) into `out`
/// (`stride_for(cols)` bytes).
pub(crate) fn pack_row(u: &[u8], out: &mut [u8]) {
    let nb = u.len() / BLOCK;
    let (blocks, tail) = out.split_at_mut(nb * BLOCK_BYTES);
    for (ub, ob) in u.chunks_exact(BLOCK).zip(blocks.chunks_exact_mut(BLOCK_BYTES)) {
        let mut bits = [0u64; 5];
        for i in 0..64 {
            let c = u64::from(ub[i] + 3 * ub[i + 64] + 9 * ub[i + 128]);
            let bit = 5 * i;
            bits[bit / 64] |= c << (bit % 64);
            if bit % 64 > 59 {
                bits[bit / 64 + 1] |= c >> (64 - bit % 64);
            }
        }
        for (o, w) in ob.chunks_exact_mut(8).zip(bits) {
            o.copy_from_slice(&w.to_le_bytes());
        }
    }
    pack_tail(&u[nb * BLOCK..], tail);
}

/// Packs the tail units of a row (`u` holds the values after the last block).
pub(crate) fn pack_tail(u: &[u8], out: &mut [u8]) {
    for (uu, ot) in u.chunks_exact(UNIT).zip(out.chunks_exact_mut(UNIT_BYTES)) {
        for (p, o) in ot.iter_mut().enumerate() {
            *o = uu[p] | uu[16 + p] << 2 | uu[32 + p] << 4 | uu[48 + p] << 6;
        }
    }
}

/// Row-blocked view of Triple5 bytes.
#[derive(Clone, Copy)]
pub(crate) struct Triple5Rows<'a> {
    /// Every row, then at least [`PAD`] more bytes.
    pub data: &'a [u8],
    pub cols: usize,
    pub stride: usize,
}

impl<'a> Triple5Rows<'a> {
    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.stride..(r + 1) * self.stride]
    }

    /// Decodes row `r` to -1/0/1.
    pub fn row_codes(&self, r: usize, out: &mut [i8]) {
        let row = self.row(r);
        let nb = self.cols / BLOCK;
        for (b, blk) in row[..nb * BLOCK_BYTES].chunks_exact(BLOCK_BYTES).enumerate() {
            let o = &mut out[b * BLOCK..(b + 1) * BLOCK];
            for i in 0..64 {
                let c = triple_code(blk, i);
                for (d, digits) in DIGITS.iter().enumerate() {
                    o[i + 64 * d] = digits[c] as i8 - 1;
                }
            }
        }
        let units = row[nb * BLOCK_BYTES..].chunks_exact(UNIT_BYTES);
        for (unit, o) in units.zip(out[nb * BLOCK..self.cols].chunks_exact_mut(UNIT)) {
            for (j, v) in o.iter_mut().enumerate() {
                *v = ((unit[j % 16] >> (2 * (j / 16))) & 3) as i8 - 1;
            }
        }
    }
}

impl RowView for Triple5Rows<'_> {
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
        self.cols
    }
    fn tail_dot(&self, _r: usize, _q: &[i8]) -> i32 {
        0
    }
    fn row_dot(&self, r: usize, q: &[i8]) -> i32 {
        row_dot_scalar(self.row(r), self.cols, q)
    }
}

/// Scalar twin: `sum q[j] * t[j]` over a whole row.
pub(crate) fn row_dot_scalar(row: &[u8], cols: usize, q: &[i8]) -> i32 {
    let nb = cols / BLOCK;
    let mut acc = 0i32;
    for (blk, qb) in row[..nb * BLOCK_BYTES]
        .chunks_exact(BLOCK_BYTES)
        .zip(q.chunks_exact(BLOCK))
    {
        for i in 0..64 {
            let c = triple_code(blk, i);
            for (d, digits) in DIGITS.iter().enumerate() {
                acc += i32::from(qb[i + 64 * d]) * (i32::from(digits[c]) - 1);
            }
        }
    }
    let units = row[nb * BLOCK_BYTES..].chunks_exact(UNIT_BYTES);
    for (unit, qu) in units.zip(q[nb * BLOCK..cols].chunks_exact(UNIT)) {
        for (j, &x) in qu.iter().enumerate() {
            acc += i32::from(x) * (i32::from((unit[j % 16] >> (2 * (j / 16))) & 3) - 1);
        }
    }
    acc
}

/// Repacks I2_S rows `r0..r1` into `out` (`(r1 - r0) * stride_for(cols)` zeroed bytes). Needs
/// `cols % 128 == 0` (whole I2_S blocks per row). The invalid I2_S code 3 reads as zero, as in the
/// I2_S kernels.
pub(crate) fn repack_i2s_rows(src: I2sRows<'_>, r0: usize, r1: usize, out: &mut [u8]) {
    let cols = src.cols;
    let stride = stride_for(cols);
    let mut u = vec![0u8; cols];
    for (r, o) in (r0..r1).zip(out.chunks_exact_mut(stride)) {
        let row = src.row(r);
        for (blk, ub) in row
            .chunks_exact(crate::ternary::i2s::BLOCK_BYTES)
            .zip(u.chunks_exact_mut(crate::ternary::i2s::BLOCK))
        {
            for p in 0..32 {
                let b = blk[p];
                ub[p] = U_OF_I2S[usize::from(b >> 6)];
                ub[p + 32] = U_OF_I2S[usize::from((b >> 4) & 3)];
                ub[p + 64] = U_OF_I2S[usize::from((b >> 2) & 3)];
                ub[p + 96] = U_OF_I2S[usize::from(b & 3)];
            }
        }
        pack_row(&u, o);
    }
}

/// Unsigned code of each I2_S code (I2_S code 3 is invalid and reads as zero).
const U_OF_I2S: [u8; 4] = [0, 1, 2, 1];

/// The Triple5 layout (built at load by `repack.rs`, never read from a file).
pub(crate) struct Triple5;

impl Layout for Triple5 {
    const FORMAT: TernaryFormat = TernaryFormat::Triple5;
    const BLOCK: usize = BLOCK;

    fn row_codes(m: &TernaryMatrix, r: usize, out: &mut [i8]) {
        rows_of(m).row_codes(r, out)
    }

    fn gemm_scalar(m: &TernaryMatrix, x: QTokens<'_>, out: OutRows<'_>) {
        tiled::gemm_scalar(rows_of(m), m.w_scale(), x, out)
    }

    /// I2_S matrices whose rows are whole I2_S blocks, and TQ2_0 / TQ1_0 matrices whose blocks all
    /// share one scale (or have scale 0). See [`TernaryMatrix::to_triple5`].
    fn repack_from(src: &TernaryMatrix) -> Option<TernaryMatrix> {
        let scale = match src.format() {
            TernaryFormat::I2S if src.cols.is_multiple_of(i2s::BLOCK) => src.scale,
            TernaryFormat::TQ2_0 => Some(shared_block_scale::<Tq2>(src)?),
            TernaryFormat::TQ1_0 => Some(shared_block_scale::<Tq1>(src)?),
            _ => return None,
        };
        let (rows, cols) = (src.rows, src.cols);
        let stride = stride_for(cols);
        let mut data = vec![0u8; rows * stride + PAD];
        let simd = simd_level().clamp_to_cpu().has_avx512_vbmi();
        // About 1 MB of output per task.
        let rows_per_task = (1 << 20) / stride.max(1) + 1;
        crate::pool::for_each_chunk_mut(&mut data[..rows * stride], rows_per_task * stride, |i, out| {
            let r0 = i * rows_per_task;
            let r1 = r0 + out.len() / stride;
            if src.format() == TernaryFormat::I2S {
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: the level (clamped to the CPU) includes AVX-512 VBMI; cols % 128 == 0
                    // (checked above), rows r0..r1 exist and `out` holds exactly their bytes.
                    unsafe { avx512::repack_i2s_rows(src.i2s_rows(), r0, r1, out) };
                    return;
                }
                repack_i2s_rows(src.i2s_rows(), r0, r1, out);
                return;
            }
            let mut u = vec![0u8; cols];
            for (r, o) in (r0..r1).zip(out.chunks_exact_mut(stride)) {
                if src.format() == TernaryFormat::TQ2_0 {
                    unsigned_row::<Tq2>(src, r, &mut u);
                } else {
                    unsigned_row::<Tq1>(src, r, &mut u);
                }
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: the level (clamped to the CPU) includes AVX-512 VBMI; u holds cols (a
                    // multiple of 256) codes 0..=2, o one Triple5 row.
                    unsafe { avx512::pack_row(&u, o) };
                    continue;
                }
                pack_row(&u, o);
            }
        });
        let _ = simd;
        Some(TernaryMatrix::with_layout::<Triple5>(
            rows,
            cols,
            stride,
            scale,
            true,
            Bytes::from_vec(data),
        ))
    }

    fn kernel(level: SimdLevel) -> GemmFn {
        #[cfg(target_arch = "x86_64")]
        if level.has_avx512_vbmi() {
            return gemm_avx512vbmi;
        }
        let _ = level;
        Self::gemm_scalar
    }
}

fn rows_of(m: &TernaryMatrix) -> Triple5Rows<'_> {
    Triple5Rows {
        data: &m.data,
        cols: m.cols,
        stride: m.stride,
    }
}

#[cfg(target_arch = "x86_64")]
fn gemm_avx512vbmi(m: &TernaryMatrix, x: QTokens<'_>, out: OutRows<'_>) {
    // SAFETY: only reachable through `Triple5::kernel` for a level clamped to the CPU that
    // includes AVX-512 VNNI + VBMI; `TernaryMatrix::gemm_with` checked the bounds; the buffer
    // ends with PAD bytes (`repack.rs` allocates them).
    unsafe { avx512::gemm(rows_of(m), m.w_scale(), x, out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_positions() {
        // Triple 1 (values 1, 65, 129) with u = 2, 0, 1 -> code 2 + 0 + 9 = 11 at bits 5..10;
        // value 192 (first tail value) with u = 2 -> byte 0 of the unit, bits 0..2.
        let cols = 256;
        let mut u = vec![1u8; cols];
        u[1] = 2;
        u[65] = 0;
        u[129] = 1;
        u[192] = 2;
        u[192 + 63] = 0; // l = 3, p = 15
        let mut out = vec![0u8; stride_for(cols)];
        assert_eq!(out.len(), 40 + 16);
        pack_row(&u, &mut out);
        assert_eq!(triple_code(&out[..40], 1), 11);
        assert_eq!(triple_code(&out[..40], 0), 13); // 1 + 3 + 9
        assert_eq!(out[40] & 3, 2);
        assert_eq!(out[40 + 15] >> 6, 0);
        let v = Triple5Rows {
            data: &out,
            cols,
            stride: out.len(),
        };
        let mut t = vec![0i8; cols];
        v.row_codes(0, &mut t);
        let want: Vec<i8> = u.iter().map(|&x| x as i8 - 1).collect();
        assert_eq!(t, want);
    }

    #[test]
    fn strides() {
        assert_eq!(stride_for(2560), 13 * 40 + 16);
        assert_eq!(stride_for(6912), 36 * 40);
        assert_eq!(stride_for(128), 2 * 16);
    }
}
