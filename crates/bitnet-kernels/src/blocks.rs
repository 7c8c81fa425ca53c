//! The block formats' bytes as typed structs (as candle's `BlockQ4K`): each is `#[repr(C)]` over byte
//! arrays only, so it has alignment 1, no padding and no invalid bit patterns, and its size is
//! asserted at compile time against the format's definition. Code reads a block's fields by name
//! ([`Block::view`], [`Block::slice`]) instead of by byte offset; the SIMD kernels, which walk raw
//! pointers, take their offsets from the same structs (`core::mem::offset_of!`).

use half::f16;

/// A block format's struct.
///
/// # Safety
/// Implementors are `#[repr(C)]`, made only of `u8`/`i8` arrays (alignment 1, no padding, every bit
/// pattern valid), so any `size_of::<Self>()` bytes are a valid value.
pub(crate) unsafe trait Block: Sized {
    /// Bytes per block.
    const BYTES: usize = core::mem::size_of::<Self>();

    /// The block at the start of `bytes`.
    ///
    /// # Panics
    /// If `bytes` is shorter than a block.
    #[inline]
    fn view(bytes: &[u8]) -> &Self {
        &Self::slice(&bytes[..Self::BYTES])[0]
    }

    /// The whole blocks at the start of `bytes` (a partial block at the end is left out).
    #[inline]
    fn slice(bytes: &[u8]) -> &[Self] {
        let n = bytes.len() / Self::BYTES;
        // SAFETY: the trait's contract makes any BYTES bytes a valid, alignment-1 value, and the n
        // blocks lie inside `bytes`, whose borrow the result keeps.
        unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<Self>(), n) }
    }

    /// As [`slice`](Self::slice), mutably.
    #[inline]
    fn slice_mut(bytes: &mut [u8]) -> &mut [Self] {
        let n = bytes.len() / Self::BYTES;
        // SAFETY: as in `slice`; the exclusive borrow of `bytes` moves to the result.
        unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<Self>(), n) }
    }
}

/// An f16 stored little-endian.
#[inline]
pub(crate) fn f16_le(b: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// I2_S (bitnet.cpp): 128 values, byte `p` holds values `p`, `p + 32`, `p + 64`, `p + 96`.
#[repr(C)]
pub(crate) struct BlockI2s {
    pub qs: [u8; 32],
}

/// TQ2_0 (ggml): 256 values as 2-bit codes, then the f16 scale.
#[repr(C)]
pub(crate) struct BlockTq2_0 {
    pub qs: [u8; 64],
    pub d: [u8; 2],
}

/// TQ1_0 (ggml): 256 values as base-3 digits (5 per `qs` byte, 4 per `qh` byte), then the f16 scale.
#[repr(C)]
pub(crate) struct BlockTq1_0 {
    pub qs: [u8; 48],
    pub qh: [u8; 4],
    pub d: [u8; 2],
}

/// Q8_0 (ggml): the f16 scale, then 32 int8 values.
#[repr(C)]
pub(crate) struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [i8; 32],
}

/// Q6_K (ggml): 256 values as low 4 bits, high 2 bits, 16 int8 sub-block scales, f16 `d`.
#[repr(C)]
pub(crate) struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: [u8; 2],
}

/// Q4_K (ggml): f16 `d` and `dmin`, twelve bytes of 6-bit scales and mins, 256 4-bit values.
#[repr(C)]
pub(crate) struct BlockQ4K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

// SAFETY: each is #[repr(C)] over u8/i8 arrays only.
unsafe impl Block for BlockI2s {}
// SAFETY: as above.
unsafe impl Block for BlockTq2_0 {}
// SAFETY: as above.
unsafe impl Block for BlockTq1_0 {}
// SAFETY: as above.
unsafe impl Block for BlockQ8_0 {}
// SAFETY: as above.
unsafe impl Block for BlockQ6K {}
// SAFETY: as above.
unsafe impl Block for BlockQ4K {}

// The formats' definitions (ggml's `block_*` structs and bitnet.cpp's I2_S): a field added or
// resized by mistake fails the build.
const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<BlockI2s>() == 32 && align_of::<BlockI2s>() == 1);
    assert!(size_of::<BlockTq2_0>() == 66 && align_of::<BlockTq2_0>() == 1);
    assert!(size_of::<BlockTq1_0>() == 54 && align_of::<BlockTq1_0>() == 1);
    assert!(size_of::<BlockQ8_0>() == 34 && align_of::<BlockQ8_0>() == 1);
    assert!(size_of::<BlockQ6K>() == 210 && align_of::<BlockQ6K>() == 1);
    assert!(size_of::<BlockQ4K>() == 144 && align_of::<BlockQ4K>() == 1);
};

impl BlockTq2_0 {
    #[inline]
    pub fn scale(&self) -> f32 {
        f16_le(self.d)
    }
}

impl BlockTq1_0 {
    #[inline]
    pub fn scale(&self) -> f32 {
        f16_le(self.d)
    }
}

impl BlockQ8_0 {
    #[inline]
    pub fn scale(&self) -> f32 {
        f16_le(self.d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_read_fields_where_the_formats_put_them() {
        let mut bytes: Vec<u8> = (0..200u8).collect();
        let b = BlockTq2_0::view(&bytes);
        assert_eq!((b.qs[63], b.d), (63, [64, 65]));
        let b = BlockTq1_0::view(&bytes[1..]);
        assert_eq!((b.qs[0], b.qh, b.d), (1, [49, 50, 51, 52], [53, 54]));
        assert_eq!(BlockQ8_0::slice(&bytes).len(), 200 / 34);
        assert_eq!(BlockQ8_0::view(&bytes[34..]).qs[0], 36);
        BlockI2s::slice_mut(&mut bytes)[1].qs[0] = 7;
        assert_eq!(bytes[32], 7);
        assert_eq!(
            core::mem::offset_of!(BlockQ6K, d) + 2,
            BlockQ6K::BYTES,
            "d is Q6_K's last field"
        );
    }

    #[test]
    #[should_panic]
    fn a_short_view_panics() {
        let _ = BlockQ4K::view(&[0u8; 143]);
    }
}
