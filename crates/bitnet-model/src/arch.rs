//! One table of every name a model file uses (llama.cpp's `llama-arch.cpp` idea): the GGUF
//! architecture strings and what each implies, the `{arch}.*` metadata keys, and the tensor names
//! of GGUF files and Hugging Face folders. Readers (`config.rs`, `load_gguf.rs`, `load_hf.rs`),
//! writers (`gguf_meta.rs`, `synth.rs`, `bitnet train`'s export, `bitnet convert`) and reports
//! (`quant-report`) take their names from here, so adding a family is one entry here plus what its
//! forward pass does differently.

use crate::config::FfnActivation;

/// A model family the engine runs. Every family shares the Llama decoder skeleton (pre-norm
/// attention and gated FFN, RMSNorm, RoPE, GQA); [`Family::block`] says what its blocks add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// BitNet b1.58 (2B-4T and the project's own trained models): sub-norms before `o_proj` and
    /// `down_proj`, squared-ReLU gated FFN, tied head.
    BitNetB158,
    /// 1bitLLM's `BitnetForCausalLM` (bitnet_b1_58-large/-3B): the same sub-norms (named
    /// `inner_attn_ln` / `ffn_layernorm` in its folders), SiLU, fp16 masters ternarized at load.
    OneBitLlm,
    /// A Llama decoder with ternary projections and nothing else: Falcon3-*-1.58bit, Falcon-E,
    /// HF1BitLLM/Llama3-8B-1.58. No sub-norms, SiLU, untied float head.
    Llama158,
    /// Microsoft's BitNet embedding models on a Qwen3 backbone: an RMSNorm on the input of every
    /// projection, per-head q/k norms, a pooled hidden state instead of logits.
    BitNetEmbedQwen3,
}

/// What a family's blocks compute beyond the shared skeleton.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTraits {
    /// RMSNorm on the attention output before `o_proj` and on `act(gate) * up` before `down_proj`.
    pub sub_norms: bool,
    /// Every projection has its own RMSNorm on its input (`<proj>.norm`, GGUF `*_norm_in`).
    pub proj_norms: bool,
    /// RMSNorm over each query and key head before RoPE (Qwen3's `q_norm` / `k_norm`).
    pub qk_norm: bool,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::BitNetB158,
        Family::OneBitLlm,
        Family::Llama158,
        Family::BitNetEmbedQwen3,
    ];

    pub fn block(self) -> BlockTraits {
        match self {
            Family::BitNetB158 | Family::OneBitLlm => BlockTraits {
                sub_norms: true,
                proj_norms: false,
                qk_norm: false,
            },
            Family::Llama158 => BlockTraits {
                sub_norms: false,
                proj_norms: false,
                qk_norm: false,
            },
            Family::BitNetEmbedQwen3 => BlockTraits {
                sub_norms: false,
                proj_norms: true,
                qk_norm: true,
            },
        }
    }

    /// Whether the model produces embeddings (pooled hidden states) rather than next-token logits.
    pub fn is_embedding(self) -> bool {
        matches!(self, Family::BitNetEmbedQwen3)
    }

    /// The name people know the family by, for `bitnet inspect` and messages.
    pub fn describe(self) -> &'static str {
        match self {
            Family::BitNetB158 => "BitNet b1.58 (2B-4T layout: sub-norms, squared ReLU)",
            Family::OneBitLlm => "1bitLLM bitnet_b1_58 (sub-norms, SiLU)",
            Family::Llama158 => "Llama 1.58-bit (Falcon3-1.58bit, Falcon-E, Llama3-8B-1.58: no sub-norms, SiLU)",
            Family::BitNetEmbedQwen3 => "BitNet embedding, Qwen3 backbone (per-projection input norms, q/k norms)",
        }
    }

    /// The tensors of one layer of this family.
    pub fn layer_tensors(self) -> impl Iterator<Item = LayerTensor> {
        let b = self.block();
        LayerTensor::ALL.into_iter().filter(move |t| match t {
            LayerTensor::AttnSubNorm | LayerTensor::FfnSubNorm => b.sub_norms,
            LayerTensor::QHeadNorm | LayerTensor::KHeadNorm => b.qk_norm,
            t if t.input_norm_of().is_some() => b.proj_norms,
            _ => true,
        })
    }
}

/// Where RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Dimension `i` with `i + d/2` (transformers' `rotate_half`, llama.cpp's NEOX).
    HalfSplit,
    /// Dimensions `2i` and `2i+1` (llama.cpp's NORM RoPE). GGUF `llama` files permute the q/k rows
    /// so that this computes exactly what `HalfSplit` computes on the Hugging Face rows.
    Interleaved,
}

impl RopeLayout {
    pub fn describe(self) -> &'static str {
        match self {
            RopeLayout::HalfSplit => "half-split (NEOX, transformers' rotate_half)",
            RopeLayout::Interleaved => "interleaved pairs (q/k rows permuted by the GGUF converter)",
        }
    }
}

/// How an embedding model turns its final hidden states into one vector (GGUF `{arch}.pooling_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over every token (GGUF 1).
    Mean,
    /// The first token (GGUF 2).
    Cls,
    /// The last token (GGUF 3): the appended EOS for BitNet embedding models.
    Last,
}

impl Pooling {
    /// From a GGUF `pooling_type` value (0, "none", is not an embedding pooling).
    pub fn from_gguf(v: u64) -> Option<Self> {
        match v {
            1 => Some(Pooling::Mean),
            2 => Some(Pooling::Cls),
            3 => Some(Pooling::Last),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mean" => Some(Pooling::Mean),
            "cls" | "first" => Some(Pooling::Cls),
            "last" | "lasttoken" | "last_token" | "eos" => Some(Pooling::Last),
            _ => None,
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        })
    }
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
    /// The family; `bitnet` files are [`Family::BitNetB158`] or [`Family::OneBitLlm`] by their
    /// activation.
    pub family: Family,
    pub activation: ActivationRule,
    pub rope: RopeLayout,
    /// Who writes it, for messages and `bitnet inspect`.
    pub writer: &'static str,
}

/// Every GGUF architecture the engine reads.
pub const GGUF_ARCHS: &[GgufArch] = &[
    GgufArch {
        name: BITNET_B158,
        family: Family::BitNetB158,
        activation: ActivationRule::Fixed(FfnActivation::Relu2),
        rope: RopeLayout::HalfSplit,
        writer: "bitnet.cpp (official 2B-4T file)",
    },
    GgufArch {
        name: "bitnet-25",
        family: Family::BitNetB158,
        activation: ActivationRule::Fixed(FfnActivation::Relu2),
        rope: RopeLayout::HalfSplit,
        writer: "bitnet.cpp (2025 converter)",
    },
    GgufArch {
        name: LLAMACPP_BITNET,
        family: Family::OneBitLlm,
        activation: ActivationRule::FromKey {
            key: key::HIDDEN_ACTIVATION,
            default: FfnActivation::Silu,
        },
        rope: RopeLayout::HalfSplit,
        writer: "llama.cpp / bitnet.cpp",
    },
    GgufArch {
        name: LLAMA,
        family: Family::Llama158,
        activation: ActivationRule::Fixed(FfnActivation::Silu),
        rope: RopeLayout::Interleaved,
        writer: "llama.cpp / bitnet.cpp (Llama-architecture ternary models)",
    },
    GgufArch {
        name: QWEN3,
        family: Family::BitNetEmbedQwen3,
        activation: ActivationRule::Fixed(FfnActivation::Silu),
        rope: RopeLayout::HalfSplit,
        writer: "bitnet.cpp's embedding converter",
    },
];

/// A Hugging Face `architectures[0]` value and the family it names.
#[derive(Clone, Copy, Debug)]
pub struct HfArch {
    pub name: &'static str,
    pub family: Family,
    /// Prefix of every tensor name (`model.`; Qwen3Model folders have none).
    pub prefix: &'static str,
}

/// Every Hugging Face architecture the engine reads.
pub const HF_ARCHS: &[HfArch] = &[
    HfArch {
        name: "BitNetForCausalLM",
        family: Family::BitNetB158,
        prefix: "model.",
    },
    HfArch {
        name: "BitnetForCausalLM",
        family: Family::OneBitLlm,
        prefix: "model.",
    },
    HfArch {
        name: "LlamaForCausalLM",
        family: Family::Llama158,
        prefix: "model.",
    },
    HfArch {
        name: "Qwen3Model",
        family: Family::BitNetEmbedQwen3,
        prefix: "",
    },
];

/// The entry of a Hugging Face architecture name, if the engine reads it.
pub fn hf_arch(name: &str) -> Option<&'static HfArch> {
    HF_ARCHS.iter().find(|a| a.name == name)
}

/// `general.architecture` of Llama-architecture files.
pub const LLAMA: &str = "llama";
/// `general.architecture` of BitNet embedding models (Qwen3 backbone).
pub const QWEN3: &str = "qwen3";
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
    pub const KEY_LENGTH: &str = "attention.key_length";
    pub const VALUE_LENGTH: &str = "attention.value_length";
    pub const POOLING_TYPE: &str = "pooling_type";

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

/// The tensors of one transformer layer (of every family: [`Family::layer_tensors`] says which a
/// family has).
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
    /// Per-head RMSNorm of the queries (Qwen3 `q_norm`).
    QHeadNorm,
    KHeadNorm,
    /// RMSNorm on the input of each projection (BitNet embedding models).
    QInNorm,
    KInNorm,
    VInNorm,
    OInNorm,
    GateInNorm,
    UpInNorm,
    DownInNorm,
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
    /// The layer tensors of BitNet b1.58 in the order GGUF files (bitnet.cpp's and ours) list them.
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
    /// Every layer tensor of every family.
    pub const ALL: [LayerTensor; 20] = [
        LayerTensor::AttnNorm,
        LayerTensor::QInNorm,
        LayerTensor::Q,
        LayerTensor::KInNorm,
        LayerTensor::K,
        LayerTensor::VInNorm,
        LayerTensor::V,
        LayerTensor::QHeadNorm,
        LayerTensor::KHeadNorm,
        LayerTensor::AttnSubNorm,
        LayerTensor::OInNorm,
        LayerTensor::O,
        LayerTensor::FfnNorm,
        LayerTensor::GateInNorm,
        LayerTensor::Gate,
        LayerTensor::UpInNorm,
        LayerTensor::Up,
        LayerTensor::FfnSubNorm,
        LayerTensor::DownInNorm,
        LayerTensor::Down,
    ];
    /// The RMSNorm weights of BitNet b1.58.
    pub const NORMS: [LayerTensor; 4] = [
        LayerTensor::AttnNorm,
        LayerTensor::AttnSubNorm,
        LayerTensor::FfnNorm,
        LayerTensor::FfnSubNorm,
    ];

    /// Whether this is an RMSNorm weight (a vector) rather than a projection.
    pub fn is_norm(self) -> bool {
        !Self::PROJECTIONS.contains(&self)
    }

    /// For a per-projection input norm, the projection it feeds.
    pub fn input_norm_of(self) -> Option<LayerTensor> {
        Some(match self {
            LayerTensor::QInNorm => LayerTensor::Q,
            LayerTensor::KInNorm => LayerTensor::K,
            LayerTensor::VInNorm => LayerTensor::V,
            LayerTensor::OInNorm => LayerTensor::O,
            LayerTensor::GateInNorm => LayerTensor::Gate,
            LayerTensor::UpInNorm => LayerTensor::Up,
            LayerTensor::DownInNorm => LayerTensor::Down,
            _ => return None,
        })
    }

    /// The input norm of a projection.
    pub fn input_norm(self) -> Option<LayerTensor> {
        Self::ALL.into_iter().find(|n| n.input_norm_of() == Some(self))
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
            LayerTensor::QHeadNorm => "attn_q_norm",
            LayerTensor::KHeadNorm => "attn_k_norm",
            LayerTensor::QInNorm => "attn_q_norm_in",
            LayerTensor::KInNorm => "attn_k_norm_in",
            LayerTensor::VInNorm => "attn_v_norm_in",
            LayerTensor::OInNorm => "attn_output_norm_in",
            LayerTensor::GateInNorm => "ffn_gate_norm_in",
            LayerTensor::UpInNorm => "ffn_up_norm_in",
            LayerTensor::DownInNorm => "ffn_down_norm_in",
        }
    }

    /// The name inside a Hugging Face layer of BitNet b1.58, without `model.layers.N.` and
    /// `.weight` (`self_attn.q_proj`). [`hf_layer_of`] gives other families' names.
    pub fn hf(self) -> &'static str {
        self.hf_of(Family::BitNetB158)
    }

    /// The name inside a Hugging Face layer of `family`.
    pub fn hf_of(self, family: Family) -> &'static str {
        match (self, family) {
            (LayerTensor::AttnSubNorm, Family::OneBitLlm) => "self_attn.inner_attn_ln",
            (LayerTensor::FfnSubNorm, Family::OneBitLlm) => "mlp.ffn_layernorm",
            (LayerTensor::AttnNorm, _) => "input_layernorm",
            (LayerTensor::Q, _) => "self_attn.q_proj",
            (LayerTensor::K, _) => "self_attn.k_proj",
            (LayerTensor::V, _) => "self_attn.v_proj",
            (LayerTensor::AttnSubNorm, _) => "self_attn.attn_sub_norm",
            (LayerTensor::O, _) => "self_attn.o_proj",
            (LayerTensor::FfnNorm, _) => "post_attention_layernorm",
            (LayerTensor::Gate, _) => "mlp.gate_proj",
            (LayerTensor::Up, _) => "mlp.up_proj",
            (LayerTensor::FfnSubNorm, _) => "mlp.ffn_sub_norm",
            (LayerTensor::Down, _) => "mlp.down_proj",
            (LayerTensor::QHeadNorm, _) => "self_attn.q_norm",
            (LayerTensor::KHeadNorm, _) => "self_attn.k_norm",
            (LayerTensor::QInNorm, _) => "self_attn.q_proj.norm",
            (LayerTensor::KInNorm, _) => "self_attn.k_proj.norm",
            (LayerTensor::VInNorm, _) => "self_attn.v_proj.norm",
            (LayerTensor::OInNorm, _) => "self_attn.o_proj.norm",
            (LayerTensor::GateInNorm, _) => "mlp.gate_proj.norm",
            (LayerTensor::UpInNorm, _) => "mlp.up_proj.norm",
            (LayerTensor::DownInNorm, _) => "mlp.down_proj.norm",
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

/// Hugging Face name of layer `i`'s tensor `t` in a folder of architecture `a`
/// (`layers.3.self_attn.q_proj.norm.weight` for Qwen3Model).
pub fn hf_layer_of(a: &HfArch, i: usize, t: LayerTensor) -> String {
    format!("{}layers.{i}.{}.weight", a.prefix, t.hf_of(a.family))
}

/// Hugging Face name of a model-level tensor in a folder of architecture `a`.
pub fn hf_model_of(a: &HfArch, t: ModelTensor) -> String {
    match t {
        ModelTensor::Head => t.hf().to_string(),
        _ => format!("{}{}", a.prefix, t.hf().trim_start_matches("model.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(gguf_layer(3, LayerTensor::Q), "blk.3.attn_q.weight");
        assert_eq!(hf_layer(0, LayerTensor::Down), "model.layers.0.mlp.down_proj.weight");
        assert_eq!(gguf_arch("bitnet").map(|a| a.family), Some(Family::OneBitLlm));
        assert_eq!(gguf_arch("llama").map(|a| a.family), Some(Family::Llama158));
        assert!(gguf_arch("gemma3").is_none());
        assert_eq!(gguf_arch_names(), "bitnet-b1.58, bitnet-25, bitnet, llama, qwen3");
        // BitNet b1.58's layer is the GGUF order; every family has the 7 projections.
        let b: Vec<_> = Family::BitNetB158.layer_tensors().collect();
        assert_eq!(b.len(), 11);
        assert!(LayerTensor::GGUF_ORDER.iter().all(|t| b.contains(t)));
        assert_eq!(Family::Llama158.layer_tensors().count(), 9);
        assert_eq!(Family::BitNetEmbedQwen3.layer_tensors().count(), 18);
        for f in Family::ALL {
            let ts: Vec<_> = f.layer_tensors().collect();
            assert!(LayerTensor::PROJECTIONS.iter().all(|p| ts.contains(p)), "{f:?}");
        }
        let q = hf_arch("Qwen3Model").expect("qwen3");
        assert_eq!(
            hf_layer_of(q, 2, LayerTensor::OInNorm),
            "layers.2.self_attn.o_proj.norm.weight"
        );
        assert_eq!(hf_model_of(q, ModelTensor::Embedding), "embed_tokens.weight");
        let o = hf_arch("BitnetForCausalLM").expect("1bitllm");
        assert_eq!(
            hf_layer_of(o, 0, LayerTensor::FfnSubNorm),
            "model.layers.0.mlp.ffn_layernorm.weight"
        );
        assert_eq!(hf_model_of(o, ModelTensor::FinalNorm), "model.norm.weight");
        assert_eq!(LayerTensor::Down.input_norm(), Some(LayerTensor::DownInNorm));
    }
}
