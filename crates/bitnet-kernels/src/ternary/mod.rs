//! Ternary weight matrices and their int8 matrix-vector / matrix-matrix products.

pub mod hf_packed;
pub mod i2s;
pub(crate) mod tiled;
pub mod tq1_0;
pub mod tq2_0;
pub mod triple5;

use crate::bytes::Bytes;
use crate::error::KernelError;
use crate::simd::{simd_level, SimdLevel};
use i2s::I2sRows;
use std::fmt;
use tq2_0::TqRows;
use triple5::Triple5Rows;

/// Storage format of a [`TernaryMatrix`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TernaryFormat {
    /// bitnet.cpp's I2_S (per-tensor scale). Also the layout [`TernaryMatrix::from_codes`] builds.
    I2S,
    /// ggml TQ2_0 (2 bits per value, f16 scale per 256 values).
    TQ2_0,
    /// ggml TQ1_0 (1.6875 bits per value, f16 scale per 256 values).
    TQ1_0,
    /// Our load-time layout, three values in five bits with the per-tensor scale (see
    /// [`triple5`]); built by [`TernaryMatrix::to_triple5`], never read from a file.
    Triple5,
}

/// A ternary weight matrix (rows = output features, cols = input features) over borrowed bytes.
#[derive(Clone)]
pub struct TernaryMatrix {
    format: TernaryFormat,
    rows: usize,
    cols: usize,
    /// Bytes per row (blocks never straddle rows in any layout we accept).
    stride: usize,
    /// Per-tensor scale (I2_S and from_codes).
    scale: Option<f32>,
    /// No 2-bit code 3 anywhere in the packed values (lets SIMD kernels skip neutralizing it).
    clean: bool,
    data: Bytes,
}

impl fmt::Debug for TernaryMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TernaryMatrix")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("scale", &self.scale)
            .field("clean", &self.clean)
            .finish()
    }
}

fn check_dims(rows: usize, cols: usize) -> Result<(), KernelError> {
    if rows == 0 || cols == 0 {
        return Err(KernelError::Shape(format!("empty ternary matrix {rows} x {cols}")));
    }
    rows.checked_mul(cols)
        .ok_or_else(|| KernelError::Shape(format!("{rows} x {cols} overflows")))?;
    Ok(())
}

impl TernaryMatrix {
    /// Wraps I2_S bytes (`rows * cols / 4` packed bytes, then the f32 scale; the 28 padding bytes
    /// may be absent). Needs `cols % 128 == 0` so that blocks do not straddle rows.
    pub fn from_i2s(rows: usize, cols: usize, data: Bytes) -> Result<Self, KernelError> {
        check_dims(rows, cols)?;
        if !cols.is_multiple_of(i2s::BLOCK) {
            return Err(KernelError::Shape(format!(
                "I2_S needs the row length to be a multiple of {}, got {cols}",
                i2s::BLOCK
            )));
        }
        let scale = i2s::read_scale(&data, rows * cols)?;
        let clean = !i2s::contains_code3(&data[..rows * cols / 4]);
        Ok(TernaryMatrix {
            format: TernaryFormat::I2S,
            rows,
            cols,
            stride: cols / 4,
            scale: Some(scale),
            clean,
            data,
        })
    }

    /// Wraps TQ2_0 bytes (`cols % 256 == 0`).
    pub fn from_tq2_0(rows: usize, cols: usize, data: Bytes) -> Result<Self, KernelError> {
        Self::from_tq(
            TernaryFormat::TQ2_0,
            "TQ2_0",
            tq2_0::BLOCK,
            tq2_0::BLOCK_BYTES,
            rows,
            cols,
            data,
        )
    }

    /// Wraps TQ1_0 bytes (`cols % 256 == 0`).
    pub fn from_tq1_0(rows: usize, cols: usize, data: Bytes) -> Result<Self, KernelError> {
        Self::from_tq(
            TernaryFormat::TQ1_0,
            "TQ1_0",
            tq1_0::BLOCK,
            tq1_0::BLOCK_BYTES,
            rows,
            cols,
            data,
        )
    }

    fn from_tq(
        format: TernaryFormat,
        name: &'static str,
        block: usize,
        block_bytes: usize,
        rows: usize,
        cols: usize,
        data: Bytes,
    ) -> Result<Self, KernelError> {
        check_dims(rows, cols)?;
        if !cols.is_multiple_of(block) {
            return Err(KernelError::Shape(format!(
                "{name} needs the row length to be a multiple of {block}, got {cols}"
            )));
        }
        let stride = cols / block * block_bytes;
        let needed = rows * stride;
        if data.len() < needed {
            return Err(KernelError::DataTooShort {
                format: name,
                needed,
                got: data.len(),
            });
        }
        // Only the TQ2_0 kernels care (TQ1_0 digits are always 0..=2): scan its 64 code bytes
        // per block.
        let clean = format != TernaryFormat::TQ2_0
            || !data[..needed]
                .chunks_exact(block_bytes)
                .any(|blk| i2s::contains_code3(&blk[..64]));
        Ok(TernaryMatrix {
            format,
            clean,
            rows,
            cols,
            stride,
            scale: None,
            data,
        })
    }

    /// Packs row-major -1/0/1 values (any `cols`) into our in-memory layout: I2_S blocks with each
    /// row padded to a multiple of 128 values. `format()` then reports [`TernaryFormat::I2S`].
    pub fn from_codes(rows: usize, cols: usize, codes: &[i8], scale: f32) -> Result<Self, KernelError> {
        check_dims(rows, cols)?;
        if codes.len() != rows * cols {
            return Err(KernelError::Shape(format!(
                "{} codes for a {rows} x {cols} matrix",
                codes.len()
            )));
        }
        let stride = I2sRows::stride_for(cols);
        let mut data = vec![0u8; rows * stride];
        for (vals, out) in codes.chunks_exact(cols).zip(data.chunks_exact_mut(stride)) {
            for (vb, ob) in vals.chunks(i2s::BLOCK).zip(out.chunks_exact_mut(i2s::BLOCK_BYTES)) {
                i2s::pack_block(vb, ob)?;
            }
        }
        Ok(TernaryMatrix {
            format: TernaryFormat::I2S,
            rows,
            cols,
            stride,
            scale: Some(scale),
            clean: true,
            data: Bytes::from_vec(data),
        })
    }

    pub fn format(&self) -> TernaryFormat {
        self.format
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The per-tensor weight scale (I2_S and [`from_codes`](Self::from_codes)); `None` for the
    /// block-scaled TQ formats (see [`row_scales`](Self::row_scales)).
    pub fn scale(&self) -> Option<f32> {
        self.scale
    }

    /// Values that share one scale: 128 for I2_S (all blocks share the tensor scale), 256 for TQ.
    pub fn block_size(&self) -> usize {
        match self.format {
            TernaryFormat::I2S => i2s::BLOCK,
            TernaryFormat::Triple5 => triple5::BLOCK,
            TernaryFormat::TQ2_0 => tq2_0::BLOCK,
            TernaryFormat::TQ1_0 => tq1_0::BLOCK,
        }
    }

    /// The scale of every block of row `r` (`cols.div_ceil(block_size())` values written to the
    /// front of `out`); for I2_S every entry is the tensor scale.
    pub fn row_scales(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows, "row {r} out of {}", self.rows);
        let nb = self.cols.div_ceil(self.block_size());
        assert!(out.len() >= nb, "row_scales: need {nb} slots, got {}", out.len());
        let row = self.row_bytes(r);
        match self.format {
            TernaryFormat::I2S | TernaryFormat::Triple5 => out[..nb].fill(self.scale.unwrap_or(1.0)),
            TernaryFormat::TQ2_0 => {
                for (o, blk) in out.iter_mut().zip(row.chunks_exact(tq2_0::BLOCK_BYTES)) {
                    *o = tq2_0::block_scale(blk);
                }
            }
            TernaryFormat::TQ1_0 => {
                for (o, blk) in out.iter_mut().zip(row.chunks_exact(tq1_0::BLOCK_BYTES)) {
                    *o = tq1_0::block_scale(blk);
                }
            }
        }
    }

    /// Decodes row `r` into `out[..cols]` as -1/0/1.
    pub fn row_codes(&self, r: usize, out: &mut [i8]) {
        assert!(r < self.rows, "row {r} out of {}", self.rows);
        assert!(
            out.len() >= self.cols,
            "row_codes: need {} slots, got {}",
            self.cols,
            out.len()
        );
        match self.format {
            TernaryFormat::I2S => self.i2s_rows().row_codes(r, out),
            TernaryFormat::Triple5 => self.triple5_rows().row_codes(r, out),
            TernaryFormat::TQ2_0 => {
                for (blk, vals) in self
                    .row_bytes(r)
                    .chunks_exact(tq2_0::BLOCK_BYTES)
                    .zip(out.chunks_exact_mut(256))
                {
                    tq2_0::decode_block(blk, vals);
                }
            }
            TernaryFormat::TQ1_0 => {
                for (blk, vals) in self
                    .row_bytes(r)
                    .chunks_exact(tq1_0::BLOCK_BYTES)
                    .zip(out.chunks_exact_mut(256))
                {
                    tq1_0::decode_block(blk, vals);
                }
            }
        }
    }

    /// The same weights in the [`triple5`] layout (1.67 bits per value), with one scale for the
    /// tensor: I2_S matrices whose rows are whole I2_S blocks, and TQ2_0 / TQ1_0 matrices whose
    /// blocks all share one scale (or have scale 0), which is what converters write for BitNet
    /// b1.58, whose weights are one scale times -1/0/1. `None` otherwise. Rows are repacked in
    /// parallel on the worker pool; the result owns its bytes. I2_S results are unchanged bit for
    /// bit (the integer dots are exact either way); TQ results change by f32 rounding only, as
    /// the block sums are no longer scaled one by one.
    pub fn to_triple5(&self) -> Option<TernaryMatrix> {
        let scale = match self.format {
            TernaryFormat::I2S if self.cols.is_multiple_of(i2s::BLOCK) => self.scale,
            TernaryFormat::TQ2_0 | TernaryFormat::TQ1_0 => Some(self.shared_block_scale()?),
            _ => return None,
        };
        let (rows, cols) = (self.rows, self.cols);
        let stride = triple5::stride_for(cols);
        let mut data = vec![0u8; rows * stride + triple5::PAD];
        let simd = triple5_simd(simd_level());
        // About 1 MB of output per task.
        let rows_per_task = (1 << 20) / stride.max(1) + 1;
        crate::pool::for_each_chunk_mut(&mut data[..rows * stride], rows_per_task * stride, |i, out| {
            let r0 = i * rows_per_task;
            let r1 = r0 + out.len() / stride;
            if self.format == TernaryFormat::I2S {
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: triple5_simd checked AVX-512 + VBMI; cols % 128 == 0 (checked
                    // above), rows r0..r1 exist and `out` holds exactly their bytes.
                    unsafe { crate::x86::triple5_avx512::repack_i2s_rows(self.i2s_rows(), r0, r1, out) };
                    return;
                }
                triple5::repack_i2s_rows(self.i2s_rows(), r0, r1, out);
                return;
            }
            let mut u = vec![0u8; cols];
            for (r, o) in (r0..r1).zip(out.chunks_exact_mut(stride)) {
                self.tq_unsigned_row(r, &mut u);
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: triple5_simd checked AVX-512 + VBMI; u holds cols (a multiple of 256)
                    // codes 0..=2, o one Triple5 row.
                    unsafe { crate::x86::triple5_avx512::pack_row(&u, o) };
                    continue;
                }
                triple5::pack_row(&u, o);
            }
        });
        Some(TernaryMatrix {
            format: TernaryFormat::Triple5,
            rows,
            cols,
            stride,
            scale,
            clean: true,
            data: Bytes::from_vec(data),
        })
    }

    /// A TQ1_0 matrix as TQ2_0 (same values, same block scales, so the same results at the scalar
    /// level): 2.06 instead of 1.69 bits per value, but TQ2_0 has SIMD kernels at every x86 level
    /// and TQ1_0 only the scalar one. `None` for other formats. Repacked in parallel on the pool.
    pub fn to_tq2_0(&self) -> Option<TernaryMatrix> {
        if self.format != TernaryFormat::TQ1_0 {
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
                    tq2_0::pack_unsigned_block(&u, [blk[52], blk[53]], ob);
                }
            }
        });
        Some(TernaryMatrix {
            format: TernaryFormat::TQ2_0,
            rows: self.rows,
            cols: self.cols,
            stride,
            scale: None,
            clean: true,
            data: Bytes::from_vec(data),
        })
    }

    /// The one scale of every TQ block whose scale is not zero (0 if all are), or `None` when they
    /// differ or one is not finite.
    fn shared_block_scale(&self) -> Option<f32> {
        let (bytes, scale_at): (usize, fn(&[u8]) -> f32) = match self.format {
            TernaryFormat::TQ2_0 => (tq2_0::BLOCK_BYTES, tq2_0::block_scale),
            TernaryFormat::TQ1_0 => (tq1_0::BLOCK_BYTES, tq1_0::block_scale),
            _ => return None,
        };
        let mut shared = None;
        for blk in self.data[..self.rows * self.stride].chunks_exact(bytes) {
            let d = scale_at(blk);
            if !d.is_finite() {
                return None;
            }
            if d != 0.0 && *shared.get_or_insert(d) != d {
                return None;
            }
        }
        Some(shared.unwrap_or(0.0))
    }

    /// Unsigned codes (0..=2) of TQ row `r`; blocks with scale 0 read as zeros (code 1).
    fn tq_unsigned_row(&self, r: usize, u: &mut [u8]) {
        let tq2 = self.format == TernaryFormat::TQ2_0;
        let bytes = if tq2 { tq2_0::BLOCK_BYTES } else { tq1_0::BLOCK_BYTES };
        for (blk, ub) in self.row_bytes(r).chunks_exact(bytes).zip(u.chunks_exact_mut(256)) {
            let d = if tq2 {
                tq2_0::block_scale(blk)
            } else {
                tq1_0::block_scale(blk)
            };
            if d == 0.0 {
                ub.fill(1);
            } else if tq2 {
                tq2_0::unsigned_block(blk, ub);
            } else {
                tq1_0::unsigned_block(blk, ub);
            }
        }
    }

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
        if matches!(
            simd_level(),
            SimdLevel::Avx2 | SimdLevel::Avx512 | SimdLevel::Avx512Vnni
        ) {
            if let Some(t2) = self.to_tq2_0() {
                return t2;
            }
        }
        self
    }

    /// Whether the kernels of this CPU (at the current [`simd_level`]) run [`triple5`] matrices
    /// faster than I2_S ones: AVX-512 VNNI plus VBMI (Ice Lake, Zen 4 and later). Loaders repack
    /// with [`to_triple5`](Self::to_triple5) when this holds.
    pub fn prefers_triple5() -> bool {
        triple5_simd(simd_level())
    }

    /// The raw bytes (file layout, or our layout for [`from_codes`](Self::from_codes) and
    /// [`to_triple5`](Self::to_triple5)).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    fn row_bytes(&self, r: usize) -> &[u8] {
        &self.data[r * self.stride..(r + 1) * self.stride]
    }

    fn triple5_rows(&self) -> Triple5Rows<'_> {
        Triple5Rows {
            data: &self.data,
            cols: self.cols,
            stride: self.stride,
        }
    }

    fn i2s_rows(&self) -> I2sRows<'_> {
        I2sRows {
            clean: self.clean,
            data: &self.data[..self.rows * self.stride],
            cols: self.cols,
            stride: self.stride,
        }
    }

    /// `y[i] = (sum_j q[j] * t[row0 + i][j]) * w_scale / x_scale` for `i < y.len()`, with integer
    /// accumulation per row (per block for the TQ formats, whose per-block scales are summed in
    /// f32). `q` holds `cols` int8 activations and `x_scale` is what [`crate::quantize_row_i8`]
    /// returned for them.
    ///
    /// # Panics
    /// If `q.len() < cols` or `row0 + y.len() > rows`.
    pub fn gemv(&self, q: &[i8], x_scale: f32, row0: usize, y: &mut [f32]) {
        self.gemv_with(simd_level(), q, x_scale, row0, y)
    }

    /// [`gemv`](Self::gemv) at an explicit SIMD level (lowered to what the CPU supports).
    pub fn gemv_with(&self, level: SimdLevel, q: &[i8], x_scale: f32, row0: usize, y: &mut [f32]) {
        assert!(
            q.len() >= self.cols,
            "gemv: q has {} values, need {}",
            q.len(),
            self.cols
        );
        let end = row0.checked_add(y.len()).expect("gemv: row range overflows");
        assert!(end <= self.rows, "gemv: rows {row0}..{end} out of {}", self.rows);
        let q = &q[..self.cols];
        let level = level.clamp_to_cpu();
        match self.format {
            TernaryFormat::I2S => {
                let v = self.i2s_rows();
                let ws = self.scale.unwrap_or(1.0);
                match level {
                    #[cfg(target_arch = "x86_64")]
                    SimdLevel::Avx512Vnni => {
                        // SAFETY: clamp_to_cpu returned Avx512Vnni, so AVX-512 F/BW/VL + VNNI are present;
                        // the bounds were asserted above.
                        unsafe { crate::x86::i2s_avx512::gemv(v, ws, q, x_scale, row0, y) }
                    }
                    #[cfg(target_arch = "x86_64")]
                    SimdLevel::Avx2 | SimdLevel::Avx512 => {
                        // SAFETY: both levels imply AVX2 + FMA + F16C; bounds asserted above.
                        unsafe { crate::x86::i2s_avx2::gemv(v, ws, q, x_scale, row0, y) }
                    }
                    _ => {
                        let m = y.len();
                        tiled::gemm_scalar(v, ws, q, &[x_scale], row0, m, y, m)
                    }
                }
            }
            // These kernels are written for token tiles; one token is the smallest tile.
            TernaryFormat::Triple5 | TernaryFormat::TQ2_0 | TernaryFormat::TQ1_0 => {
                let m = y.len();
                self.gemm_with(level, q, &[x_scale], row0, m, y, m)
            }
        }
    }

    /// `n = x_scales.len()` tokens at once: `q` is `[n, cols]` (token `t` at `q[t * cols..]`) and
    /// row `row0 + i` (`i < m`) of token `t` is written to `y[t * ldy + i]`. So `y` is an
    /// `[n, ldy]` block holding just these `m` rows (what a thread working on rows
    /// `row0..row0 + m` owns); pass `y = full_output, ldy = rows, row0 = 0, m = rows` for all rows.
    /// Each weight row is read once per call and reused across tiles of tokens.
    ///
    /// # Panics
    /// If `q.len() < n * cols`, `row0 + m > rows`, `m > ldy` or `y.len() < (n - 1) * ldy + m`.
    pub fn gemm(&self, q: &[i8], x_scales: &[f32], row0: usize, m: usize, y: &mut [f32], ldy: usize) {
        self.gemm_with(simd_level(), q, x_scales, row0, m, y, ldy)
    }

    /// [`gemm`](Self::gemm) at an explicit SIMD level (lowered to what the CPU supports).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_with(
        &self,
        level: SimdLevel,
        q: &[i8],
        x_scales: &[f32],
        row0: usize,
        m: usize,
        y: &mut [f32],
        ldy: usize,
    ) {
        let n = x_scales.len();
        if n == 0 || m == 0 {
            return;
        }
        let need_q = n.checked_mul(self.cols).expect("gemm: n * cols overflows");
        assert!(q.len() >= need_q, "gemm: q has {} values, need {need_q}", q.len());
        let end = row0.checked_add(m).expect("gemm: row range overflows");
        assert!(end <= self.rows, "gemm: rows {row0}..{end} out of {}", self.rows);
        assert!(m <= ldy, "gemm: m = {m} > ldy = {ldy}");
        let need_y = (n - 1)
            .checked_mul(ldy)
            .and_then(|v| v.checked_add(m))
            .expect("gemm: y size overflows");
        assert!(y.len() >= need_y, "gemm: y has {} values, need {need_y}", y.len());
        let q = &q[..need_q];
        let level = level.clamp_to_cpu();
        match self.format {
            TernaryFormat::I2S => {
                let v = self.i2s_rows();
                let ws = self.scale.unwrap_or(1.0);
                match level {
                    #[cfg(target_arch = "x86_64")]
                    SimdLevel::Avx512Vnni => {
                        // SAFETY: clamp_to_cpu returned Avx512Vnni, so AVX-512 F/BW/VL + VNNI are present;
                        // the bounds were asserted above.
                        unsafe { crate::x86::i2s_avx512::gemm(v, ws, q, x_scales, row0, m, y, ldy) }
                    }
                    #[cfg(target_arch = "x86_64")]
                    SimdLevel::Avx2 | SimdLevel::Avx512 => {
                        // SAFETY: both levels imply AVX2 + FMA + F16C; bounds asserted above.
                        unsafe { crate::x86::i2s_avx2::gemm(v, ws, q, x_scales, row0, m, y, ldy) }
                    }
                    _ => tiled::gemm_scalar(v, ws, q, x_scales, row0, m, y, ldy),
                }
            }
            TernaryFormat::Triple5 => {
                let v = self.triple5_rows();
                let ws = self.scale.unwrap_or(1.0);
                if triple5_simd(level) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: triple5_simd checked AVX-512 VNNI (clamped to the CPU) and VBMI; the
                    // bounds were asserted above; the buffer ends with triple5::PAD bytes.
                    unsafe {
                        crate::x86::triple5_avx512::gemm(v, ws, q, x_scales, row0, m, y, ldy)
                    }
                } else {
                    tiled::gemm_scalar(v, ws, q, x_scales, row0, m, y, ldy)
                }
            }
            TernaryFormat::TQ2_0 => match level {
                #[cfg(target_arch = "x86_64")]
                SimdLevel::Avx512Vnni if self.cols / tq2_0::BLOCK <= tq2_0::MAX_BLOCKS => {
                    // SAFETY: clamp_to_cpu returned Avx512Vnni, so AVX-512 F/BW/VL + VNNI are
                    // present; bounds asserted above; the row fits the kernel's block table.
                    unsafe { crate::x86::tq2_0_avx512::gemm(self.tq_view(), q, x_scales, row0, m, y, ldy) }
                }
                #[cfg(target_arch = "x86_64")]
                SimdLevel::Avx2 | SimdLevel::Avx512 if self.cols / tq2_0::BLOCK <= tq2_0::MAX_BLOCKS => {
                    // SAFETY: these levels imply AVX2 + FMA + F16C; bounds asserted above; the row
                    // fits the kernel's block table.
                    unsafe { crate::x86::tq2_0_avx2::gemm(self.tq_view(), q, x_scales, row0, m, y, ldy) }
                }
                _ => {
                    for (t, &xs) in x_scales.iter().enumerate() {
                        let qt = &q[t * self.cols..(t + 1) * self.cols];
                        for i in 0..m {
                            y[t * ldy + i] = tq2_0::row_dot_scalar(self.row_bytes(row0 + i), qt) / xs;
                        }
                    }
                }
            },
            TernaryFormat::TQ1_0 => {
                // Decoding TQ1_0 costs more than the dot, so each block is decoded once for a tile
                // of tokens.
                const T: usize = 4;
                let mut t0 = 0;
                while t0 < n {
                    let nt = T.min(n - t0);
                    let mut toks: [&[i8]; T] = [&[]; T];
                    for (k, tk) in toks.iter_mut().enumerate().take(nt) {
                        *tk = &q[(t0 + k) * self.cols..(t0 + k + 1) * self.cols];
                    }
                    for i in 0..m {
                        let mut acc = [0.0f32; T];
                        tq1_0::row_dots(self.row_bytes(row0 + i), &toks[..nt], &mut acc[..nt]);
                        for k in 0..nt {
                            y[(t0 + k) * ldy + i] = acc[k] / x_scales[t0 + k];
                        }
                    }
                    t0 += nt;
                }
            }
        }
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn tq_view(&self) -> TqRows<'_> {
        TqRows {
            clean: self.clean,
            data: &self.data[..self.rows * self.stride],
            cols: self.cols,
            stride: self.stride,
        }
    }
}

/// Whether `level` (clamped to the CPU) has the Triple5 SIMD kernel: AVX-512 VNNI plus VBMI.
fn triple5_simd(level: SimdLevel) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        level.clamp_to_cpu() == SimdLevel::Avx512Vnni && std::arch::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        false
    }
}
