//! Hyperparameters of a BitNet b1.58 model, read from GGUF metadata or a Hugging Face `config.json`.
//!
//! Every missing or malformed key is an error that names the key, and every size is bounded so that a
//! hostile file cannot make the loader allocate absurd amounts of memory.

use std::fmt;

use anyhow::{bail, Context, Result};
use bitnet_gguf::GgufFile;

use crate::arch::{self, key, ActivationRule, Family, LayerTensor, ModelTensor, Pooling, RopeLayout};

/// The gated FFN's activation: `act(gate) * up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnActivation {
    /// `relu(x)^2`, BitNet b1.58 (2B-4T).
    Relu2,
    /// `x * sigmoid(x)`, the 2024 1bitLLM models (llama.cpp's `bitnet` graph).
    Silu,
}

impl FfnActivation {
    /// Parses the names used by `--ffn-act`, `hidden_act` and `bitnet.hidden_activation`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "relu2" | "relu_squared" | "squared_relu" | "relu^2" | "relusqr" => Some(Self::Relu2),
            "silu" | "swish" | "swiglu" => Some(Self::Silu),
            _ => None,
        }
    }

    /// Applies the activation to one gate value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Relu2 => {
                let r = x.max(0.0);
                r * r
            }
            Self::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

impl fmt::Display for FfnActivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Relu2 => "relu2",
            Self::Silu => "silu",
        })
    }
}

/// Limits that keep a hostile file from asking for unbounded memory. They are far above any real
/// BitNet model (2B-4T: hidden 2560, FFN 6912, 30 layers, vocab 128256).
pub const MAX_HIDDEN: usize = 1 << 16;
pub const MAX_FFN: usize = 1 << 18;
pub const MAX_LAYERS: usize = 1024;
pub const MAX_HEADS: usize = 1024;
pub const MAX_VOCAB: usize = 1 << 22;
pub const MAX_CONTEXT: usize = 1 << 20;

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Where the hyperparameters came from: the GGUF architecture (`bitnet-b1.58`, `bitnet-25`,
    /// `bitnet`) or `hf:<architectures[0]>`.
    pub arch: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Leading dimensions of each head that RoPE rotates (half-split / NEOX); normally `head_dim`.
    pub rope_dim: usize,
    pub vocab_size: usize,
    /// Training context length (`context_length` / `max_position_embeddings`).
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
    pub ffn_act: FfnActivation,
    /// Why `ffn_act` is what it is, for `bitnet inspect`.
    pub ffn_act_reason: String,
    /// The file does not state its activation and `ffn_act` is llama.cpp's default (a `bitnet` GGUF
    /// without `bitnet.hidden_activation`: 1bitLLM and 2B-4T files look alike), not `--ffn-act`.
    pub ffn_act_guessed: bool,
    /// The model family: which norms its blocks have and how its files name tensors.
    pub family: Family,
    /// Why `family` is what it is, for `bitnet inspect`.
    pub family_reason: String,
    pub rope_layout: RopeLayout,
    /// Embedding models: how the final hidden states become one vector (`None` for language models).
    pub pooling: Option<Pooling>,
}

/// Reads `{arch}.key` as an integer when present.
fn opt_u64(gguf: &GgufFile, key: &str) -> Result<Option<u64>> {
    Ok(match gguf.get(key) {
        Some(_) => Some(gguf.get_u64(key)?),
        None => None,
    })
}

impl ModelConfig {
    /// Reads the hyperparameters of a GGUF file (`{arch}.*` keys).
    pub fn from_gguf(gguf: &GgufFile, ffn_override: Option<FfnActivation>) -> Result<Self> {
        let arch = gguf.get_str(key::ARCHITECTURE)?.to_string();
        let spec = arch::gguf_arch(&arch).with_context(|| {
            format!(
                "unsupported architecture '{arch}' (key '{}'); expected one of {}",
                key::ARCHITECTURE,
                arch::gguf_arch_names()
            )
        })?;
        let k = |name: &str| arch::arch_key(&arch, name);
        let mut guessed = false;
        let (ffn_act, reason) = match spec.activation {
            ActivationRule::Fixed(act) => (act, format!("architecture '{arch}' ({}) implies {act}", spec.writer)),
            ActivationRule::FromKey { key, default } => {
                let key = k(key);
                match gguf.get(&key) {
                    Some(_) => {
                        let v = gguf.get_str(&key)?;
                        let act = FfnActivation::parse(v)
                            .with_context(|| format!("unknown value '{v}' of key '{key}' (expected relu2 or silu)"))?;
                        (act, format!("from key '{key}' = '{v}'"))
                    }
                    None => {
                        guessed = true;
                        (
                            default,
                            format!(
                                "{} '{arch}' file without '{key}': {default} as {} does \
                             (right for 1bitLLM models; use --ffn-act relu2 for BitNet b1.58 2B-4T weights)",
                                spec.writer, spec.writer
                            ),
                        )
                    }
                }
            }
        };
        let hidden = gguf.get_u64(&k(key::EMBEDDING_LENGTH))? as usize;
        let heads = gguf.get_u64(&k(key::HEAD_COUNT))? as usize;
        let kv_heads = match gguf.get(&k(key::HEAD_COUNT_KV)) {
            Some(_) => gguf.get_u64(&k(key::HEAD_COUNT_KV))? as usize,
            None => heads,
        };
        // Qwen3 heads are wider than hidden / heads: `attention.key_length` says so.
        let head_dim = match opt_u64(gguf, &k(key::KEY_LENGTH))? {
            Some(d) => d as usize,
            None => hidden.checked_div(heads).unwrap_or(0),
        };
        if let Some(v) = opt_u64(gguf, &k(key::VALUE_LENGTH))? {
            if v as usize != head_dim {
                bail!(
                    "key '{}' = {v} differs from the key length {head_dim}; heads whose values and keys differ \
                     in width are not supported",
                    k(key::VALUE_LENGTH)
                );
            }
        }
        let pooling = if spec.family.is_embedding() {
            let pk = k(key::POOLING_TYPE);
            match opt_u64(gguf, &pk)? {
                Some(v) => Some(Pooling::from_gguf(v).with_context(|| {
                    format!("key '{pk}' = {v} is not a pooling this engine computes (1 mean, 2 cls, 3 last)")
                })?),
                None => Some(Pooling::Last),
            }
        } else {
            None
        };
        let rope_dim = match gguf.get(&k(key::ROPE_DIMENSION_COUNT)) {
            Some(_) => gguf.get_u64(&k(key::ROPE_DIMENSION_COUNT))? as usize,
            None => head_dim,
        };
        // The vocabulary size key is optional (llama.cpp omits it): fall back to the token list and then
        // to the embedding's row count.
        let vocab = if gguf.get(&k(key::VOCAB_SIZE)).is_some() {
            gguf.get_u64(&k(key::VOCAB_SIZE))? as usize
        } else if let Some(bitnet_gguf::MetadataValue::Array(tokens)) = gguf.get("tokenizer.ggml.tokens") {
            tokens.len()
        } else {
            let t = gguf.tensor(ModelTensor::Embedding.gguf()).with_context(|| {
                format!(
                    "no vocabulary size: key '{arch}.vocab_size', 'tokenizer.ggml.tokens' and tensor \
                     'token_embd.weight' are all missing"
                )
            })?;
            t.dims.get(1).copied().unwrap_or(0) as usize
        };
        let rope_theta = match gguf.get(&k(key::ROPE_FREQ_BASE)) {
            Some(_) => gguf.get_f32(&k(key::ROPE_FREQ_BASE))?,
            None => 10_000.0,
        };
        let cfg = ModelConfig {
            hidden_size: hidden,
            intermediate_size: gguf.get_u64(&k(key::FEED_FORWARD_LENGTH))? as usize,
            num_layers: gguf.get_u64(&k(key::BLOCK_COUNT))? as usize,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            rope_dim,
            vocab_size: vocab,
            context_length: gguf.get_u64(&k(key::CONTEXT_LENGTH))? as usize,
            rope_theta,
            rms_eps: gguf.get_f32(&k(key::RMS_EPS))?,
            ffn_act,
            ffn_act_reason: reason,
            ffn_act_guessed: guessed,
            family: spec.family,
            family_reason: format!("architecture '{arch}' ({})", spec.writer),
            rope_layout: spec.rope,
            pooling,
            arch,
        };
        let mut cfg = cfg.with_override(ffn_override);
        if spec.family == Family::OneBitLlm && cfg.ffn_act == FfnActivation::Relu2 {
            // The `bitnet` arch holds both sub-norm families; the activation (after --ffn-act) tells them
            // apart, and decides what `convert` writes.
            cfg.family = Family::BitNetB158;
            cfg.family_reason = format!(
                "architecture '{}' with sub-norms and squared ReLU: the BitNet b1.58 layout",
                cfg.arch
            );
        }
        cfg.validated()
    }

    /// Reads a Hugging Face `config.json` (BitNetForCausalLM). Accepts `rope_theta` and the newer
    /// `rope_parameters: {rope_theta}` form.
    pub fn from_hf_json(json: &serde_json::Value, ffn_override: Option<FfnActivation>) -> Result<Self> {
        let get_usize = |key: &str| -> Result<usize> {
            let v = json
                .get(key)
                .with_context(|| format!("config.json: missing key '{key}'"))?;
            v.as_u64()
                .map(|x| x as usize)
                .with_context(|| format!("config.json: key '{key}' must be a non-negative integer, got {v}"))
        };
        let get_f32 = |v: &serde_json::Value, key: &str| -> Result<f32> {
            v.as_f64()
                .map(|x| x as f32)
                .with_context(|| format!("config.json: key '{key}' must be a number, got {v}"))
        };
        let arch = json
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .unwrap_or("BitNetForCausalLM");
        let spec = arch::hf_arch(arch).with_context(|| {
            format!(
                "config.json: unsupported architecture '{arch}' (key 'architectures'); expected one of {}",
                arch::HF_ARCHS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
            )
        })?;
        let family = spec.family;
        let quant_method = json
            .get("quantization_config")
            .and_then(|q| q.get("quant_method"))
            .and_then(|v| v.as_str());
        let family_reason = match family {
            Family::Llama158 => {
                if quant_method != Some("bitnet") {
                    bail!(
                        "config.json: a LlamaForCausalLM without quantization_config.quant_method = 'bitnet' is a \
                         float model, not a ternary one (found {})",
                        quant_method.map_or("no quantization_config".to_string(), |m| format!("'{m}'"))
                    );
                }
                "config.json: LlamaForCausalLM with quantization_config.quant_method 'bitnet'".to_string()
            }
            Family::OneBitLlm => {
                "config.json: BitnetForCausalLM (1bitLLM: inner_attn_ln / ffn_layernorm sub-norms)".to_string()
            }
            Family::BitNetEmbedQwen3 => {
                "config.json: Qwen3Model with ternary projections (BitNet embedding model)".to_string()
            }
            Family::BitNetB158 => "config.json: BitNetForCausalLM".to_string(),
        };
        if let Some(rs) = json.get("rope_scaling").filter(|v| !v.is_null()) {
            let ty = rs
                .get("rope_type")
                .or_else(|| rs.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            let factor = rs.get("factor").and_then(|v| v.as_f64()).unwrap_or(1.0);
            if !(ty == "default" || (ty == "linear" && factor == 1.0)) {
                bail!("config.json: rope_scaling of type '{ty}' (factor {factor}) is not supported yet");
            }
        }
        let hidden = get_usize("hidden_size")?;
        let heads = get_usize("num_attention_heads")?;
        let kv_heads = match json.get("num_key_value_heads") {
            Some(_) => get_usize("num_key_value_heads")?,
            None => heads,
        };
        let head_dim = match json.get("head_dim") {
            Some(_) => get_usize("head_dim")?,
            None if heads > 0 => hidden / heads,
            None => 0,
        };
        let rope_theta = if let Some(v) = json.get("rope_theta") {
            get_f32(v, "rope_theta")?
        } else if let Some(v) = json.get("rope_parameters").and_then(|p| p.get("rope_theta")) {
            get_f32(v, "rope_parameters.rope_theta")?
        } else {
            10_000.0
        };
        if let Some(rt) = json
            .get("rope_parameters")
            .and_then(|p| p.get("rope_type"))
            .and_then(|t| t.as_str())
        {
            if rt != "default" {
                bail!("config.json: rope_parameters.rope_type '{rt}' is not supported (only 'default')");
            }
        }
        let default_act = if family == Family::BitNetB158 { "relu2" } else { "silu" };
        let act_name = json.get("hidden_act").and_then(|v| v.as_str()).unwrap_or(default_act);
        let ffn_act = FfnActivation::parse(act_name)
            .with_context(|| format!("config.json: unsupported hidden_act '{act_name}' (expected relu2 or silu)"))?;
        let cfg = ModelConfig {
            arch: format!("hf:{arch}"),
            hidden_size: hidden,
            intermediate_size: get_usize("intermediate_size")?,
            num_layers: get_usize("num_hidden_layers")?,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            rope_dim: head_dim,
            vocab_size: get_usize("vocab_size")?,
            context_length: match json.get("max_position_embeddings") {
                Some(_) => get_usize("max_position_embeddings")?,
                None => 4096,
            },
            rope_theta,
            rms_eps: match json.get("rms_norm_eps") {
                Some(v) => get_f32(v, "rms_norm_eps")?,
                None => 1e-5,
            },
            ffn_act,
            ffn_act_reason: format!("config.json hidden_act = '{act_name}'"),
            ffn_act_guessed: false,
            family,
            family_reason,
            rope_layout: RopeLayout::HalfSplit,
            pooling: family.is_embedding().then_some(Pooling::Last),
        };
        cfg.with_override(ffn_override).validated()
    }

    fn with_override(mut self, ffn_override: Option<FfnActivation>) -> Self {
        if let Some(act) = ffn_override {
            if act != self.ffn_act {
                self.ffn_act_reason = format!(
                    "--ffn-act {act} (the file says {}: {})",
                    self.ffn_act, self.ffn_act_reason
                );
            } else {
                self.ffn_act_reason = format!("--ffn-act {act} (same as the file: {})", self.ffn_act_reason);
            }
            self.ffn_act = act;
            self.ffn_act_guessed = false;
        }
        self
    }

    /// Checks that the shape is consistent and within bounds.
    pub fn validated(self) -> Result<Self> {
        let c = &self;
        let check = |name: &str, v: usize, max: usize| -> Result<()> {
            if v == 0 || v > max {
                bail!("{name} = {v} is out of range (1..={max})");
            }
            Ok(())
        };
        check("hidden size", c.hidden_size, MAX_HIDDEN)?;
        check("feed-forward size", c.intermediate_size, MAX_FFN)?;
        check("layer count", c.num_layers, MAX_LAYERS)?;
        check("attention head count", c.num_heads, MAX_HEADS)?;
        check("KV head count", c.num_kv_heads, MAX_HEADS)?;
        check("vocabulary size", c.vocab_size, MAX_VOCAB)?;
        check("context length", c.context_length, MAX_CONTEXT)?;
        check("head dimension", c.head_dim, MAX_HIDDEN)?;
        if c.num_heads * c.head_dim != c.hidden_size && !c.family.block().qk_norm {
            // Only Qwen3-style heads are wider than hidden / heads; elsewhere a mismatch is a
            // corrupt file.
            bail!(
                "hidden size {} is not heads ({}) x head dimension ({})",
                c.hidden_size,
                c.num_heads,
                c.head_dim
            );
        }
        if c.num_heads.saturating_mul(c.head_dim) > MAX_HIDDEN * 4 {
            bail!(
                "heads ({}) x head dimension ({}) is out of range (max {})",
                c.num_heads,
                c.head_dim,
                MAX_HIDDEN * 4
            );
        }
        if !c.num_heads.is_multiple_of(c.num_kv_heads) {
            bail!(
                "attention heads ({}) are not a multiple of KV heads ({})",
                c.num_heads,
                c.num_kv_heads
            );
        }
        if c.rope_dim == 0 || c.rope_dim > c.head_dim || !c.rope_dim.is_multiple_of(2) {
            bail!("RoPE dimension {} must be even and in 2..={}", c.rope_dim, c.head_dim);
        }
        if !(c.rope_theta.is_finite() && c.rope_theta > 0.0) {
            bail!("RoPE base {} must be a positive number", c.rope_theta);
        }
        if !(c.rms_eps.is_finite() && c.rms_eps >= 0.0) {
            bail!("RMSNorm epsilon {} must be a non-negative number", c.rms_eps);
        }
        Ok(self)
    }

    /// Shape of layer tensor `t`, outer dimension first: `[rows, cols]` for a projection (rows =
    /// output features, as Hugging Face stores them), `[len]` for a norm. GGUF lists the same
    /// dimensions innermost first.
    pub fn layer_tensor_shape(&self, t: LayerTensor) -> Vec<usize> {
        let (h, f, q, kv) = (
            self.hidden_size,
            self.intermediate_size,
            self.num_heads * self.head_dim,
            self.kv_dim(),
        );
        match t {
            LayerTensor::AttnNorm | LayerTensor::FfnNorm => vec![h],
            LayerTensor::AttnSubNorm => vec![q],
            LayerTensor::FfnSubNorm => vec![f],
            LayerTensor::QHeadNorm | LayerTensor::KHeadNorm => vec![self.head_dim],
            LayerTensor::QInNorm
            | LayerTensor::KInNorm
            | LayerTensor::VInNorm
            | LayerTensor::GateInNorm
            | LayerTensor::UpInNorm => vec![h],
            LayerTensor::OInNorm => vec![q],
            LayerTensor::DownInNorm => vec![f],
            LayerTensor::Q => vec![q, h],
            LayerTensor::K | LayerTensor::V => vec![kv, h],
            LayerTensor::O => vec![h, q],
            LayerTensor::Gate | LayerTensor::Up => vec![f, h],
            LayerTensor::Down => vec![h, f],
        }
    }

    /// `num_kv_heads * head_dim`: the width of K and V.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}
