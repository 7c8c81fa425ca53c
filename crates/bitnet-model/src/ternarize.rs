//! Turning float weights into ternary matrices at load time.

use anyhow::{Context, Result};
use bitnet_kernels::{ternarize_absmean, FloatMatrix, TernaryMatrix};

/// How float projection weights become ternary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatToTernary {
    /// BitNet's online quantization (Hugging Face bf16 masters): absmean per tensor,
    /// `t = clamp(round(W / mean|W|), -1, 1)`, scale `mean|W|`.
    Absmean,
    /// Weights that a converter already ternarized and stored as `t * scale` in F16/F32 (llama.cpp's F16
    /// `bitnet` files): recover the codes and the scale exactly; fall back to absmean when the tensor is
    /// not of that form.
    ExactOrAbsmean,
}

/// Dequantizes `m` (one tensor at a time, so at most one f32 copy of the largest tensor lives at once)
/// and ternarizes it.
pub fn ternary_from_float(m: &FloatMatrix, how: FloatToTernary, name: &str) -> Result<TernaryMatrix> {
    let (rows, cols) = (m.rows(), m.cols());
    let mut w = vec![0.0f32; rows * cols];
    for (r, row) in w.chunks_exact_mut(cols).enumerate() {
        m.dequantize_row(r, row);
    }
    if let Some(bad) = w.iter().find(|v| !v.is_finite()) {
        anyhow::bail!("tensor '{name}' holds a non-finite weight ({bad})");
    }
    let mut codes = vec![0i8; rows * cols];
    let scale = match (how, exact_ternary_scale(&w)) {
        (FloatToTernary::ExactOrAbsmean, Some(s)) => {
            for (c, &v) in codes.iter_mut().zip(&w) {
                *c = if v > 0.0 {
                    1
                } else if v < 0.0 {
                    -1
                } else {
                    0
                };
            }
            s
        }
        _ => ternarize_absmean(&w, &mut codes),
    };
    TernaryMatrix::from_codes(rows, cols, &codes, scale).with_context(|| format!("packing tensor '{name}'"))
}

/// `Some(s)` when every weight is 0 or ±s (one magnitude for the whole tensor).
fn exact_ternary_scale(w: &[f32]) -> Option<f32> {
    let mut s = 0.0f32;
    for &v in w {
        let a = v.abs();
        if a == 0.0 {
            continue;
        }
        if s == 0.0 {
            s = a;
        } else if a != s {
            return None;
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_exact_ternary() {
        assert_eq!(exact_ternary_scale(&[0.5, -0.5, 0.0, 0.5]), Some(0.5));
        assert_eq!(exact_ternary_scale(&[0.5, -0.25]), None);
        assert_eq!(exact_ternary_scale(&[0.0, 0.0]), Some(0.0));
    }
}
