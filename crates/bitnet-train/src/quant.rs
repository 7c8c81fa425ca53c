//! The two BitNet b1.58 quantizers as autograd operations with straight-through gradients.
//!
//! Forward values are computed exactly as the inference engine computes them (`bitnet-kernels`):
//! weights per tensor with absmean (`s = 1/max(mean|W|, 1e-5)`, `W_q = clamp(round(W s), -1, 1) / s`),
//! activations per token (last dimension) to int8 (`s = 127/max(max|x|, 1e-5)`,
//! `x_q = clamp(round(x s), -128, 127) / s`), rounding half to even. The backward pass returns the
//! incoming gradient unchanged (no masking of saturated values), like the BitNet reference.
//!
//! The values are computed in f32 whatever the tensor's dtype (f64 tensors are used by the
//! finite-difference tests), so a f64 model rounds exactly where the f32 one does.

use bitnet_kernels::{quantize_row_i8, ternarize_absmean};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Smallest mean |W| the weight quantizer divides by (as the kernels and the reference).
const EPS: f32 = 1e-5;

/// Ternarizes `w` in place into its dequantized values `code / s` (returns the number of non-zero codes).
pub fn weight_quant_values(w: &mut [f32]) -> usize {
    let mut codes = vec![0i8; w.len()];
    ternarize_absmean(w, &mut codes);
    // The kernels return `1/s`; the reference divides by `s`, so recompute `s` the same way the kernels do.
    let sum: f64 = w.iter().map(|&v| f64::from(v.abs())).sum();
    let mean = (sum / w.len().max(1) as f64) as f32;
    let s = 1.0f32 / mean.max(EPS);
    let mut nz = 0;
    for (v, &c) in w.iter_mut().zip(&codes) {
        *v = f32::from(c) / s;
        nz += usize::from(c != 0);
    }
    nz
}

/// Quantizes each row of `x` (width `cols`) in place to its dequantized int8 values `q / s`.
pub fn act_quant_values(x: &mut [f32], cols: usize) {
    let mut q = vec![0i8; cols];
    for row in x.chunks_exact_mut(cols) {
        let s = quantize_row_i8(row, &mut q);
        for (v, &c) in row.iter_mut().zip(&q) {
            *v = f32::from(c) / s;
        }
    }
}

/// Which quantizer a [`SteQuant`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantKind {
    /// Per-tensor absmean ternarization (weights).
    Weight,
    /// Per-row (last dimension) absmax int8 (activations).
    Act,
}

/// A quantizer as a candle operation whose gradient is the identity (straight-through estimator).
#[derive(Clone, Copy, Debug)]
pub struct SteQuant(pub QuantKind);

impl SteQuant {
    fn apply_f32(&self, v: &mut [f32], shape: &Shape) {
        match self.0 {
            QuantKind::Weight => {
                weight_quant_values(v);
            }
            QuantKind::Act => {
                let cols = shape.dims().last().copied().unwrap_or(1).max(1);
                act_quant_values(v, cols);
            }
        }
    }
}

impl CustomOp1 for SteQuant {
    fn name(&self) -> &'static str {
        match self.0 {
            QuantKind::Weight => "ste-weight-quant",
            QuantKind::Act => "ste-act-quant",
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = layout.shape().clone();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: input must be contiguous", self.name())))?;
        match storage {
            CpuStorage::F32(data) => {
                let mut v = data[start..end].to_vec();
                self.apply_f32(&mut v, &shape);
                Ok((CpuStorage::F32(v), shape))
            }
            CpuStorage::F64(data) => {
                let mut v: Vec<f32> = data[start..end].iter().map(|&x| x as f32).collect();
                self.apply_f32(&mut v, &shape);
                Ok((CpuStorage::F64(v.into_iter().map(f64::from).collect()), shape))
            }
            _ => Err(candle_core::Error::Msg(format!(
                "{}: only f32 and f64 tensors are supported",
                self.name()
            ))),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.clone()))
    }
}

/// Ternarizes a weight tensor (straight-through gradient).
pub fn weight_quant(w: &Tensor) -> Result<Tensor> {
    w.contiguous()?.apply_op1(SteQuant(QuantKind::Weight))
}

/// Quantizes activations to int8 per row of the last dimension (straight-through gradient).
pub fn act_quant(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SteQuant(QuantKind::Act))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn weight_quant_is_ternary_times_one_scale() {
        let mut w = vec![0.3f32, -0.01, 0.9, -0.5, 0.0, 0.2];
        weight_quant_values(&mut w);
        let mean = (0.3 + 0.01 + 0.9 + 0.5 + 0.0 + 0.2) / 6.0f32;
        for (v, c) in w.iter().zip([1.0f32, 0.0, 1.0, -1.0, 0.0, 1.0]) {
            assert!((v - c * mean).abs() < 1e-6, "{v} vs {}", c * mean);
        }
    }

    #[test]
    fn act_quant_rounds_half_to_even_per_row() {
        // max|x| = 127 gives s = 1: values are their own codes, ties go to even.
        let mut x = vec![127.0f32, 0.5, 1.5, -2.5, 4.0, 2.0, 1.0, 0.5];
        act_quant_values(&mut x, 4);
        assert_eq!(&x[..4], &[127.0, 0.0, 2.0, -2.0]);
        // Second row: s = 127/4, so values are multiples of 4/127.
        for v in &x[4..] {
            let code = v * 127.0 / 4.0;
            assert!((code - code.round()).abs() < 1e-4);
        }
    }

    #[test]
    fn gradient_passes_straight_through() -> Result<()> {
        let w = Var::new(&[[0.3f32, -0.7], [0.1, 0.05]], &Device::Cpu)?;
        let g = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
        let loss = (weight_quant(w.as_tensor())? * &g)?.sum_all()?;
        let grads = loss.backward()?;
        let gw = grads.get(w.as_tensor()).map(|t| t.to_vec2::<f32>()).transpose()?;
        assert_eq!(gw, Some(vec![vec![1.0, 2.0], vec![3.0, 4.0]]));
        let x = Var::new(&[[0.3f32, -0.7, 0.2]], &Device::Cpu)?;
        let loss = act_quant(x.as_tensor())?.sum_all()?;
        let grads = loss.backward()?;
        let gx = grads.get(x.as_tensor()).map(|t| t.to_vec2::<f32>()).transpose()?;
        assert_eq!(gx, Some(vec![vec![1.0, 1.0, 1.0]]));
        Ok(())
    }
}
