//! Load-time repacking: which layout this CPU's kernels read fastest ([`TernaryMatrix::for_cpu`],
//! the one policy loaders call). The conversions themselves belong to the target layouts
//! ([`Layout::repack_from`]). Results are the same values; only the bytes per weight and the kernels
//! that read them change.

use super::layout::Layout;
use super::tq2_0::Tq2;
use super::triple5::Triple5;
use super::TernaryMatrix;
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

    /// Whether the kernels of this CPU (at the current [`simd_level`]) run [`triple5`](super::triple5) matrices
    /// faster than I2_S ones: the [`crate::SimdLevel::Avx512Vbmi`] level (Ice Lake, Zen 4 and
    /// later). Loaders repack with [`to_triple5`](Self::to_triple5) when this holds.
    pub fn prefers_triple5() -> bool {
        simd_level().has_avx512_vbmi()
    }

    /// The same weights in the [`triple5`](super::triple5) layout (1.67 bits per value), with one scale for the
    /// tensor: I2_S matrices whose rows are whole I2_S blocks, and TQ2_0 / TQ1_0 matrices whose
    /// blocks all share one scale (or have scale 0), which is what converters write for BitNet
    /// b1.58, whose weights are one scale times -1/0/1. `None` otherwise. Rows are repacked in
    /// parallel on the worker pool; the result owns its bytes. I2_S results are unchanged bit for
    /// bit (the integer dots are exact either way); TQ results change by f32 rounding only, as
    /// the block sums are no longer scaled one by one.
    pub fn to_triple5(&self) -> Option<TernaryMatrix> {
        Triple5::repack_from(self)
    }

    /// A TQ1_0 matrix as TQ2_0 (same values, same block scales, so the same results at the scalar
    /// level): 2.06 instead of 1.69 bits per value, but TQ2_0 has SIMD kernels at every x86 level
    /// and TQ1_0 only the scalar one. `None` for other formats. Repacked in parallel on the pool.
    pub fn to_tq2_0(&self) -> Option<TernaryMatrix> {
        Tq2::repack_from(self)
    }
}
