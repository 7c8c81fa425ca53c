//! One table of every name a model file uses (llama.cpp's `llama-arch.cpp` idea): the GGUF
//! architecture strings and what each implies, the `{arch}.*` metadata keys, and the tensor names
//! of GGUF files and Hugging Face folders. Readers (`config.rs`, `load_gguf.rs`, `load_hf.rs`),
//! writers (`gguf_meta.rs`, `synth.rs`, `bitnet train`'s export, `bitnet convert`) and reports
//! (`quant-report`) take their names from here, so adding a family is one entry here plus what its
//! forward pass does differently.

use crate::config::FfnActivation;

/// A model family the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// BitNet b1.58 (2B-4T and the project's own trained models): sub-norms before `o_proj` and
    /// `down_proj`, squared-ReLU gated FFN, half-split RoPE, tied head.
    BitNetB158,
}

/// How a file's FFN activation is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationRule {
    /// The architecture implies it.
    Fixed(FfnActivation),
    /// `{arch}.{key}` names it; when absent, the default (what llama.cpp assumes).
    FromKey { key: &'static str, default: FfnActivation },
}

/// A GGUF `general.architecture` value and how it is read.
#[derive(Clone, Copy, Debug)]
pub struct GgufArch {
    pub name: &'static str,
    pub family: Family,
    pub activation: ActivationRule,
    /// Who writes it, for messages and `bitnet inspect`.
    pub writer: &'static str,
}

/// Every GGUF architecture the engine reads.
pub const GGUF_ARCHS: &[GgufArch] = &[
    GgufArch {
        name: BITNET_B158,
        family: Family::BitNetB158,
        activation: ActivationRule::Fixed(FfnActivation::Relu2),
        writer: "bitnet.cpp (official 2B-4T file)",
    },
    GgufArch {
        name: "bitnet-25",
        family: Family::BitNetB158,
        activation: ActivationRule::Fixed(FfnActivation::Relu2),
        writer: "bitnet.cpp (2025 converter)",
    },
    GgufArch {
        name: LLAMACPP_BITNET,
        family: Family::BitNetB158,
        activation: ActivationRule::FromKey {
            key: key::HIDDEN_ACTIVATION,
            default: FfnActivation::Silu,
        },
        writer: "llama.cpp",
    },
];

/// The architecture bitnet.cpp writes for BitNet b1.58 (and our I2_S output).
pub const BITNET_B158: &str = "bitnet-b1.58";
/// llama.cpp's architecture for BitNet models (our TQ output).
pub const LLAMACPP_BITNET: &str = "bitnet";

/// The entry of a GGUF architecture string, if the engine reads it.
pub fn gguf_arch(name: &str) -> Option<&'static GgufArch> {
    GGUF_ARCHS.iter().find(|a| a.name == name)
}

/// The architecture names the engine reads, for messages.
pub fn gguf_arch_names() -> String {
    GGUF_ARCHS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
}

/// Metadata keys. Those in [`key`] are per architecture (`{arch}.{key}`, see [`arch_key`]).
pub mod key {
    pub const VOCAB_SIZE: &str = "vocab_size";
    pub const CONTEXT_LENGTH: &str = "context_length";
    pub const EMBEDDING_LENGTH: &str = "embedding_length";
    pub const BLOCK_COUNT: &str = "block_count";
    pub const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
    pub const ROPE_DIMENSION_COUNT: &str = "rope.dimension_count";
    pub const HEAD_COUNT: &str = "attention.head_count";
    pub const HEAD_COUNT_KV: &str = "attention.head_count_kv";
    pub const RMS_EPS: &str = "attention.layer_norm_rms_epsilon";
    pub const ROPE_FREQ_BASE: &str = "rope.freq_base";
    pub const ROPE_SCALING_TYPE: &str = "rope.scaling.type";
    pub const ROPE_SCALING_FACTOR: &str = "rope.scaling.factor";
    pub const HIDDEN_ACTIVATION: &str = "hidden_activation";

    /// Keys shared by every architecture.
    pub const ARCHITECTURE: &str = "general.architecture";
    pub const NAME: &str = "general.name";
    pub const TYPE: &str = "general.type";
    pub const FILE_TYPE: &str = "general.file_type";
    pub const QUANTIZATION_VERSION: &str = "general.quantization_version";
}

/// `{arch}.{key}`.
pub fn arch_key(arch: &str, key: &str) -> String {
    format!("{arch}.{key}")
}

/// The tensors of one transformer layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerTensor {
    AttnNorm,
    Q,
    K,
    V,
    AttnSubNorm,
    O,
    FfnNorm,
    Gate,
    Up,
    FfnSubNorm,
    Down,
}

impl LayerTensor {
    /// The ternary projections, in the order files list them.
    pub const PROJECTIONS: [LayerTensor; 7] = [
        LayerTensor::Q,
        LayerTensor::K,
        LayerTensor::V,
        LayerTensor::O,
        LayerTensor::Gate,
        LayerTensor::Up,
        LayerTensor::Down,
    ];
    /// Every layer tensor in the order GGUF files (bitnet.cpp's and ours) list them.
    pub const GGUF_ORDER: [LayerTensor; 11] = [
        LayerTensor::AttnNorm,
        LayerTensor::Q,
        LayerTensor::K,
        LayerTensor::V,
        LayerTensor::AttnSubNorm,
        LayerTensor::O,
        LayerTensor::FfnNorm,
        LayerTensor::Gate,
        LayerTensor::Up,
        LayerTensor::FfnSubNorm,
        LayerTensor::Down,
    ];
    /// The RMSNorm weights.
    pub const NORMS: [LayerTensor; 4] = [
        LayerTensor::AttnNorm,
        LayerTensor::AttnSubNorm,
        LayerTensor::FfnNorm,
        LayerTensor::FfnSubNorm,
    ];

    /// Whether this is an RMSNorm weight (a vector) rather than a projection.
    pub fn is_norm(self) -> bool {
        Self::NORMS.contains(&self)
    }

    /// The name inside a GGUF block, without `blk.N.` and `.weight` (`attn_q`).
    pub fn gguf(self) -> &'static str {
        match self {
            LayerTensor::AttnNorm => "attn_norm",
            LayerTensor::Q => "attn_q",
            LayerTensor::K => "attn_k",
            LayerTensor::V => "attn_v",
            LayerTensor::AttnSubNorm => "attn_sub_norm",
            LayerTensor::O => "attn_output",
            LayerTensor::FfnNorm => "ffn_norm",
            LayerTensor::Gate => "ffn_gate",
            LayerTensor::Up => "ffn_up",
            LayerTensor::FfnSubNorm => "ffn_sub_norm",
            LayerTensor::Down => "ffn_down",
        }
    }

    /// The name inside a Hugging Face layer, without `model.layers.N.` and `.weight`
    /// (`self_attn.q_proj`).
    pub fn hf(self) -> &'static str {
        match self {
            LayerTensor::AttnNorm => "input_layernorm",
            LayerTensor::Q => "self_attn.q_proj",
            LayerTensor::K => "self_attn.k_proj",
            LayerTensor::V => "self_attn.v_proj",
            LayerTensor::AttnSubNorm => "self_attn.attn_sub_norm",
            LayerTensor::O => "self_attn.o_proj",
            LayerTensor::FfnNorm => "post_attention_layernorm",
            LayerTensor::Gate => "mlp.gate_proj",
            LayerTensor::Up => "mlp.up_proj",
            LayerTensor::FfnSubNorm => "mlp.ffn_sub_norm",
            LayerTensor::Down => "mlp.down_proj",
        }
    }
}

/// The tensors outside the layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelTensor {
    Embedding,
    Head,
    FinalNorm,
}

impl ModelTensor {
    pub fn gguf(self) -> &'static str {
        match self {
            ModelTensor::Embedding => "token_embd.weight",
            ModelTensor::Head => "output.weight",
            ModelTensor::FinalNorm => "output_norm.weight",
        }
    }

    pub fn hf(self) -> &'static str {
        match self {
            ModelTensor::Embedding => "model.embed_tokens.weight",
            ModelTensor::Head => "lm_head.weight",
            ModelTensor::FinalNorm => "model.norm.weight",
        }
    }
}

/// GGUF name of layer `i`'s tensor `t` (`blk.3.attn_q.weight`).
pub fn gguf_layer(i: usize, t: LayerTensor) -> String {
    format!("blk.{i}.{}.weight", t.gguf())
}

/// Hugging Face name of layer `i`'s tensor `t` (`model.layers.3.self_attn.q_proj.weight`).
pub fn hf_layer(i: usize, t: LayerTensor) -> String {
    format!("model.layers.{i}.{}.weight", t.hf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(gguf_layer(3, LayerTensor::Q), "blk.3.attn_q.weight");
        assert_eq!(hf_layer(0, LayerTensor::Down), "model.layers.0.mlp.down_proj.weight");
        assert_eq!(gguf_arch("bitnet").map(|a| a.family), Some(Family::BitNetB158));
        assert!(gguf_arch("llama").is_none());
        assert_eq!(gguf_arch_names(), "bitnet-b1.58, bitnet-25, bitnet");
        // Every layer tensor is a projection or a norm, once.
        let mut all: Vec<_> = LayerTensor::PROJECTIONS.iter().chain(&LayerTensor::NORMS).collect();
        all.dedup();
        assert_eq!(all.len(), 11);
    }
}
