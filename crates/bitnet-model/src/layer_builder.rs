//! Assembling a [`Layer`] of any family from a file's tensors: which tensors a family has comes from
//! the architecture table ([`Family::layer_tensors`](crate::arch::Family::layer_tensors)), their
//! shapes from [`ModelConfig::layer_tensor_shape`], so the GGUF and Hugging Face loaders share one
//! description of a layer and only say how a named tensor is read.

use anyhow::{bail, Result};

use crate::arch::LayerTensor;
use crate::bitnet::{Layer, Linear, Norm};
use crate::config::ModelConfig;

/// Reads one layer's tensors from a file.
pub trait LayerSource {
    /// The RMSNorm weight `t` of layer `i`, `len` values.
    fn norm(&self, i: usize, t: LayerTensor, len: usize) -> Result<Vec<f32>>;
    /// The ternary projection `t` of layer `i`, `[rows, cols]` (rows = output features).
    fn linear(&self, i: usize, t: LayerTensor, rows: usize, cols: usize) -> Result<Linear>;
}

/// Builds layer `i` of a model of configuration `cfg`.
pub fn build_layer(cfg: &ModelConfig, i: usize, src: &dyn LayerSource) -> Result<Layer> {
    let traits = cfg.family.block();
    let norm = |t: LayerTensor| -> Result<Vec<f32>> {
        let shape = cfg.layer_tensor_shape(t);
        src.norm(i, t, shape[0])
    };
    let opt_norm = |present: bool, t: LayerTensor| -> Result<Option<Vec<f32>>> {
        if present {
            norm(t).map(Some)
        } else {
            Ok(None)
        }
    };
    let linear = |t: LayerTensor| -> Result<Linear> {
        let shape = cfg.layer_tensor_shape(t);
        let [rows, cols] = shape[..] else {
            bail!("internal error: projection {t:?} has shape {shape:?}");
        };
        let mut lin = src.linear(i, t, rows, cols)?;
        if traits.proj_norms {
            if let Some(nt) = t.input_norm() {
                lin.in_norm = Some(Norm {
                    w: norm(nt)?,
                    eps: cfg.rms_eps,
                });
            }
        }
        Ok(lin)
    };
    Ok(Layer {
        attn_norm: norm(LayerTensor::AttnNorm)?,
        wq: linear(LayerTensor::Q)?,
        wk: linear(LayerTensor::K)?,
        wv: linear(LayerTensor::V)?,
        q_norm: opt_norm(traits.qk_norm, LayerTensor::QHeadNorm)?,
        k_norm: opt_norm(traits.qk_norm, LayerTensor::KHeadNorm)?,
        attn_sub_norm: opt_norm(traits.sub_norms, LayerTensor::AttnSubNorm)?,
        wo: linear(LayerTensor::O)?,
        ffn_norm: norm(LayerTensor::FfnNorm)?,
        w_gate: linear(LayerTensor::Gate)?,
        w_up: linear(LayerTensor::Up)?,
        ffn_sub_norm: opt_norm(traits.sub_norms, LayerTensor::FfnSubNorm)?,
        w_down: linear(LayerTensor::Down)?,
    })
}
