//! `bitnet quant-report`: where ternarization loses information, for a model with master weights
//! (Hugging Face bf16 folder).
//!
//! Per projection tensor: the absmean ternarization the engine applies at load (`t = clamp(round(W /
//! mean|W|), -1, 1)`, scale `mean|W|`) against the masters: MSE, SQNR in dB, cosine similarity, fraction
//! of zero codes and the scale. With a calibration text, per layer: how much the layer's branch output
//! (attention + FFN, the part added to the residual) moves when the weights become ternary, and again
//! when activations also become int8 ([`calib`]).

pub mod calib;
pub mod plot;
pub mod table;

use std::path::Path;

use anyhow::{bail, Context, Result};
use bitnet_kernels::ternarize_absmean;
use bitnet_model::load_hf::{read_config, Checkpoint};
use bitnet_model::{detect, ModelKind};
use rayon::prelude::*;
use safetensors::Dtype;
use serde::Serialize;

use crate::progress;
use bitnet_model::arch::LayerTensor;

/// The seven projections of a layer: (Hugging Face name, short label, rows, cols) given the shapes.
pub fn projections(h: usize, qd: usize, kvd: usize, ffn: usize) -> [(&'static str, &'static str, usize, usize); 7] {
    [
        (LayerTensor::Q.hf(), "q", qd, h),
        (LayerTensor::K.hf(), "k", kvd, h),
        (LayerTensor::V.hf(), "v", kvd, h),
        (LayerTensor::O.hf(), "o", h, qd),
        (LayerTensor::Gate.hf(), "gate", ffn, h),
        (LayerTensor::Up.hf(), "up", ffn, h),
        (LayerTensor::Down.hf(), "down", h, ffn),
    ]
}

/// Ternarization error of one tensor.
#[derive(Clone, Debug, Serialize)]
pub struct TensorStat {
    pub name: String,
    pub layer: usize,
    pub proj: String,
    pub rows: usize,
    pub cols: usize,
    /// The absmean scale `mean|W|` (ternary value of a ±1 code).
    pub scale: f32,
    pub zero_fraction: f64,
    pub mse: f64,
    pub sqnr_db: f64,
    pub cosine: f64,
}

/// Layer-output error on a calibration text (see [`calib`]).
#[derive(Clone, Debug, Serialize)]
pub struct LayerError {
    pub layer: usize,
    /// Masters vs ternary weights (float activations).
    pub sqnr_weights_db: f64,
    /// Ternary weights with float vs int8 activations.
    pub sqnr_acts_db: f64,
    /// Masters with float activations vs what the engine computes (ternary weights, int8 activations).
    pub sqnr_total_db: f64,
    pub cosine_total: f64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub tensors: Vec<TensorStat>,
    pub calibration_tokens: usize,
    pub layers: Vec<LayerError>,
}

/// Error statistics of `w` against `codes * scale`.
pub fn tensor_stats(w: &[f32], codes: &[i8], scale: f32) -> (f64, f64, f64, f64) {
    let (mut se, mut sw, mut sq, mut dot) = (0f64, 0f64, 0f64, 0f64);
    let mut zeros = 0usize;
    for (&x, &c) in w.iter().zip(codes) {
        let q = c as f64 * scale as f64;
        let x = x as f64;
        se += (x - q) * (x - q);
        sw += x * x;
        sq += q * q;
        dot += x * q;
        zeros += usize::from(c == 0);
    }
    let n = w.len().max(1) as f64;
    let sqnr = if se > 0.0 {
        10.0 * (sw / se).log10()
    } else {
        f64::INFINITY
    };
    let cos = if sw > 0.0 && sq > 0.0 {
        dot / (sw.sqrt() * sq.sqrt())
    } else {
        0.0
    };
    (se / n, sqnr, cos, zeros as f64 / n)
}

/// SQNR in dB of `approx` against `reference`, and their cosine similarity.
pub fn sqnr_cos(reference: &[f32], approx: &[f32]) -> (f64, f64) {
    let (mut se, mut sr, mut sa, mut dot) = (0f64, 0f64, 0f64, 0f64);
    for (&r, &a) in reference.iter().zip(approx) {
        let (r, a) = (r as f64, a as f64);
        se += (r - a) * (r - a);
        sr += r * r;
        sa += a * a;
        dot += r * a;
    }
    let sqnr = if se > 0.0 {
        10.0 * (sr / se).log10()
    } else {
        f64::INFINITY
    };
    let cos = if sr > 0.0 && sa > 0.0 {
        dot / (sr.sqrt() * sa.sqrt())
    } else {
        0.0
    };
    (sqnr, cos)
}

/// Opens a model folder that has master weights, or says why not.
pub fn open_masters(model: &Path) -> Result<(std::path::PathBuf, Checkpoint)> {
    let (kind, dir) = detect(model)?;
    if kind != ModelKind::HfFolder {
        bail!(
            "{}: quant-report needs master (bf16/f16/f32) weights from a Hugging Face folder, such as \
             microsoft/bitnet-b1.58-2B-4T-bf16; a GGUF file holds ternary weights only",
            model.display()
        );
    }
    let ck = Checkpoint::open(&dir)?;
    Ok((dir, ck))
}

/// Per-tensor ternarization error of every projection.
pub fn tensor_report(model: &Path, quiet: bool) -> Result<Vec<TensorStat>> {
    let (dir, ck) = open_masters(model)?;
    let (cfg, _) = read_config(&dir, None)?;
    let (h, qd, kvd, ffn) = (
        cfg.hidden_size,
        cfg.num_heads * cfg.head_dim,
        cfg.kv_dim(),
        cfg.intermediate_size,
    );
    let pb = progress::bar((cfg.num_layers * 7) as u64, "tensors", quiet);
    let mut out = Vec::with_capacity(cfg.num_layers * 7);
    for layer in 0..cfg.num_layers {
        let stats: Vec<Result<TensorStat>> = projections(h, qd, kvd, ffn)
            .par_iter()
            .map(|&(hf, label, rows, cols)| {
                let name = format!("model.layers.{layer}.{hf}.weight");
                let t = ck.get(&name)?;
                if t.dtype == Dtype::U8 {
                    bail!(
                        "tensor '{name}' holds packed ternary codes (the released uint8 form), not master weights; \
                         quant-report needs the bf16 masters (e.g. microsoft/bitnet-b1.58-2B-4T-bf16)"
                    );
                }
                let m = ck.float_matrix(&name, rows, cols)?;
                let mut w = vec![0f32; rows * cols];
                for (r, row) in w.chunks_exact_mut(cols).enumerate() {
                    m.dequantize_row(r, row);
                }
                if let Some(bad) = w.iter().find(|v| !v.is_finite()) {
                    bail!("tensor '{name}' holds a non-finite weight ({bad})");
                }
                let mut codes = vec![0i8; w.len()];
                let scale = ternarize_absmean(&w, &mut codes);
                let (mse, sqnr_db, cosine, zero_fraction) = tensor_stats(&w, &codes, scale);
                pb.inc(1);
                Ok(TensorStat {
                    name,
                    layer,
                    proj: label.to_string(),
                    rows,
                    cols,
                    scale,
                    zero_fraction,
                    mse,
                    sqnr_db,
                    cosine,
                })
            })
            .collect();
        for s in stats {
            out.push(s.with_context(|| format!("layer {layer} of {}", dir.display()))?);
        }
    }
    pb.finish_and_clear();
    Ok(out)
}

/// Per-layer mean of a tensor statistic (for plots).
pub fn per_layer_mean(tensors: &[TensorStat], f: impl Fn(&TensorStat) -> f64) -> Vec<(usize, f64)> {
    let n = tensors.iter().map(|t| t.layer + 1).max().unwrap_or(0);
    (0..n)
        .map(|l| {
            let v: Vec<f64> = tensors.iter().filter(|t| t.layer == l).map(&f).collect();
            (l, v.iter().sum::<f64>() / v.len().max(1) as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_an_exactly_ternary_tensor() {
        let w = [0.5f32, -0.5, 0.0, 0.5];
        let (mse, sqnr, cos, zeros) = tensor_stats(&w, &[1, -1, 0, 1], 0.5);
        assert_eq!(mse, 0.0);
        assert!(sqnr.is_infinite());
        assert!((cos - 1.0).abs() < 1e-12);
        assert_eq!(zeros, 0.25);
        // Error 0.1 on one value; energy 0.25 + 0.25 + 0 + 0.36: SQNR = 10 log10(0.86 / 0.01).
        let w = [0.5f32, -0.5, 0.0, 0.6];
        let (_, sqnr, _, _) = tensor_stats(&w, &[1, -1, 0, 1], 0.5);
        assert!((sqnr - 10.0 * (0.86f64 / 0.01).log10()).abs() < 1e-4, "{sqnr}");
    }
}
