//! The BitNet b1.58 network as a differentiable candle graph, with the inference engine's semantics.
//!
//! Master weights are full-precision [`Var`]s; every projection ternarizes its weight and quantizes its
//! input to int8 per token in the forward pass, with straight-through gradients ([`crate::quant`]). The
//! output head is the tied embedding in float, unquantized, as in BitNet b1.58 2B-4T. Parameter names
//! are Hugging Face's (`model.layers.N.self_attn.q_proj.weight`, ...), so checkpoints load anywhere.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use bitnet_model::arch::{hf_layer, LayerTensor, ModelTensor};
use bitnet_model::ops::Rope;
use bitnet_model::{FfnActivation, ModelConfig};
use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use crate::quant::{act_quant, weight_quant};

/// One parameter by value: `(name, shape, f32 values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The shape of a model (what `config.json` records).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelDims {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    /// Longest sequence the model is trained on (`max_position_embeddings`).
    pub context: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
}

impl ModelDims {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }

    /// The engine's configuration of a model of this shape (BitNet b1.58: squared ReLU, RoPE over
    /// whole heads), which names and shapes its tensors and writes its GGUF metadata.
    pub fn config(&self) -> ModelConfig {
        ModelConfig {
            arch: bitnet_model::arch::BITNET_B158.to_string(),
            hidden_size: self.hidden,
            intermediate_size: self.intermediate,
            num_layers: self.layers,
            num_heads: self.heads,
            num_kv_heads: self.kv_heads,
            head_dim: self.head_dim(),
            rope_dim: self.head_dim(),
            vocab_size: self.vocab,
            context_length: self.context,
            rope_theta: self.rope_theta,
            rms_eps: self.rms_eps,
            ffn_act: FfnActivation::Relu2,
            ffn_act_reason: "trained by bitnet train (BitNet b1.58: squared ReLU)".to_string(),
            ffn_act_guessed: false,
            family: bitnet_model::arch::Family::BitNetB158,
            family_reason: "trained by bitnet train (BitNet b1.58)".to_string(),
            rope_layout: bitnet_model::arch::RopeLayout::HalfSplit,
            pooling: None,
        }
    }

    /// Checks the shape is one the architecture (and the engine) supports.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden", self.hidden),
            ("intermediate", self.intermediate),
            ("layers", self.layers),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("vocab", self.vocab),
            ("context", self.context),
        ];
        for (name, v) in positive {
            if v == 0 {
                bail!("model {name} must be positive");
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            bail!(
                "hidden size {} is not a multiple of the {} heads",
                self.hidden,
                self.heads
            );
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            bail!(
                "{} heads are not a multiple of the {} KV heads",
                self.heads,
                self.kv_heads
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!("head dimension {} must be even (RoPE rotates pairs)", self.head_dim());
        }
        if self.hidden > bitnet_model::config::MAX_HIDDEN || self.vocab > bitnet_model::config::MAX_VOCAB {
            bail!(
                "model too large for the engine (hidden {}, vocab {})",
                self.hidden,
                self.vocab
            );
        }
        Ok(())
    }

    /// Number of trainable values.
    pub fn num_params(&self) -> usize {
        let (h, f, kv) = (self.hidden, self.intermediate, self.kv_heads * self.head_dim());
        let layer = 2 * h * h + 2 * h * kv + 3 * h * f + 3 * h + f;
        self.vocab * h + self.layers * layer + h
    }
}

/// One named parameter: the master weight and whether AdamW decays it.
pub struct Param {
    pub name: String,
    pub var: Var,
    /// Weight decay applies to the ternary projections only (not the embedding nor the norms).
    pub decay: bool,
}

/// A trainable BitNet b1.58 model.
pub struct TrainModel {
    pub dims: ModelDims,
    /// Every parameter once, in a fixed order (the embedding is also the output head).
    pub params: Vec<Param>,
    index: HashMap<String, usize>,
    device: Device,
    dtype: DType,
}

/// One layer's parameters, in the order they are stored (Hugging Face's module order).
pub const LAYER_PARAMS: [LayerTensor; 11] = [
    LayerTensor::AttnNorm,
    LayerTensor::Q,
    LayerTensor::K,
    LayerTensor::V,
    LayerTensor::O,
    LayerTensor::AttnSubNorm,
    LayerTensor::FfnNorm,
    LayerTensor::Gate,
    LayerTensor::Up,
    LayerTensor::Down,
    LayerTensor::FfnSubNorm,
];

/// `(name, shape)` of every parameter of a model of shape `d`, in storage order.
pub fn param_shapes(d: &ModelDims) -> Vec<(String, Vec<usize>)> {
    let cfg = d.config();
    let mut v = vec![(ModelTensor::Embedding.hf().to_string(), vec![d.vocab, d.hidden])];
    for i in 0..d.layers {
        for t in LAYER_PARAMS {
            v.push((hf_layer(i, t), cfg.layer_tensor_shape(t)));
        }
    }
    v.push((ModelTensor::FinalNorm.hf().to_string(), vec![d.hidden]));
    v
}

/// Whether AdamW decays the parameter `name` (the `*_proj.weight` masters).
pub fn decays(name: &str) -> bool {
    name.ends_with("_proj.weight")
}

/// SplitMix64: small, fast and fully reproducible from its state (saved in checkpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Per-parameter overrides of the quantized weight used by the forward pass (for gradient tests: the
/// straight-through surrogate `W -> L(W_q(W0) + W - W0)` differentiates w.r.t. the given tensor).
pub type WqOverride<'a> = HashMap<String, &'a Tensor>;

impl TrainModel {
    /// A model with freshly initialised weights: normal(0, 0.02) projections and embedding, unit norms.
    pub fn init(dims: ModelDims, rng: &mut Rng) -> Result<Self> {
        dims.validate()?;
        let mut values = Vec::new();
        for (name, shape) in param_shapes(&dims) {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = if shape.len() == 1 {
                vec![1.0; n]
            } else {
                (0..n).map(|_| 0.02 * rng.normal()).collect()
            };
            values.push((name, shape, v));
        }
        Self::from_values(dims, values, DType::F32)
    }

    /// A model from `(name, shape, values)` of every parameter (any order; all must be present).
    pub fn from_values(dims: ModelDims, values: Vec<NamedTensor>, dtype: DType) -> Result<Self> {
        dims.validate()?;
        let device = Device::Cpu;
        let mut given: HashMap<String, (Vec<usize>, Vec<f32>)> =
            values.into_iter().map(|(n, s, v)| (n, (s, v))).collect();
        let mut params = Vec::new();
        let mut index = HashMap::new();
        for (name, shape) in param_shapes(&dims) {
            let (s, v) = given
                .remove(&name)
                .with_context(|| format!("parameter '{name}' is missing"))?;
            if s != shape || v.len() != shape.iter().product::<usize>() {
                bail!("parameter '{name}' has shape {s:?}, expected {shape:?}");
            }
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                bail!("parameter '{name}' holds a non-finite value ({bad})");
            }
            let t = Tensor::from_vec(v, shape.as_slice(), &device)?.to_dtype(dtype)?;
            index.insert(name.clone(), params.len());
            params.push(Param {
                decay: decays(&name),
                name,
                var: Var::from_tensor(&t)?,
            });
        }
        if let Some(extra) = given.keys().find(|k| k.as_str() != "lm_head.weight") {
            bail!("unexpected parameter '{extra}'");
        }
        Ok(TrainModel {
            dims,
            params,
            index,
            device,
            dtype,
        })
    }

    /// The same model with its parameters in another dtype (f64 for finite differences).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Self::from_values(self.dims.clone(), self.values()?, dtype)
    }

    /// `(name, shape, f32 values)` of every parameter.
    pub fn values(&self) -> Result<Vec<NamedTensor>> {
        self.params
            .iter()
            .map(|p| {
                let t = p.var.as_tensor();
                Ok((
                    p.name.clone(),
                    t.dims().to_vec(),
                    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                ))
            })
            .collect()
    }

    pub fn param(&self, name: &str) -> Result<&Tensor> {
        let i = *self.index.get(name).with_context(|| format!("no parameter '{name}'"))?;
        Ok(self.params[i].var.as_tensor())
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn linear(&self, x: &Tensor, name: &str, ov: &WqOverride) -> Result<Tensor> {
        let wq = match ov.get(name) {
            Some(t) => (*t).clone(),
            None => weight_quant(self.param(name)?)?,
        };
        Ok(act_quant(x)?.matmul(&wq.t()?)?)
    }

    fn rmsnorm(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (ms + f64::from(self.dims.rms_eps))?.sqrt()?.recip()?;
        Ok(x.broadcast_mul(&inv)?.broadcast_mul(self.param(name)?)?)
    }

    /// Logits `[batch * seq, vocab]` of `ids` (`batch` rows of `seq` tokens, row-major).
    pub fn forward(&self, ids: &[u32], batch: usize, seq: usize) -> Result<Tensor> {
        self.forward_with(ids, batch, seq, &HashMap::new())
    }

    /// [`TrainModel::forward`] with some quantized weights replaced (see [`WqOverride`]).
    pub fn forward_with(&self, ids: &[u32], batch: usize, seq: usize, ov: &WqOverride) -> Result<Tensor> {
        let d = &self.dims;
        if ids.len() != batch * seq || seq == 0 {
            bail!("forward: {} ids for a batch of {batch} x {seq}", ids.len());
        }
        if seq > d.context {
            bail!("sequence of {seq} tokens exceeds the model context {}", d.context);
        }
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= d.vocab) {
            bail!("token id {bad} is out of range (vocabulary {})", d.vocab);
        }
        let (hd, nh, nkv) = (d.head_dim(), d.heads, d.kv_heads);
        let n = batch * seq;
        let emb = self.param(ModelTensor::Embedding.hf())?;
        let idt = Tensor::from_slice(ids, n, &self.device)?;
        let mut x = emb.embedding(&idt)?; // [n, h]
                                          // RoPE angles from the engine's own table, so both use the same f32 values.
        let rope = Rope::new(hd, d.rope_theta);
        let half = hd / 2;
        let (mut cos, mut sin) = (vec![0f32; seq * half], vec![0f32; seq * half]);
        for p in 0..seq {
            rope.angles(
                p,
                &mut cos[p * half..(p + 1) * half],
                &mut sin[p * half..(p + 1) * half],
            );
        }
        let cos = Tensor::from_vec(cos, (seq, half), &self.device)?.to_dtype(self.dtype)?;
        let sin = Tensor::from_vec(sin, (seq, half), &self.device)?.to_dtype(self.dtype)?;
        let mask: Vec<f32> = (0..seq * seq)
            .map(|i| if i % seq > i / seq { f32::MIN } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (seq, seq), &self.device)?.to_dtype(self.dtype)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let rot = |t: &Tensor| -> Result<Tensor> {
            // t: [b, heads, seq, hd]; half-split (rotate_half) convention.
            let x1 = t.narrow(D::Minus1, 0, half)?;
            let x2 = t.narrow(D::Minus1, half, half)?;
            let a = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
            let b = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
            Ok(Tensor::cat(&[a, b], D::Minus1)?)
        };
        for i in 0..d.layers {
            let p = |t: LayerTensor| hf_layer(i, t);
            let xn = self.rmsnorm(&x, &p(LayerTensor::AttnNorm))?;
            let q = self.linear(&xn, &p(LayerTensor::Q), ov)?;
            let k = self.linear(&xn, &p(LayerTensor::K), ov)?;
            let v = self.linear(&xn, &p(LayerTensor::V), ov)?;
            let q = q.reshape((batch, seq, nh, hd))?.transpose(1, 2)?.contiguous()?;
            let k = k.reshape((batch, seq, nkv, hd))?.transpose(1, 2)?.contiguous()?;
            let v = v.reshape((batch, seq, nkv, hd))?.transpose(1, 2)?.contiguous()?;
            let q = rot(&q)?;
            let k = rot(&k)?;
            let group = nh / nkv;
            let expand = |t: Tensor| -> Result<Tensor> {
                if group == 1 {
                    return Ok(t);
                }
                Ok(t.unsqueeze(2)?
                    .broadcast_as((batch, nkv, group, seq, hd))?
                    .contiguous()?
                    .reshape((batch, nh, seq, hd))?)
            };
            let k = expand(k)?;
            let v = expand(v)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&mask)?;
            let probs = softmax_last(&scores)?;
            let att = probs.matmul(&v)?; // [b, nh, seq, hd]
            let att = att.transpose(1, 2)?.contiguous()?.reshape((n, nh * hd))?;
            let att = self.rmsnorm(&att, &p(LayerTensor::AttnSubNorm))?;
            x = (x + self.linear(&att, &p(LayerTensor::O), ov)?)?;
            let u = self.rmsnorm(&x, &p(LayerTensor::FfnNorm))?;
            let g = self.linear(&u, &p(LayerTensor::Gate), ov)?;
            let up = self.linear(&u, &p(LayerTensor::Up), ov)?;
            let hmid = (g.relu()?.sqr()? * up)?;
            let hmid = self.rmsnorm(&hmid, &p(LayerTensor::FfnSubNorm))?;
            x = (x + self.linear(&hmid, &p(LayerTensor::Down), ov)?)?;
        }
        let xn = self.rmsnorm(&x, ModelTensor::FinalNorm.hf())?;
        Ok(xn.matmul(&emb.t()?)?)
    }
}

/// Softmax over the last dimension (the max is subtracted without a gradient: it cancels).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&s)?)
}

/// Mean cross-entropy of `logits [n, vocab]` against `labels` (n ids).
pub fn cross_entropy(logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
    let n = labels.len();
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let logp = shifted.broadcast_sub(&lse)?;
    let idx = Tensor::from_slice(labels, (n, 1), logits.device())?;
    let picked = logp.gather(&idx, D::Minus1)?;
    Ok((picked.sum_all()? * (-1.0 / n as f64))?)
}
