//! AVX-512 VNNI I2_S kernels: `vpdpbusd` multiplies unsigned codes (0..=2) with signed activations
//! and adds groups of four straight into i32 lanes; `t = code - 1` is restored by subtracting
//! `sum(q)` once per token (done by [`gemm_tiled`]).
//!
//! One 32-byte block is broadcast to both halves of a zmm register and shifted per 16-bit lane
//! (`vpsrlvw`) by 6 / 4 and 2 / 0, so each 64-byte code vector lines up with 64 contiguous
//! activations (values `0..64` and `64..128` of the block). A tile of 4 rows x 4 tokens keeps 16
//! accumulators and 8 code vectors in registers; each activation load feeds 4 rows and each decoded
//! block feeds 4 tokens.

use crate::operands::{OutRows, QTokens};
use crate::ternary::i2s::{I2sRows, BLOCK, BLOCK_BYTES};
use crate::ternary::tiled::{dispatch_tile, gemm_tiled, Tile};
use crate::x86::{prefetch_ahead, sanitize_codes_vl};
use core::arch::x86_64::*;

const R: usize = 4;
const T: usize = 4;

/// The per-16-bit-lane shifts that line I2_S's 2-bit planes up with contiguous values, shared by
/// the tiles, the Triple5 repacker (which splits I2_S blocks) and the Triple5 prefill path (which
/// packs them back with the same shifts to the left).
#[derive(Clone, Copy)]
pub(crate) struct Planes {
    /// Low half 6 (bits 7-6: values 0..32), high half 4 (bits 5-4: values 32..64).
    pub first: __m512i,
    /// Low half 2 (bits 3-2: values 64..96), high half 0 (bits 1-0: values 96..128).
    pub second: __m512i,
    m3: __m512i,
}

impl Planes {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub fn new() -> Planes {
        Planes {
            first: _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm256_set1_epi16(6)), _mm256_set1_epi16(4)),
            second: _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm256_set1_epi16(2)), _mm256_setzero_si256()),
            m3: _mm512_set1_epi8(3),
        }
    }

    /// The codes (0..=3) of one 32-byte block: values `0..64` and `64..128`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub fn split(self, block: __m256i) -> [__m512i; 2] {
        let wz = _mm512_broadcast_i64x4(block);
        [
            _mm512_and_si512(_mm512_srlv_epi16(wz, self.first), self.m3),
            _mm512_and_si512(_mm512_srlv_epi16(wz, self.second), self.m3),
        ]
    }
}

/// `out[r][k] = sum_j toks[k][j] * code(row0 + r, j)` over the full blocks. With `STREAM`, the
/// weights [`super::STREAM_AHEAD`] bytes further on are prefetched as the tile goes (for calls that
/// pass over the weights once).
///
/// # Safety
/// AVX-512 F/BW/VL + VNNI available; rows `row0 .. row0 + RR` exist in `v`; `toks.len() == TT`;
/// every token has at least `full_blocks * 128` values. (Asserted on entry, once per tile.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile<const RR: usize, const TT: usize, const CLEAN: bool, const STREAM: bool>(
    v: I2sRows<'_>,
    row0: usize,
    toks: &[&[i8]],
    out: &mut Tile,
) {
    let nb = v.full_blocks();
    assert!(toks.len() == TT && (row0 + RR) * v.stride <= v.data.len() && nb * BLOCK_BYTES <= v.stride);
    assert!(toks.iter().all(|t| t.len() >= nb * BLOCK));
    let planes = Planes::new();
    let mut acc = [[_mm512_setzero_si512(); TT]; RR];
    let w0 = v.data.as_ptr().wrapping_add(row0 * v.stride);
    let qp: [*const i8; TT] = core::array::from_fn(|k| toks[k].as_ptr());
    for b in 0..nb {
        if STREAM {
            // The tile's rows are contiguous, so this sweeps the rows after them at the pace
            // this tile reads its own.
            prefetch_ahead(w0, b * RR * BLOCK_BYTES, RR * BLOCK_BYTES);
        }
        // (Plain loops rather than closures so everything stays inside this target-feature
        // function.)
        let mut c = [[_mm512_setzero_si512(); 2]; RR];
        for (rr, c_r) in c.iter_mut().enumerate() {
            // SAFETY: row row0 + rr exists and block b < nb lies within its stride (asserted).
            let w = unsafe { _mm256_loadu_si256(w0.add(rr * v.stride + b * BLOCK_BYTES).cast()) };
            *c_r = planes.split(if CLEAN { w } else { sanitize_codes_vl(w) });
        }
        for (k, &p) in qp.iter().enumerate() {
            // SAFETY: values 128b .. 128b + 128 are inside every token (asserted above).
            let (q0, q1) = unsafe {
                (
                    _mm512_loadu_si512(p.add(b * BLOCK).cast()),
                    _mm512_loadu_si512(p.add(b * BLOCK + 64).cast()),
                )
            };
            for (acc_r, c_r) in acc.iter_mut().zip(&c) {
                acc_r[k] = _mm512_dpbusd_epi32(acc_r[k], c_r[0], q0);
                acc_r[k] = _mm512_dpbusd_epi32(acc_r[k], c_r[1], q1);
            }
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        for (ok, &ak) in o.iter_mut().zip(a) {
            *ok = _mm512_reduce_add_epi32(ak);
        }
    }
}

/// # Safety
/// As [`tile`], with `nr` in `{1, R}` and `toks.len()` in `1..=T`.
unsafe fn dots(v: I2sRows<'_>, r: usize, nr: usize, toks: &[&[i8]], out: &mut Tile, stream: bool) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match (v.clean, stream) {
            (true, true) => dots_with::<true, true>(v, r, nr, toks, out),
            (true, false) => dots_with::<true, false>(v, r, nr, toks, out),
            (false, true) => dots_with::<false, true>(v, r, nr, toks, out),
            (false, false) => dots_with::<false, false>(v, r, nr, toks, out),
        }
    }
}

/// # Safety
/// As [`dots`].
unsafe fn dots_with<const CLEAN: bool, const STREAM: bool>(
    v: I2sRows<'_>,
    r: usize,
    nr: usize,
    toks: &[&[i8]],
    out: &mut Tile,
) {
    // SAFETY: forwarded from the caller.
    unsafe { dispatch_tile!(tile, R, T, nr, toks.len(), [CLEAN, STREAM], (v, r, toks, out)) }
}

/// # Safety
/// AVX-512 F/BW/VL + VNNI available; the bounds of `TernaryMatrix::gemm` hold.
pub(crate) unsafe fn gemm(v: I2sRows<'_>, w_scale: f32, x: QTokens<'_>, out: OutRows<'_>) {
    gemm_tiled(v, w_scale, x, out, R, T, |r, nr, toks, out, stream| {
        // SAFETY: the caller guarantees the CPU features; gemm_tiled passes rows inside the
        // output block, nr in {1, R} and 1..=T tokens of cols values.
        unsafe { dots(v, r, nr, toks, out, stream) }
    });
}
