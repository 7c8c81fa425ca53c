//! Load-time repacking: which layout this CPU's kernels read fastest ([`TernaryMatrix::for_cpu`],
//! the one policy loaders call) and the conversions between layouts. Results are the same values;
//! only the bytes per weight and the kernels that read them change.

use super::layout::BlockLayout;
use super::tq1_0::Tq1;
use super::tq2_0::Tq2;
use super::triple5::Triple5;
use super::{i2s, tq1_0, tq2_0, triple5, TernaryFormat, TernaryMatrix};
use crate::blocks::{Block, BlockTq1_0};
use crate::bytes::Bytes;
use crate::simd::simd_level;

impl TernaryMatrix {
    /// These weights in the layout the kernels of this CPU (at the current [`simd_level`]) read
    /// fastest; what loaders call. Where [`prefers_triple5`](Self::prefers_triple5) holds, whatever
    /// [`to_triple5`](Self::to_triple5) accepts is repacked to Triple5. On the other x86 SIMD
    /// levels TQ1_0, which has only a scalar kernel, becomes TQ2_0 (22% more bytes). Anything else
    /// is returned as it is.
    pub fn for_cpu(self) -> TernaryMatrix {
        if Self::prefers_triple5() {
            if let Some(t5) = self.to_triple5() {
                return t5;
            }
        }
        if simd_level().has_avx2() {
            if let Some(t2) = self.to_tq2_0() {
                return t2;
            }
        }
        self
    }

    /// Whether the kernels of this CPU (at the current [`simd_level`]) run [`triple5`] matrices
    /// faster than I2_S ones: the [`crate::SimdLevel::Avx512Vbmi`] level (Ice Lake, Zen 4 and
    /// later). Loaders repack with [`to_triple5`](Self::to_triple5) when this holds.
    pub fn prefers_triple5() -> bool {
        simd_level().has_avx512_vbmi()
    }

    /// The same weights in the [`triple5`] layout (1.67 bits per value), with one scale for the
    /// tensor: I2_S matrices whose rows are whole I2_S blocks, and TQ2_0 / TQ1_0 matrices whose
    /// blocks all share one scale (or have scale 0), which is what converters write for BitNet
    /// b1.58, whose weights are one scale times -1/0/1. `None` otherwise. Rows are repacked in
    /// parallel on the worker pool; the result owns its bytes. I2_S results are unchanged bit for
    /// bit (the integer dots are exact either way); TQ results change by f32 rounding only, as
    /// the block sums are no longer scaled one by one.
    pub fn to_triple5(&self) -> Option<TernaryMatrix> {
        let scale = match self.format() {
            TernaryFormat::I2S if self.cols.is_multiple_of(i2s::BLOCK) => self.scale,
            TernaryFormat::TQ2_0 => Some(self.shared_block_scale::<Tq2>()?),
            TernaryFormat::TQ1_0 => Some(self.shared_block_scale::<Tq1>()?),
            _ => return None,
        };
        let (rows, cols) = (self.rows, self.cols);
        let stride = triple5::stride_for(cols);
        let mut data = vec![0u8; rows * stride + triple5::PAD];
        let simd = simd_level().clamp_to_cpu().has_avx512_vbmi();
        // About 1 MB of output per task.
        let rows_per_task = (1 << 20) / stride.max(1) + 1;
        crate::pool::for_each_chunk_mut(&mut data[..rows * stride], rows_per_task * stride, |i, out| {
            let r0 = i * rows_per_task;
            let r1 = r0 + out.len() / stride;
            if self.format() == TernaryFormat::I2S {
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: the level (clamped to the CPU) includes AVX-512 VBMI; cols % 128 == 0
                    // (checked above), rows r0..r1 exist and `out` holds exactly their bytes.
                    unsafe { triple5::avx512::repack_i2s_rows(self.i2s_rows(), r0, r1, out) };
                    return;
                }
                triple5::repack_i2s_rows(self.i2s_rows(), r0, r1, out);
                return;
            }
            let mut u = vec![0u8; cols];
            for (r, o) in (r0..r1).zip(out.chunks_exact_mut(stride)) {
                if self.format() == TernaryFormat::TQ2_0 {
                    self.tq_unsigned_row::<Tq2>(r, &mut u);
                } else {
                    self.tq_unsigned_row::<Tq1>(r, &mut u);
                }
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: the level (clamped to the CPU) includes AVX-512 VBMI; u holds cols (a
                    // multiple of 256) codes 0..=2, o one Triple5 row.
                    unsafe { triple5::avx512::pack_row(&u, o) };
                    continue;
                }
                triple5::pack_row(&u, o);
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

    /// A TQ1_0 matrix as TQ2_0 (same values, same block scales, so the same results at the scalar
    /// level): 2.06 instead of 1.69 bits per value, but TQ2_0 has SIMD kernels at every x86 level
    /// and TQ1_0 only the scalar one. `None` for other formats. Repacked in parallel on the pool.
    pub fn to_tq2_0(&self) -> Option<TernaryMatrix> {
        if self.format() != TernaryFormat::TQ1_0 {
            return None;
        }
        let nb = self.cols / tq1_0::BLOCK;
        let stride = nb * tq2_0::BLOCK_BYTES;
        let mut data = vec![0u8; self.rows * stride];
        let rows_per_task = (1 << 20) / stride.max(1) + 1;
        crate::pool::for_each_chunk_mut(&mut data, rows_per_task * stride, |i, out| {
            let mut u = [0u8; tq1_0::BLOCK];
            for (k, o) in out.chunks_exact_mut(stride).enumerate() {
                let row = self.row_bytes(i * rows_per_task + k);
                for (blk, ob) in row
                    .chunks_exact(tq1_0::BLOCK_BYTES)
                    .zip(o.chunks_exact_mut(tq2_0::BLOCK_BYTES))
                {
                    tq1_0::unsigned_block(blk, &mut u);
                    tq2_0::pack_unsigned_block(&u, BlockTq1_0::view(blk).d, ob);
                }
            }
        });
        Some(TernaryMatrix::with_layout::<Tq2>(
            self.rows,
            self.cols,
            stride,
            None,
            true,
            Bytes::from_vec(data),
        ))
    }

    /// The one scale of every block of layout `L` whose scale is not zero (0 if all are), or
    /// `None` when they differ or one is not finite.
    fn shared_block_scale<L: BlockLayout>(&self) -> Option<f32> {
        let mut shared = None;
        for blk in self.data[..self.rows * self.stride].chunks_exact(L::BLOCK_BYTES) {
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
    fn tq_unsigned_row<L: BlockLayout>(&self, r: usize, u: &mut [u8]) {
        for (blk, ub) in self
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
}
