//! Float and block-quantized matrices (embedding table, output head, float projection weights
//! before ternarization), read straight from their file bytes.

pub(crate) mod dense;
pub(crate) mod q4_k;
pub(crate) mod q6_k;
pub(crate) mod q8_0;

use crate::bytes::Bytes;
use crate::error::KernelError;
use crate::operands::OutRows;
use crate::simd::{simd_level, SimdLevel};
use std::fmt;

/// Element format of a [`FloatMatrix`] (ggml layouts for the block types).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloatFormat {
    F32,
    F16,
    BF16,
    /// Blocks of 32: f16 scale + 32 int8 (34 bytes).
    Q8_0,
    /// Blocks of 256: `ql[128]`, `qh[64]`, int8 `scales[16]`, f16 `d` (210 bytes).
    Q6_K,
    /// Blocks of 256: f16 `d`, f16 `dmin`, 6-bit scales/mins `[12]`, `qs[128]` (144 bytes).
    Q4_K,
}

impl FloatFormat {
    /// Values per block (1 for plain floats).
    pub fn block_size(self) -> usize {
        match self {
            FloatFormat::F32 | FloatFormat::F16 | FloatFormat::BF16 => 1,
            FloatFormat::Q8_0 => q8_0::BLOCK,
            FloatFormat::Q6_K => q6_k::BLOCK,
            FloatFormat::Q4_K => q4_k::BLOCK,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            FloatFormat::F32 => 4,
            FloatFormat::F16 | FloatFormat::BF16 => 2,
            FloatFormat::Q8_0 => q8_0::BLOCK_BYTES,
            FloatFormat::Q6_K => q6_k::BLOCK_BYTES,
            FloatFormat::Q4_K => q4_k::BLOCK_BYTES,
        }
    }

    /// Bytes of one row of `cols` values, or `None` if `cols` is not a multiple of the block.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        cols.is_multiple_of(self.block_size())
            .then(|| cols / self.block_size() * self.block_bytes())
    }
}

/// A row-major float or block-quantized matrix over borrowed bytes (possibly unaligned).
#[derive(Clone)]
pub struct FloatMatrix {
    format: FloatFormat,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: Bytes,
}

impl fmt::Debug for FloatMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FloatMatrix")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

/// Rows that several tokens share before moving on (32 rows of a 2560-wide F16 head = 160 KiB, well
/// inside L2).
const ROW_TILE: usize = 32;

impl FloatMatrix {
    /// Wraps `rows x cols` values of `format`. Block formats need `cols` to be a multiple of the
    /// block size; `data` must hold at least `rows` rows (extra bytes are ignored).
    pub fn new(format: FloatFormat, rows: usize, cols: usize, data: Bytes) -> Result<Self, KernelError> {
        if rows == 0 || cols == 0 {
            return Err(KernelError::Shape(format!("empty {format:?} matrix {rows} x {cols}")));
        }
        let row_bytes = format.row_bytes(cols).ok_or_else(|| {
            KernelError::Shape(format!(
                "{format:?} needs the row length to be a multiple of {}, got {cols}",
                format.block_size()
            ))
        })?;
        let needed = rows
            .checked_mul(row_bytes)
            .ok_or_else(|| KernelError::Shape(format!("{rows} x {cols} {format:?} overflows")))?;
        if data.len() < needed {
            return Err(KernelError::DataTooShort {
                format: format_name(format),
                needed,
                got: data.len(),
            });
        }
        Ok(FloatMatrix {
            format,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// This matrix requantized to Q8_0 (ggml's quantizer, 8.5 bits per value), computed on the worker
    /// pool: a smaller, faster output head for `--head-type q8_0` at the cost of a little accuracy.
    pub fn to_q8_0(&self) -> Result<FloatMatrix, KernelError> {
        let (rows, cols) = (self.rows, self.cols);
        let rb = FloatFormat::Q8_0
            .row_bytes(cols)
            .ok_or_else(|| KernelError::Shape(format!("Q8_0 needs rows of a multiple of 32 values, got {cols}")))?;
        let total = rows
            .checked_mul(rb)
            .ok_or_else(|| KernelError::Shape(format!("{rows} x {cols} Q8_0 overflows")))?;
        let mut out = vec![0u8; total];
        let rows_per_task = 256;
        crate::pool::for_each_chunk_mut(&mut out, rows_per_task * rb, |ci, chunk| {
            let mut row = vec![0f32; cols];
            for (i, ob) in chunk.chunks_exact_mut(rb).enumerate() {
                self.dequantize_row(ci * rows_per_task + i, &mut row);
                q8_0::quantize_into(&row, ob);
            }
        });
        FloatMatrix::new(FloatFormat::Q8_0, rows, cols, Bytes::from_vec(out))
    }

    pub fn format(&self) -> FloatFormat {
        self.format
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The raw bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Writes row `r` as f32 into `out[..cols]`.
    ///
    /// # Panics
    /// If `r >= rows` or `out.len() < cols`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows, "dequantize_row: row {r} out of {}", self.rows);
        assert!(
            out.len() >= self.cols,
            "dequantize_row: need {} slots, got {}",
            self.cols,
            out.len()
        );
        let out = &mut out[..self.cols];
        let row = self.row(r);
        match self.format {
            FloatFormat::F32 => dense::f32_to_f32(row, out),
            FloatFormat::F16 => dense::f16_to_f32(row, out),
            FloatFormat::BF16 => dense::bf16_to_f32(row, out),
            FloatFormat::Q8_0 => q8_0::dequantize(row, out),
            FloatFormat::Q6_K => {
                for (blk, o) in row
                    .chunks_exact(q6_k::BLOCK_BYTES)
                    .zip(out.chunks_exact_mut(q6_k::BLOCK))
                {
                    q6_k::dequantize_block(blk, o);
                }
            }
            FloatFormat::Q4_K => {
                for (blk, o) in row
                    .chunks_exact(q4_k::BLOCK_BYTES)
                    .zip(out.chunks_exact_mut(q4_k::BLOCK))
                {
                    q4_k::dequantize_block(blk, o);
                }
            }
        }
    }

    /// `y[i] = dot(row(row0 + i), x)` for `i < y.len()`, accumulated in f32.
    ///
    /// # Panics
    /// If `x.len() < cols` or `row0 + y.len() > rows`.
    pub fn gemv(&self, x: &[f32], row0: usize, y: &mut [f32]) {
        self.gemv_with(simd_level(), x, row0, y)
    }

    /// `dot(row(r), x[t])` for `n_tok` tokens (`x` is `[n_tok, cols]`) and the rows of `out` (see
    /// [`OutRows`]): the same values as [`gemv`](Self::gemv) per token, bit for bit, but F16 rows
    /// (the tied output head) are converted once per pair of tokens.
    ///
    /// # Panics
    /// If `x` has fewer than `n_tok * cols` values or `out` does not fit `n_tok` tokens of this
    /// matrix's rows.
    pub fn gemm(&self, x: &[f32], n_tok: usize, out: OutRows<'_>) {
        self.gemm_with(simd_level(), x, n_tok, out)
    }

    /// [`gemm`](Self::gemm) at an explicit SIMD level.
    pub fn gemm_with(&self, level: SimdLevel, x: &[f32], n_tok: usize, mut out: OutRows<'_>) {
        let cols = self.cols;
        assert!(
            x.len() >= n_tok * cols,
            "gemm: x has {} values, need {}",
            x.len(),
            n_tok * cols
        );
        out.check(n_tok, self.rows, "gemm");
        let (row0, m, ldy) = (out.row0(), out.m(), out.ldy());
        let y = out.y_mut();
        let level = level.clamp_to_cpu();
        #[cfg(target_arch = "x86_64")]
        if self.format == FloatFormat::F16 && level.has_avx512() {
            self.f16_tiles_avx512(x, n_tok, row0, m, y, ldy);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.format == FloatFormat::Q8_0 && level.has_avx2() {
            let wide = level.has_avx512();
            for i0 in (0..m).step_by(ROW_TILE) {
                if wide {
                    self.q8_0_block::<true>(x, n_tok, row0, i0, m.min(i0 + ROW_TILE), y, ldy);
                } else {
                    self.q8_0_block::<false>(x, n_tok, row0, i0, m.min(i0 + ROW_TILE), y, ldy);
                }
            }
            return;
        }
        // Every token over a tile of rows before the next tile: each row comes from memory once per call.
        let mut i0 = 0;
        while i0 < m {
            let i1 = m.min(i0 + ROW_TILE);
            for t in 0..n_tok {
                let yt = &mut y[t * ldy + i0..t * ldy + i1];
                self.gemv_with(level, &x[t * cols..(t + 1) * cols], row0 + i0, yt);
            }
            i0 = i1;
        }
    }

    /// F16 rows `row0..row0 + m` times `n_tok` tokens, bit-identical to [`dense::dot_f16`] row by row at
    /// the AVX-512 levels. Several tokens walk the rows in tiles of [`ROW_TILE`] rows, every token over
    /// a tile before the next tile, so each row comes from memory once per call and from L2 after that.
    #[cfg(target_arch = "x86_64")]
    fn f16_tiles_avx512(&self, x: &[f32], n_tok: usize, row0: usize, m: usize, y: &mut [f32], ldy: usize) {
        debug_assert!(x.len() >= n_tok * self.cols && row0 + m <= self.rows);
        if n_tok == 1 {
            // SAFETY: as in f16_block (the callers' contract).
            unsafe { self.f16_block::<1, 1>(x, 1, row0, 0, m, y, ldy, 0) };
            return;
        }
        let mut i0 = 0;
        while i0 < m {
            let i1 = m.min(i0 + ROW_TILE);
            // SAFETY: the caller clamped the level to the CPU (AVX-512 F + F16C present); rows
            // row0 + i0..row0 + i1 exist and hold 2 * cols bytes; every token has cols values.
            unsafe {
                // 4 x 2 measured fastest (criterion head_gemm_8tok: 47 G MAC/s against 23 for 1 x 4,
                // 36 for 2 x 2 and 4 x 1, 39 for 2 x 4 and 4 x 3).
                self.f16_block::<4, 2>(x, n_tok, row0, i0, i1, y, ldy, m)
            }
            i0 = i1;
        }
    }

    /// Q8_0 rows `row0 + i0..row0 + i1` times `n_tok` tokens, four tokens per row visit (fewer at the
    /// end); bit-identical to the one-token Q8_0 kernel of the x86 levels. `WIDE`: the AVX-512 tile
    /// (same results with fewer instructions), else the AVX2 one.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn q8_0_block<const WIDE: bool>(
        &self,
        x: &[f32],
        n_tok: usize,
        row0: usize,
        i0: usize,
        i1: usize,
        y: &mut [f32],
        ldy: usize,
    ) {
        use crate::x86::float_dot::{dot_tile_q8_0_avx2, dot_tile_q8_0_avx512};
        /// One row times `T` tokens.
        ///
        /// # Safety
        /// As [`dot_tile_q8_0_avx512`] when `WIDE`, else as [`dot_tile_q8_0_avx2`].
        unsafe fn tile<const WIDE: bool, const T: usize>(w: *const u8, x: [*const f32; T], n: usize) -> [f32; T] {
            // SAFETY: forwarded from the caller.
            unsafe {
                if WIDE {
                    dot_tile_q8_0_avx512::<T>(w, x, n)
                } else {
                    dot_tile_q8_0_avx2::<T>(w, x, n)
                }
            }
        }
        let cols = self.cols;
        let xp = |t: usize| x[t * cols..(t + 1) * cols].as_ptr();
        let mut t = 0;
        while t < n_tok {
            let nt = (n_tok - t).min(4);
            for i in i0..i1 {
                let w = self.row(row0 + i).as_ptr();
                // SAFETY: the callers clamped the level to the CPU (an x86 SIMD level: AVX2 + FMA + F16C,
                // and AVX-512 F when WIDE); a Q8_0 row of cols (a multiple of 32) values holds
                // cols / 32 * 34 bytes; every token has cols values.
                unsafe {
                    match nt {
                        4 => {
                            let d = tile::<WIDE, 4>(w, [xp(t), xp(t + 1), xp(t + 2), xp(t + 3)], cols);
                            for (k, v) in d.into_iter().enumerate() {
                                y[(t + k) * ldy + i] = v;
                            }
                        }
                        3 => {
                            let d = tile::<WIDE, 3>(w, [xp(t), xp(t + 1), xp(t + 2)], cols);
                            for (k, v) in d.into_iter().enumerate() {
                                y[(t + k) * ldy + i] = v;
                            }
                        }
                        2 => {
                            let d = tile::<WIDE, 2>(w, [xp(t), xp(t + 1)], cols);
                            for (k, v) in d.into_iter().enumerate() {
                                y[(t + k) * ldy + i] = v;
                            }
                        }
                        _ => y[t * ldy + i] = tile::<WIDE, 1>(w, [xp(t)], cols)[0],
                    }
                }
            }
            t += nt;
        }
    }

    /// Tokens `0..t1` times rows `row0 + i0..row0 + i1` in `R x T` tiles, with `1 x T`, `R x 1` and
    /// `1 x 1` tiles at the edges. Output `(t, i)` goes to `y[t * ldy + i]`. While the last tokens pass
    /// over the rows (from cache), the rows one tile further on (below `prefetch_end`) are prefetched.
    ///
    /// # Safety
    /// AVX-512 F + F16C available; the rows exist; `x` holds `t1 * cols` values; `y` is long enough.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn f16_block<const R: usize, const T: usize>(
        &self,
        x: &[f32],
        t1: usize,
        row0: usize,
        i0: usize,
        i1: usize,
        y: &mut [f32],
        ldy: usize,
        prefetch_end: usize,
    ) {
        use crate::x86::float_dot::dot_tile_f16_avx512 as tile;
        let cols = self.cols;
        let xp = |t: usize| x[t * cols..(t + 1) * cols].as_ptr();
        let wp = |i: usize| self.row(row0 + i).as_ptr();
        let mut t = 0;
        while t < t1 {
            let full_t = t1 - t >= T;
            let mut i = i0;
            while i < i1 {
                let full_r = i1 - i >= R;
                // SAFETY: forwarded from the caller: rows i.. and tokens t.. exist.
                unsafe {
                    match (full_r, full_t) {
                        (true, true) => {
                            let d = tile::<R, T>(
                                std::array::from_fn(|r| wp(i + r)),
                                std::array::from_fn(|k| xp(t + k)),
                                cols,
                            );
                            for (r, dr) in d.iter().enumerate() {
                                for (k, v) in dr.iter().enumerate() {
                                    y[(t + k) * ldy + i + r] = *v;
                                }
                            }
                        }
                        (false, true) => {
                            let d = tile::<1, T>([wp(i)], std::array::from_fn(|k| xp(t + k)), cols);
                            for (k, v) in d[0].iter().enumerate() {
                                y[(t + k) * ldy + i] = *v;
                            }
                        }
                        (true, false) => {
                            let d = tile::<R, 1>(std::array::from_fn(|r| wp(i + r)), [xp(t)], cols);
                            for (r, dr) in d.iter().enumerate() {
                                y[t * ldy + i + r] = dr[0];
                            }
                        }
                        (false, false) => y[t * ldy + i] = tile::<1, 1>([wp(i)], [xp(t)], cols)[0][0],
                    }
                }
                let nr = if full_r { R } else { 1 };
                let ahead = i + ROW_TILE;
                if t + T >= t1 && ahead + nr <= prefetch_end {
                    let start = (row0 + ahead) * self.row_bytes;
                    crate::simd::prefetch(&self.data[start..start + nr * self.row_bytes]);
                }
                i += nr;
            }
            t += if full_t { T } else { 1 };
        }
    }

    /// [`gemv`](Self::gemv) at an explicit SIMD level (lowered to what the CPU supports). Levels
    /// differ only by f32 summation order.
    pub fn gemv_with(&self, level: SimdLevel, x: &[f32], row0: usize, y: &mut [f32]) {
        assert!(
            x.len() >= self.cols,
            "gemv: x has {} values, need {}",
            x.len(),
            self.cols
        );
        let end = row0.checked_add(y.len()).expect("gemv: row range overflows");
        assert!(end <= self.rows, "gemv: rows {row0}..{end} out of {}", self.rows);
        let x = &x[..self.cols];
        let level = level.clamp_to_cpu();
        #[cfg(target_arch = "x86_64")]
        if self.format == FloatFormat::F16 && level.has_avx512() {
            let m = y.len();
            self.f16_tiles_avx512(x, 1, row0, m, y, m);
            return;
        }
        let dot: fn(SimdLevel, &[u8], &[f32]) -> f32 = match self.format {
            FloatFormat::F32 => dense::dot_f32,
            FloatFormat::F16 => dense::dot_f16,
            FloatFormat::BF16 => dense::dot_bf16,
            FloatFormat::Q8_0 => q8_0::dot,
            FloatFormat::Q6_K => q6_k::dot,
            FloatFormat::Q4_K => q4_k::dot,
        };
        for (i, o) in y.iter_mut().enumerate() {
            *o = dot(level, self.row(row0 + i), x);
        }
    }
}

fn format_name(f: FloatFormat) -> &'static str {
    match f {
        FloatFormat::F32 => "F32",
        FloatFormat::F16 => "F16",
        FloatFormat::BF16 => "BF16",
        FloatFormat::Q8_0 => "Q8_0",
        FloatFormat::Q6_K => "Q6_K",
        FloatFormat::Q4_K => "Q4_K",
    }
}

/// Scalar f32 dot with 8 independent partial sums (a fixed order the compiler can vectorize).
pub(crate) fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `a · b` over `min(a.len(), b.len())` values at the current [`simd_level`](crate::simd_level) (attention
/// scores use it: a sequential `iter().sum()` cannot be vectorized and costs 4 cycles of FMA latency per
/// element). Summation order differs from a plain loop by design; the result agrees to f32 rounding.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    dot_f32_slices(crate::simd_level(), &a[..n], &b[..n])
}

/// f32 slice dot at a SIMD level (used after a block has been dequantized to the stack).
pub(crate) fn dot_f32_slices(level: SimdLevel, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match level {
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx2() => {
            // SAFETY: callers pass a level already clamped to the CPU; these levels imply AVX2 + FMA.
            // The kernel reads a.len() values from both slices, which have equal lengths.
            unsafe { crate::x86::float_dot::dot_f32_avx2(a.as_ptr().cast(), b, a.len().min(b.len())) }
        }
        _ => dot_f32_scalar(a, b),
    }
}

#[cfg(test)]
mod tests;
