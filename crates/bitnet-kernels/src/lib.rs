//! Weight formats, activation quantization and matrix-vector kernels for BitNet b1.58 inference.
//!
//! * [`TernaryMatrix`]: ternary projection weights in I2_S (bitnet.cpp), TQ2_0 / TQ1_0 (ggml) or our
//!   in-memory layout ([`TernaryMatrix::from_codes`]), multiplied against int8-quantized activations
//!   with integer accumulation.
//! * [`FloatMatrix`]: F32 / F16 / BF16 / Q8_0 / Q6_K / Q4_K matrices (embedding table, output head).
//! * [`quantize_row_i8`] / [`ternarize_absmean`]: BitNet's activation and weight quantizers.
//!
//! Every SIMD kernel has a scalar twin; [`simd_level`] picks the best level the CPU supports at run
//! time (capped by `BITNET_SIMD` or [`set_simd_level`]). Weight bytes are borrowed through [`Bytes`]
//! (usually a view into a memory-mapped file) and are never copied or expanded to f32.

mod act_quant;
pub mod attention;
pub(crate) mod blocks;
mod bytes;
mod error;
mod float;
mod operands;
pub mod ops;
pub mod pool;
mod simd;
mod ternary;
#[cfg(target_arch = "x86_64")]
mod x86;
mod zeroed;

pub use act_quant::{quantize_row_i8, quantize_row_i8_with, sum_i8_with, ternarize_absmean};
pub use bytes::Bytes;
pub use error::KernelError;
pub use float::{dot_f32, FloatFormat, FloatMatrix};
pub use operands::{OutRows, QTokens};
pub use simd::{detected_simd_level, set_simd_level, simd_level, supported_simd_levels, SimdLevel};
pub use ternary::{hf_packed, i2s, tq1_0, tq2_0, triple5, TernaryFormat, TernaryMatrix};
pub use zeroed::{try_zeroed_f32, try_zeroed_u16};
