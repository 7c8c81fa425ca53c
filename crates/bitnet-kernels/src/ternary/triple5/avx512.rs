//! AVX-512 VBMI + VNNI Triple5 kernels. Per 40-byte block (192 weights): one 64-byte load, a
//! `vpermb` that gives each 64-bit lane the 5 bytes of its eight 5-bit codes, a `vpmultishiftqb`
//! that moves each code into a byte of its own, and one `vpermb` table lookup per digit position,
//! which yields the unsigned codes (0..=2) of values `0..64`, `64..128` and `128..192`, lined up with
//! contiguous activations for `vpdpbusd`. `t = u - 1` is restored by subtracting `sum(q)` once per
//! token (done by [`gemm_tiled`]). A tile of 4 rows x 4 tokens keeps 16 accumulators in registers.

use crate::operands::{OutRows, QTokens};
use crate::ternary::i2s::avx512::Planes;
use crate::ternary::tiled::{dispatch_tile, gemm_tiled, Tile};
use crate::ternary::triple5::{Triple5Rows, BLOCK, BLOCK_BYTES, DIGITS, PAD, UNIT, UNIT_BYTES};
use crate::x86::prefetch_ahead;
use core::arch::x86_64::*;

const R: usize = 4;
const T: usize = 4;

/// Byte `8l + b` of 64-bit lane `l` takes block byte `5l + min(b, 4)`: the lane then holds codes
/// `8l .. 8l + 8` at bits `0, 5, .., 35` (bits 40 and up are don't-care).
const SPREAD: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        let (l, b) = (i / 8, i % 8);
        t[i] = (5 * l + if b < 4 { b } else { 4 }) as u8;
        i += 1;
    }
    t
};

/// `vpmultishiftqb` control: byte `b` of each lane starts at bit `5b`.
const SHIFTS: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = (5 * (i % 8)) as u8;
        i += 1;
    }
    t
};

/// Digit tables for `vpermb`, which reads the low 6 bits of each code byte: bit 5 holds a bit of the
/// next code, so entries `c` and `c + 32` agree.
const TABLES: [[u8; 64]; 3] = {
    let mut t = [[0u8; 64]; 3];
    let mut d = 0;
    while d < 3 {
        let mut i = 0;
        while i < 64 {
            t[d][i] = DIGITS[d][i % 32];
            i += 1;
        }
        d += 1;
    }
    t
};

/// Tail units: 16-bit shift counts `2l` for 128-bit lane `l`.
const UNIT_SHIFTS: [u16; 32] = {
    let mut t = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = (2 * (i / 8)) as u16;
        i += 1;
    }
    t
};

/// The decoding constants in registers.
struct Consts {
    spread: __m512i,
    shifts: __m512i,
    tabs: [__m512i; 3],
    unit_sh: __m512i,
    m3: __m512i,
}

impl Consts {
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load() -> Consts {
        // SAFETY: each array is exactly 64 bytes.
        unsafe {
            Consts {
                spread: _mm512_loadu_si512(SPREAD.as_ptr().cast()),
                shifts: _mm512_loadu_si512(SHIFTS.as_ptr().cast()),
                tabs: [
                    _mm512_loadu_si512(TABLES[0].as_ptr().cast()),
                    _mm512_loadu_si512(TABLES[1].as_ptr().cast()),
                    _mm512_loadu_si512(TABLES[2].as_ptr().cast()),
                ],
                unit_sh: _mm512_loadu_si512(UNIT_SHIFTS.as_ptr().cast()),
                m3: _mm512_set1_epi8(3),
            }
        }
    }

    /// The 64 five-bit codes of a block (one per byte, bits 5-7 don't-care), from 64 bytes loaded
    /// at the block's start.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    fn block_codes(&self, raw: __m512i) -> __m512i {
        _mm512_multishift_epi64_epi8(self.shifts, _mm512_permutexvar_epi8(self.spread, raw))
    }

    /// Unsigned codes (0..=2) of digit `d` of every code: values `64d .. 64d + 64` of the block.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    fn digits(&self, codes: __m512i, d: usize) -> __m512i {
        _mm512_permutexvar_epi8(codes, self.tabs[d])
    }

    /// Unsigned codes of a 16-byte tail unit's 64 values.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn unit_codes(&self, unit: __m128i) -> __m512i {
        _mm512_and_si512(_mm512_srlv_epi16(_mm512_broadcast_i32x4(unit), self.unit_sh), self.m3)
    }
}

/// `out[r][k] = sum_j toks[k][j] * u(row0 + r, j)` over the whole row. With `STREAM`, the weights
/// [`super::STREAM_AHEAD`] bytes further on are prefetched as the tile goes.
///
/// # Safety
/// AVX-512 F/BW/VL + VNNI + VBMI available. (Bounds are asserted on entry, once per tile.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn tile<const RR: usize, const TT: usize, const STREAM: bool>(
    v: Triple5Rows<'_>,
    row0: usize,
    toks: &[&[i8]],
    out: &mut Tile,
) {
    let nb = v.cols / BLOCK;
    let nu = v.cols % BLOCK / UNIT;
    // The 64-byte loads of the last block of the last row read into the padding.
    assert!(toks.len() == TT && (row0 + RR) * v.stride + PAD <= v.data.len());
    assert!(nb * BLOCK_BYTES + nu * UNIT_BYTES <= v.stride && toks.iter().all(|t| t.len() >= v.cols));
    let k5 = Consts::load();
    let mut acc = [[_mm512_setzero_si512(); TT]; RR];
    let w0 = v.data.as_ptr().wrapping_add(row0 * v.stride);
    let qp: [*const i8; TT] = core::array::from_fn(|k| toks[k].as_ptr());
    for b in 0..nb {
        if STREAM {
            // The tile's rows are contiguous: this (with the tail units') sweeps the rows after them.
            prefetch_ahead(w0, b * RR * BLOCK_BYTES, RR * BLOCK_BYTES);
        }
        let mut codes = [_mm512_setzero_si512(); RR];
        for (rr, c) in codes.iter_mut().enumerate() {
            // SAFETY: block b of row row0 + rr starts inside the rows, and 64 bytes from there stay
            // inside rows + padding (asserted above).
            let raw = unsafe { _mm512_loadu_si512(w0.add(rr * v.stride + b * BLOCK_BYTES).cast()) };
            *c = k5.block_codes(raw);
        }
        for d in 0..3 {
            let u: [__m512i; RR] = core::array::from_fn(|rr| k5.digits(codes[rr], d));
            for (k, &p) in qp.iter().enumerate() {
                // SAFETY: values 192b + 64d .. + 64 are inside every token (asserted above).
                let qv = unsafe { _mm512_loadu_si512(p.add(b * BLOCK + 64 * d).cast()) };
                for (acc_r, &u_r) in acc.iter_mut().zip(&u) {
                    acc_r[k] = _mm512_dpbusd_epi32(acc_r[k], u_r, qv);
                }
            }
        }
    }
    for j in 0..nu {
        let off = nb * BLOCK_BYTES + j * UNIT_BYTES;
        if STREAM {
            prefetch_ahead(w0, nb * RR * BLOCK_BYTES + j * RR * UNIT_BYTES, RR * UNIT_BYTES);
        }
        let u: [__m512i; RR] = core::array::from_fn(|rr| {
            // SAFETY: unit j of row row0 + rr lies inside the row (asserted above).
            k5.unit_codes(unsafe { _mm_loadu_si128(w0.add(rr * v.stride + off).cast()) })
        });
        for (k, &p) in qp.iter().enumerate() {
            // SAFETY: values 192nb + 64j .. + 64 are inside every token (asserted above).
            let qv = unsafe { _mm512_loadu_si512(p.add(nb * BLOCK + j * UNIT).cast()) };
            for (acc_r, &u_r) in acc.iter_mut().zip(&u) {
                acc_r[k] = _mm512_dpbusd_epi32(acc_r[k], u_r, qv);
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
unsafe fn dots(v: Triple5Rows<'_>, r: usize, nr: usize, toks: &[&[i8]], out: &mut Tile, stream: bool) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if stream {
            dots_with::<true>(v, r, nr, toks, out)
        } else {
            dots_with::<false>(v, r, nr, toks, out)
        }
    }
}

/// # Safety
/// As [`dots`].
unsafe fn dots_with<const STREAM: bool>(v: Triple5Rows<'_>, r: usize, nr: usize, toks: &[&[i8]], out: &mut Tile) {
    // SAFETY: forwarded from the caller.
    unsafe { dispatch_tile!(tile, R, T, nr, toks.len(), [STREAM], (v, r, toks, out)) }
}

/// # Safety
/// AVX-512 F/BW/VL + VNNI + VBMI available; the bounds of `TernaryMatrix::gemm` hold.
pub(crate) unsafe fn gemm(v: Triple5Rows<'_>, w_scale: f32, x: QTokens<'_>, out: OutRows<'_>) {
    if x.n() >= DECODE_MIN_TOKENS {
        // SAFETY: forwarded from the caller.
        unsafe { gemm_decoded(v, w_scale, x, out) };
        return;
    }
    gemm_tiled(v, w_scale, x, out, R, T, |r, nr, toks, out, stream| {
        // SAFETY: the caller guarantees the CPU features; gemm_tiled passes rows inside
        // row0..row0 + m, nr in {1, R} and 1..=T tokens of cols values.
        unsafe { dots(v, r, nr, toks, out, stream) }
    });
}

/// Fewest tokens for which [`gemm_decoded`] pays off: converting costs about what 4 to 8 passes of
/// the tiles' own decoding do (criterion `ternary_gemm_16tok`: 225 G MAC/s converted against 270
/// decoding in every tile; pp512 gains ~15%).
const DECODE_MIN_TOKENS: usize = 64;

/// Bytes of I2_S per chunk in [`gemm_decoded`] (the I2_S kernel's own chunk size).
const DECODED_CHUNK_BYTES: usize = 256 * 1024;

thread_local! {
    /// Per-thread buffers for [`gemm_decoded`] (a chunk of I2_S rows, one row of codes): they grow
    /// once, then are reused.
    static DECODED: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Many tokens (prefill, large batches), where the multiply-adds rather than memory set the pace
/// and decoding Triple5 again for every tile of four tokens would cost more than I2_S's cheaper
/// split: each chunk of rows is converted once to I2_S, and the I2_S kernel runs over it. The
/// integer dots are exact either way, so the results are the same bits.
///
/// # Safety
/// As [`gemm`].
unsafe fn gemm_decoded(v: Triple5Rows<'_>, w_scale: f32, x: QTokens<'_>, mut out: OutRows<'_>) {
    use crate::ternary::i2s::{self, I2sRows};
    let (row0, m, ldy) = (out.row0(), out.m(), out.ldy());
    let cols = v.cols;
    // Triple5 rows are whole 64-value units; I2_S rows here are whole 128-value blocks (what
    // `to_triple5` accepts).
    assert!(cols.is_multiple_of(i2s::BLOCK));
    let stride = cols / 4;
    let chunk_rows = (DECODED_CHUNK_BYTES / stride / R * R).max(R);
    DECODED.with_borrow_mut(|(buf, row)| {
        if buf.len() < chunk_rows * stride {
            buf.resize(chunk_rows * stride, 0);
        }
        if row.len() < cols {
            row.resize(cols, 0);
        }
        let mut c0 = 0;
        while c0 < m {
            let c1 = m.min(c0 + chunk_rows);
            let data = &mut buf[..(c1 - c0) * stride];
            for (r, dst) in (row0 + c0..row0 + c1).zip(data.chunks_exact_mut(stride)) {
                // SAFETY: the caller guarantees VBMI; row r exists; `row` holds cols bytes and
                // `dst` one I2_S row.
                unsafe {
                    unpack_row(v, r, row);
                    pack_i2s_row(&row[..cols], dst);
                }
            }
            let view = I2sRows {
                data,
                cols,
                stride,
                clean: true,
            };
            let chunk_out = OutRows::new(&mut out.y_mut()[c0..], ldy, 0, c1 - c0);
            // SAFETY: the caller guarantees AVX-512 VNNI; the chunk's rows 0..c1 - c0 exist in
            // `view`, and y from c0 on holds them for every token at stride ldy.
            unsafe { crate::ternary::i2s::avx512::gemm(view, w_scale, x, chunk_out) };
            c0 = c1;
        }
    });
}

/// Packs one row of codes (0..=2, `u.len() % 128 == 0`) into I2_S blocks: byte `p` of a block holds
/// values `p`, `p + 32`, `p + 64`, `p + 96` in bits 7-6, 5-4, 3-2, 1-0.
///
/// # Safety
/// AVX-512 F/BW available; `out.len() == u.len() / 4`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn pack_i2s_row(u: &[u8], out: &mut [u8]) {
    assert!(u.len().is_multiple_of(128) && out.len() == u.len() / 4);
    // The kernels' plane shifts, to the left (codes <= 2 stay inside their byte).
    let planes = Planes::new();
    for (ub, ob) in u.chunks_exact(128).zip(out.chunks_exact_mut(32)) {
        // SAFETY: ub is 128 bytes and ob 32 (chunks_exact).
        unsafe {
            let a = _mm512_sllv_epi16(_mm512_loadu_si512(ub.as_ptr().cast()), planes.first);
            let b = _mm512_sllv_epi16(_mm512_loadu_si512(ub.as_ptr().add(64).cast()), planes.second);
            let x = _mm512_or_si512(a, b);
            let w = _mm256_or_si256(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64::<1>(x));
            _mm256_storeu_si256(ob.as_mut_ptr().cast(), w);
        }
    }
}

/// Unpacks row `r` of `v` to one code byte per weight (`out` holds `cols` bytes).
///
/// # Safety
/// AVX-512 F/BW + VBMI available. (Bounds are asserted.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,f16c")]
unsafe fn unpack_row(v: Triple5Rows<'_>, r: usize, out: &mut [u8]) {
    let cols = v.cols;
    let nb = cols / BLOCK;
    let nu = cols % BLOCK / UNIT;
    assert!((r + 1) * v.stride + PAD <= v.data.len() && out.len() >= cols);
    assert!(nb * BLOCK + nu * UNIT == cols);
    let k5 = Consts::load();
    let w = v.data.as_ptr().wrapping_add(r * v.stride);
    let op = out.as_mut_ptr();
    for b in 0..nb {
        // SAFETY: 64 bytes from block b stay inside rows + padding; the stores write values
        // 192b .. 192b + 192 of the row's `cols` bytes (asserted above).
        unsafe {
            let codes = k5.block_codes(_mm512_loadu_si512(w.add(b * BLOCK_BYTES).cast()));
            for d in 0..3 {
                _mm512_storeu_si512(op.add(b * BLOCK + 64 * d).cast(), k5.digits(codes, d));
            }
        }
    }
    for j in 0..nu {
        // SAFETY: unit j lies inside the row; the store writes its 64 values (asserted above).
        unsafe {
            let c = k5.unit_codes(_mm_loadu_si128(w.add(nb * BLOCK_BYTES + j * UNIT_BYTES).cast()));
            _mm512_storeu_si512(op.add(nb * BLOCK + j * UNIT).cast(), c);
        }
    }
}

/// Output byte `5l + b` (`b < 5`) of the packing step takes byte `b` of 64-bit lane `l`, which holds
/// codes `8l .. 8l + 8` as one 40-bit number.
const GATHER: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 40 {
        t[i] = (8 * (i / 5) + i % 5) as u8;
        i += 1;
    }
    t
};

/// SIMD twin of [`crate::ternary::triple5::repack_i2s_rows`] (same bytes out): I2_S blocks are
/// split into codes with the kernel's shifts, then packed by [`pack_row`].
///
/// # Safety
/// AVX-512 F/BW/VL + VBMI available; `src.cols % 128 == 0`, rows `r0..r1` exist, `out` holds
/// `(r1 - r0) * stride_for(cols)` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,f16c")]
pub(crate) unsafe fn repack_i2s_rows(src: crate::ternary::i2s::I2sRows<'_>, r0: usize, r1: usize, out: &mut [u8]) {
    use crate::ternary::i2s;
    use crate::ternary::triple5::stride_for;
    let cols = src.cols;
    let stride = stride_for(cols);
    assert!(cols.is_multiple_of(i2s::BLOCK) && r1 <= src.data.len() / src.stride.max(1));
    assert!(out.len() >= (r1 - r0) * stride);
    let planes = Planes::new();
    let mut u = vec![0u8; cols];
    for (r, o) in (r0..r1).zip(out.chunks_exact_mut(stride)) {
        let row = src.row(r);
        for (blk, ub) in row.chunks_exact(i2s::BLOCK_BYTES).zip(u.chunks_exact_mut(i2s::BLOCK)) {
            // SAFETY: blk is 32 bytes and ub 128 (chunks_exact).
            unsafe {
                let [c0, c1] = planes.split(crate::x86::sanitize_codes_vl(_mm256_loadu_si256(blk.as_ptr().cast())));
                _mm512_storeu_si512(ub.as_mut_ptr().cast(), c0);
                _mm512_storeu_si512(ub.as_mut_ptr().add(64).cast(), c1);
            }
        }
        // SAFETY: forwarded (features); u holds one row of codes, o one Triple5 row.
        unsafe { pack_row(&u, o) };
    }
}

/// SIMD twin of [`crate::ternary::triple5::pack_row`] (same bytes out): each block is packed by
/// multiply-adds that merge 2, 4 and 8 codes, then one `vpermb` that drops the empty bytes.
///
/// # Safety
/// AVX-512 F/BW/VL + VBMI available; `u.len() % 64 == 0`, every code 0..=2, `out` holds
/// `stride_for(u.len())` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,f16c")]
pub(crate) unsafe fn pack_row(u: &[u8], out: &mut [u8]) {
    use crate::ternary::triple5::{pack_tail, stride_for};
    assert!(u.len().is_multiple_of(UNIT) && out.len() >= stride_for(u.len()));
    let nb = u.len() / BLOCK;
    // SAFETY: GATHER is 64 bytes.
    let gather = unsafe { _mm512_loadu_si512(GATHER.as_ptr().cast()) };
    for (ub, ob) in u.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        // SAFETY: ub is 192 bytes and ob 40 (chunks_exact); the store is masked to 40 bytes.
        unsafe {
            let u0 = _mm512_loadu_si512(ub.as_ptr().cast());
            let u1 = _mm512_loadu_si512(ub.as_ptr().add(64).cast());
            let u2 = _mm512_loadu_si512(ub.as_ptr().add(128).cast());
            // c = u0 + 3 u1 + 9 u2 in bytes (at most 26; 8 u2 <= 16 stays inside its byte).
            let c = _mm512_add_epi8(
                _mm512_add_epi8(u0, _mm512_add_epi8(u1, _mm512_add_epi8(u1, u1))),
                _mm512_add_epi8(u2, _mm512_slli_epi16::<3>(u2)),
            );
            // 2 codes -> 10 bits per i16, 4 -> 20 bits per i32, 8 -> 40 bits per i64.
            let p2 = _mm512_maddubs_epi16(c, _mm512_set1_epi16(0x2001));
            let p4 = _mm512_madd_epi16(p2, _mm512_set1_epi32(0x0400_0001));
            let p8 = _mm512_or_si512(
                _mm512_and_si512(p4, _mm512_set1_epi64(0xFFFF_FFFF)),
                _mm512_slli_epi64::<20>(_mm512_srli_epi64::<32>(p4)),
            );
            let packed = _mm512_permutexvar_epi8(gather, p8);
            _mm512_mask_storeu_epi8(ob.as_mut_ptr().cast(), (1u64 << BLOCK_BYTES) - 1, packed);
        }
    }
    pack_tail(&u[nb * BLOCK..], &mut out[nb * BLOCK_BYTES..]);
}

#[cfg(test)]
mod tests {
    use crate::ternary::i2s::I2sRows;
    use crate::ternary::triple5::{self, stride_for};
    use proptest::prelude::*;

    proptest! {
        /// The SIMD repack writes the scalar twin's bytes, for any I2_S bytes (code 3 included).
        #[test]
        fn repack_matches_scalar(rows in 1usize..6, units in 1usize..12, seed in any::<u64>()) {
            if !(is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vbmi")) {
                return Ok(());
            }
            let cols = units * 128;
            let data: Vec<u8> = (0..rows * cols / 4)
                .map(|i| (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i as u64 * 0x2545_F491) >> 31) as u8)
                .collect();
            let src = I2sRows { data: &data, cols, stride: cols / 4, clean: false };
            let stride = stride_for(cols);
            let mut a = vec![0u8; rows * stride];
            let mut b = vec![0xEEu8; rows * stride];
            triple5::repack_i2s_rows(src, 0, rows, &mut a);
            // SAFETY: features checked above; cols % 128 == 0; `b` holds every row.
            unsafe { super::repack_i2s_rows(src, 0, rows, &mut b) };
            prop_assert_eq!(a, b);
        }
    }
}
