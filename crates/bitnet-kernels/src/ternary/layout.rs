//! The one interface every ternary layout implements ([`Layout`]), and the table of its functions
//! that each [`TernaryMatrix`] holds ([`LayoutOps`]), filled once when the matrix is made.
//!
//! Adding a layout means: a file (or folder, with its SIMD kernels) under `ternary/`, a
//! [`TernaryFormat`] variant, an `impl Layout` there, and a constructor or a repack (`repack.rs`)
//! that makes matrices of it. Adding a CPU means: kernels in that folder, returned by
//! [`Layout::kernel`] for the new [`SimdLevel`]. Nothing else dispatches on the format.

use super::{TernaryFormat, TernaryMatrix};
use crate::operands::{OutRows, QTokens};
use crate::simd::SimdLevel;

/// A product over a whole matrix: `x.n()` tokens into the output block `out` (bounds already
/// checked by [`TernaryMatrix::gemm_with`]).
pub(crate) type GemmFn = fn(&TernaryMatrix, QTokens<'_>, OutRows<'_>);

/// A ternary weight layout.
pub(crate) trait Layout {
    const FORMAT: TernaryFormat;
    /// Values that share one scale.
    const BLOCK: usize;

    /// Decodes row `r` into `out` (`cols` values) as -1/0/1.
    fn row_codes(m: &TernaryMatrix, r: usize, out: &mut [i8]);

    /// The scale of each block of row `r` (`out` holds one slot per block). The per-tensor-scaled
    /// layouts repeat the tensor scale.
    fn row_scales(m: &TernaryMatrix, _r: usize, out: &mut [f32]) {
        out.fill(m.w_scale());
    }

    /// The scalar twin every SIMD kernel of this layout is tested against.
    fn gemm_scalar(m: &TernaryMatrix, x: QTokens<'_>, out: OutRows<'_>);

    /// These weights converted from another layout into this one, where this layout can hold them
    /// exactly (what load-time repacking uses; `repack.rs` decides when). `None` by default.
    fn repack_from(src: &TernaryMatrix) -> Option<TernaryMatrix> {
        let _ = src;
        None
    }

    /// The fastest gemm whose instructions `level` includes. Called only with levels the CPU
    /// supports ([`LayoutOps::of`] clamps), which is what makes the SIMD entries safe to call.
    fn kernel(level: SimdLevel) -> GemmFn {
        let _ = level;
        Self::gemm_scalar
    }
}

/// The block-scaled layouts (ggml's TQ types): fixed-size blocks, each with its own f16 scale.
pub(crate) trait BlockLayout: Layout {
    /// The format's name in messages.
    const NAME: &'static str;
    /// Bytes per block.
    const BLOCK_BYTES: usize;
    /// A block's scale.
    fn block_scale(blk: &[u8]) -> f32;
    /// A block's unsigned codes (`value + 1`, 0..=2) in value order.
    fn unsigned_block(blk: &[u8], u: &mut [u8]);
    /// A block's values as -1/0/1 in value order.
    fn decode_block(blk: &[u8], vals: &mut [i8]);
}

/// [`Layout::row_codes`] of a block layout: each block decoded in turn.
pub(crate) fn block_row_codes<L: BlockLayout>(m: &TernaryMatrix, r: usize, out: &mut [i8]) {
    for (blk, vals) in m
        .row_bytes(r)
        .chunks_exact(L::BLOCK_BYTES)
        .zip(out.chunks_exact_mut(L::BLOCK))
    {
        L::decode_block(blk, vals);
    }
}

/// [`Layout::row_scales`] of a block layout: each block's own scale.
pub(crate) fn block_row_scales<L: BlockLayout>(m: &TernaryMatrix, r: usize, out: &mut [f32]) {
    for (o, blk) in out.iter_mut().zip(m.row_bytes(r).chunks_exact(L::BLOCK_BYTES)) {
        *o = L::block_scale(blk);
    }
}

/// A layout's functions with its kernel for every [`SimdLevel`], chosen once per matrix.
#[derive(Clone, Copy)]
pub(crate) struct LayoutOps {
    pub format: TernaryFormat,
    pub block: usize,
    pub row_codes: fn(&TernaryMatrix, usize, &mut [i8]),
    pub row_scales: fn(&TernaryMatrix, usize, &mut [f32]),
    /// Indexed by [`SimdLevel::index`]; the entry of a level this CPU lacks is that of the best
    /// level it has below it, so every entry is safe to call.
    kernels: [GemmFn; SimdLevel::ALL.len()],
}

impl LayoutOps {
    pub fn of<L: Layout>() -> LayoutOps {
        LayoutOps {
            format: L::FORMAT,
            block: L::BLOCK,
            row_codes: L::row_codes,
            row_scales: L::row_scales,
            kernels: SimdLevel::ALL.map(|level| L::kernel(level.clamp_to_cpu())),
        }
    }

    /// The gemm for `level` (lowered to what the CPU supports).
    #[inline]
    pub fn kernel(&self, level: SimdLevel) -> GemmFn {
        self.kernels[level.index()]
    }
}

/// The one scale of every block of layout `L` whose scale is not zero (0 if all are), or
/// `None` when they differ or one is not finite.
pub(crate) fn shared_block_scale<L: BlockLayout>(m: &TernaryMatrix) -> Option<f32> {
    let mut shared = None;
    for blk in m.data[..m.rows * m.stride].chunks_exact(L::BLOCK_BYTES) {
        let d = L::block_scale(blk);
        if !d.is_finite() {
            return None;
        }
        if d != 0.0 && *shared.get_or_insert(d) != d {
            return None;
        }
    }
    Some(shared.unwrap_or(0.0))
}

/// Unsigned codes (0..=2) of row `r` of block layout `L`; blocks with scale 0 read as zeros
/// (code 1).
pub(crate) fn unsigned_row<L: BlockLayout>(m: &TernaryMatrix, r: usize, u: &mut [u8]) {
    for (blk, ub) in m
        .row_bytes(r)
        .chunks_exact(L::BLOCK_BYTES)
        .zip(u.chunks_exact_mut(L::BLOCK))
    {
        if L::block_scale(blk) == 0.0 {
            ub.fill(1);
        } else {
            L::unsigned_block(blk, ub);
        }
    }
}
