//! x86-64 SIMD kernels. Every public function here is `unsafe` because it is compiled with
//! `#[target_feature]`: callers must have checked the CPU (via [`crate::SimdLevel::clamp_to_cpu`])
//! and the slice bounds stated in each function's contract.
//!
//! Feature sets: `Avx2` kernels use "avx2,fma,f16c"; `Avx512` kernels add "avx512f,avx512bw,avx512vl";
//! `Avx512Vnni` kernels add "avx512vnni"; `Avx512Vbmi` kernels add "avx512vbmi". Detection in `simd.rs`
//! checks exactly these.

pub(crate) mod act_quant;
pub(crate) mod attention;
pub(crate) mod attention_avx2;
pub(crate) mod float_dot;

use core::arch::x86_64::*;

/// How far ahead of its reads a streaming kernel prefetches, in bytes. A GEMV tile reads several
/// short rows side by side (640 bytes each for 2560 columns), which the hardware prefetchers follow
/// too late: decoding with a 2B4T-shaped model ran at about 70% of the machine's read bandwidth
/// without this and about 85% with it. 8 KiB beat 2, 4, 6, 12 and 16 KiB in `bitnet bench` tg.
/// (The AVX2 I2_S kernel and the f16 head read one row at a time, a single sequential stream that
/// the hardware follows well; neither gained from it.)
pub(crate) const STREAM_AHEAD: usize = 8192;

/// Prefetches the cache lines of `[base + offset + STREAM_AHEAD, ... + len)`: a kernel that reads a
/// contiguous range front to back calls this once per step with the bytes the step reads, and so
/// stays `STREAM_AHEAD` bytes ahead. The range may run past the data: a prefetch never faults.
#[inline(always)]
pub(crate) fn prefetch_ahead(base: *const u8, offset: usize, len: usize) {
    let start = base.wrapping_add(offset + STREAM_AHEAD);
    let mut l = 0;
    while l < len {
        // SAFETY: a prefetch has no architectural effect and never faults, whatever the address
        // (computed with wrapping arithmetic, never dereferenced).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(l).cast()) };
        l += 64;
    }
}

/// Sum of the eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn hsum_epi32_256(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Sum of the eight f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn hsum_ps_256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Maps the invalid 2-bit code 3 to 1 (zero) in every field of every byte: clears a field's high
/// bit when its low bit is set. Codes 0..=2 are unchanged. This keeps the SIMD kernels equal to the
/// scalar decoder (which reads code 3 as 0) for any bytes, at 3 cheap ops per 32 weight bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn sanitize_codes(w: __m256i) -> __m256i {
    // Shifting 16-bit lanes left by one moves each low bit onto its field's high bit; bit 7 of a
    // low byte lands on bit 0 of the next byte, which the 0xAA mask drops.
    let low_bits_up = _mm256_and_si256(_mm256_slli_epi16::<1>(w), _mm256_set1_epi8(0xAAu8 as i8));
    _mm256_andnot_si256(low_bits_up, w)
}

/// [`sanitize_codes`] in one `vpternlogd` (`w & !(w << 1 & 0xAA)`) where AVX-512 VL is available.
#[inline]
#[target_feature(enable = "avx512f,avx512vl")]
pub(crate) fn sanitize_codes_vl(w: __m256i) -> __m256i {
    // Truth table over (a = w << 1, b = 0xAA, c = w): c & !(a & b) -> bits 1, 3, 5 = 0x2A.
    _mm256_ternarylogic_epi32::<0x2A>(_mm256_slli_epi16::<1>(w), _mm256_set1_epi8(0xAAu8 as i8), w)
}
