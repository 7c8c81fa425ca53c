//! Ternary weight matrices and their int8 matrix-vector / matrix-matrix products.
//!
//! One folder or file per layout (`i2s/`, `tq2_0/`, `tq1_0.rs`, `triple5/`): its bit layout, its
//! scalar twin, its SIMD kernels and its [`layout::Layout`] impl. [`TernaryMatrix`] holds the
//! layout's table of functions and kernels ([`layout::LayoutOps`]), chosen once when the matrix is
//! made; `repack.rs` holds the load-time choice of layout for this CPU; `tiled.rs` the loop nest
//! the per-tensor-scaled layouts' kernels share.

pub mod hf_packed;
pub mod i2s;
pub(crate) mod layout;
mod repack;
pub(crate) mod tiled;
pub mod tq1_0;
pub mod tq2_0;
pub mod triple5;

use crate::bytes::Bytes;
use crate::error::KernelError;
use crate::operands::{OutRows, QTokens};
use crate::simd::{simd_level, SimdLevel};
use i2s::I2sRows;
use layout::{BlockLayout, Layout, LayoutOps};
use std::fmt;

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
    /// The layout's functions and kernels (format, block size, decoders, gemm per SIMD level).
    ops: LayoutOps,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// Bytes per row (blocks never straddle rows in any layout we accept).
    pub(crate) stride: usize,
    /// Per-tensor scale (I2_S, Triple5 and from_codes).
    pub(crate) scale: Option<f32>,
    /// No 2-bit code 3 anywhere in the packed values (lets SIMD kernels skip neutralizing it).
    pub(crate) clean: bool,
    pub(crate) data: Bytes,
}

impl fmt::Debug for TernaryMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TernaryMatrix")
            .field("format", &self.format())
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
    /// A matrix of layout `L` over `data`, with `L`'s functions and kernels chosen once here.
    pub(crate) fn with_layout<L: Layout>(
        rows: usize,
        cols: usize,
        stride: usize,
        scale: Option<f32>,
        clean: bool,
        data: Bytes,
    ) -> TernaryMatrix {
        TernaryMatrix {
            ops: LayoutOps::of::<L>(),
            rows,
            cols,
            stride,
            scale,
            clean,
            data,
        }
    }

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
        Ok(TernaryMatrix::with_layout::<i2s::I2s>(
            rows,
            cols,
            cols / 4,
            Some(scale),
            clean,
            data,
        ))
    }

    /// Wraps TQ2_0 bytes (`cols % 256 == 0`).
    pub fn from_tq2_0(rows: usize, cols: usize, data: Bytes) -> Result<Self, KernelError> {
        Self::from_tq::<tq2_0::Tq2>(rows, cols, data)
    }

    /// Wraps TQ1_0 bytes (`cols % 256 == 0`).
    pub fn from_tq1_0(rows: usize, cols: usize, data: Bytes) -> Result<Self, KernelError> {
        Self::from_tq::<tq1_0::Tq1>(rows, cols, data)
    }

    fn from_tq<L: BlockLayout>(rows: usize, cols: usize, data: Bytes) -> Result<Self, KernelError> {
        let (name, block, block_bytes) = (L::NAME, L::BLOCK, L::BLOCK_BYTES);
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
        let blocks = data[..needed].chunks_exact(block_bytes);
        if let Some((i, d)) = blocks.map(L::block_scale).enumerate().find(|(_, d)| !d.is_finite()) {
            return Err(KernelError::InvalidData(format!(
                "{name} block {i} has scale {d}; a weight scale must be a finite number"
            )));
        }
        // Only the TQ2_0 kernels care (TQ1_0 digits are always 0..=2): scan its 64 code bytes
        // per block.
        let clean = L::FORMAT != TernaryFormat::TQ2_0
            || !data[..needed]
                .chunks_exact(block_bytes)
                .any(|blk| i2s::contains_code3(&blk[..64]));
        Ok(TernaryMatrix::with_layout::<L>(rows, cols, stride, None, clean, data))
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
        Ok(TernaryMatrix::with_layout::<i2s::I2s>(
            rows,
            cols,
            stride,
            Some(scale),
            true,
            Bytes::from_vec(data),
        ))
    }

    pub fn format(&self) -> TernaryFormat {
        self.ops.format
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The per-tensor weight scale (I2_S, Triple5 and [`from_codes`](Self::from_codes)); `None` for
    /// the block-scaled TQ formats (see [`row_scales`](Self::row_scales)).
    pub fn scale(&self) -> Option<f32> {
        self.scale
    }

    /// Values that share one scale: 128 for I2_S (all blocks share the tensor scale), 256 for TQ.
    pub fn block_size(&self) -> usize {
        self.ops.block
    }

    /// The scale of every block of row `r` (`cols.div_ceil(block_size())` values written to the
    /// front of `out`); for the per-tensor-scaled layouts every entry is the tensor scale.
    pub fn row_scales(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows, "row {r} out of {}", self.rows);
        let nb = self.cols.div_ceil(self.block_size());
        assert!(out.len() >= nb, "row_scales: need {nb} slots, got {}", out.len());
        (self.ops.row_scales)(self, r, &mut out[..nb]);
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
        (self.ops.row_codes)(self, r, &mut out[..self.cols]);
    }

    /// The raw bytes (file layout, or our layout for [`from_codes`](Self::from_codes) and
    /// [`to_triple5`](Self::to_triple5)).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub(crate) fn row_bytes(&self, r: usize) -> &[u8] {
        &self.data[r * self.stride..(r + 1) * self.stride]
    }

    /// The per-tensor scale the per-tensor-scaled kernels multiply by.
    pub(crate) fn w_scale(&self) -> f32 {
        self.scale.unwrap_or(1.0)
    }

    pub(crate) fn i2s_rows(&self) -> I2sRows<'_> {
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
    /// returned for them. One token is the smallest tile of [`gemm`](Self::gemm): the same kernel.
    ///
    /// # Panics
    /// If `q.len() < cols` or `row0 + y.len() > rows`.
    pub fn gemv(&self, q: &[i8], x_scale: f32, row0: usize, y: &mut [f32]) {
        self.gemv_with(simd_level(), q, x_scale, row0, y)
    }

    /// [`gemv`](Self::gemv) at an explicit SIMD level (lowered to what the CPU supports).
    pub fn gemv_with(&self, level: SimdLevel, q: &[i8], x_scale: f32, row0: usize, y: &mut [f32]) {
        self.gemm_with(level, QTokens::one(q, &x_scale), OutRows::one(y, row0))
    }

    /// `x.n()` tokens at once: row `out.row0() + i` of token `t` is written to
    /// `y[t * ldy + i]` of the output block (see [`OutRows`]). Each weight row is read once per
    /// call and reused across tiles of tokens.
    ///
    /// # Panics
    /// If `x.q` holds fewer than `x.n() * cols` values or `out` does not fit `x.n()` tokens of
    /// this matrix's rows.
    pub fn gemm(&self, x: QTokens<'_>, out: OutRows<'_>) {
        self.gemm_with(simd_level(), x, out)
    }

    /// [`gemm`](Self::gemm) at an explicit SIMD level (lowered to what the CPU supports).
    pub fn gemm_with(&self, level: SimdLevel, x: QTokens<'_>, out: OutRows<'_>) {
        let n = x.n();
        out.check(n, self.rows, "gemm");
        if n == 0 || out.m() == 0 {
            return;
        }
        let need_q = n.checked_mul(self.cols).expect("gemm: n * cols overflows");
        assert!(x.q.len() >= need_q, "gemm: q has {} values, need {need_q}", x.q.len());
        let x = QTokens::new(&x.q[..need_q], x.scales);
        (self.ops.kernel(level))(self, x, out)
    }
}
