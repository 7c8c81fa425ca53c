//! The metadata every GGUF the project writes carries (`bitnet convert`, `bitnet synth`, `bitnet train
//! --gguf`): hyperparameters from a [`ModelConfig`] and the tokenizer (copied from a GGUF source, or
//! rebuilt from `tokenizer.json` like bitnet.cpp's converter). The one writer of model metadata; the
//! key names come from [`crate::arch`].
//!
//! Two layouts: bitnet.cpp's official I2_S file (arch `bitnet-b1.58`, its key set and key order) and
//! llama.cpp's `bitnet` arch (its converter's key names), plus `bitnet.hidden_activation` so engines that
//! read it know the FFN activation.

use std::path::Path;

use crate::arch::{self, key, Family, Pooling};
use crate::config::{FfnActivation, ModelConfig};
use anyhow::{bail, Context, Result};
use bitnet_gguf::{GgufFile, GgufWriter, MetadataValue};
use bitnet_tokenizer::{GgufVocab, Tokenizer};
use bitnet_tokenizer::{LLAMA3_REGEX, QWEN2_REGEX};

/// Score bitnet.cpp's converter gives added (special) tokens; normal tokens get 0.
const ADDED_TOKEN_SCORE: f32 = -1000.0;
/// Token types of llama.cpp's vocabulary.
const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_UNUSED: i32 = 5;

/// The `tokenizer.*` keys of the output.
#[derive(Clone, Debug, Default)]
pub struct TokenizerMeta {
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    pub token_types: Option<Vec<i32>>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: Option<bool>,
    pub chat_template: Option<String>,
    /// Other `tokenizer.*` keys of a GGUF source (EOT, padding, ...), copied unchanged.
    pub extra: Vec<(String, MetadataValue)>,
    /// Why `pre` is what it is (for the report).
    pub pre_reason: String,
}

/// The end-of-turn token key (kept among the `extra` keys so that it is copied in file order).
const EOT_KEY: &str = "tokenizer.ggml.eot_token_id";

/// The pre-tokenizer name llama.cpp knows for a Llama-3 tokenizer.
pub const LLAMA_BPE: &str = "llama-bpe";

impl TokenizerMeta {
    /// Copies a GGUF source's tokenizer; fills in `tokenizer.ggml.pre` when missing and the vocabulary is
    /// Llama-3's (the official 2B-4T file lacks it, and llama.cpp then falls back to a regex that splits
    /// text differently from Hugging Face).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let mut m = Self::read_gguf(g)?;
        m.pre_reason = match &m.pre {
            Some(p) => format!("copied from the input ({p})"),
            None if m.model == "gpt2" && m.tokens.iter().any(|t| t == "<|begin_of_text|>") => {
                m.pre = Some(LLAMA_BPE.to_string());
                "set to llama-bpe: the input has none and its vocabulary is Llama-3's".to_string()
            }
            None => "left unset: the input has none and the vocabulary is not recognisably Llama-3's".to_string(),
        };
        Ok(m)
    }

    /// The `tokenizer.*` keys of a GGUF file as they are (every value checked for its type, errors
    /// naming the key): what the loader builds the tokenizer from and what `convert` copies.
    pub fn read_gguf(g: &GgufFile) -> Result<Self> {
        let mut m = TokenizerMeta {
            model: g.get_str("tokenizer.ggml.model")?.to_string(),
            tokens: g
                .get_str_array("tokenizer.ggml.tokens")?
                .into_iter()
                .map(str::to_string)
                .collect(),
            ..Default::default()
        };
        for (k, v) in g.metadata() {
            match k.as_str() {
                "tokenizer.ggml.model" | "tokenizer.ggml.tokens" => {}
                "tokenizer.ggml.pre" => m.pre = Some(g.get_str(k)?.to_string()),
                "tokenizer.ggml.scores" => m.scores = Some(g.get_f32_array(k)?),
                "tokenizer.ggml.token_type" => m.token_types = Some(g.get_i32_array(k)?),
                "tokenizer.ggml.merges" => m.merges = g.get_str_array(k)?.into_iter().map(str::to_string).collect(),
                "tokenizer.ggml.bos_token_id" => m.bos = Some(g.get_u32(k)?),
                "tokenizer.ggml.eos_token_id" => m.eos = Some(g.get_u32(k)?),
                "tokenizer.ggml.add_bos_token" => m.add_bos = Some(g.get_bool(k)?),
                "tokenizer.chat_template" => m.chat_template = Some(g.get_str(k)?.to_string()),
                EOT_KEY => {
                    g.get_u32(k)?;
                    m.extra.push((k.clone(), v.clone()))
                }
                _ if k.starts_with("tokenizer.") => m.extra.push((k.clone(), v.clone())),
                _ => {}
            }
        }
        Ok(m)
    }

    /// What the tokenizer crate builds a tokenizer from.
    pub fn into_vocab(self) -> GgufVocab {
        let eot_id = self
            .extra
            .iter()
            .find(|(k, _)| k == EOT_KEY)
            .and_then(|(_, v)| v.as_integer())
            .and_then(|v| u32::try_from(v).ok());
        let flag = |key: &str| {
            self.extra.iter().find(|(k, _)| k == key).and_then(|(_, v)| match v {
                MetadataValue::Bool(b) => Some(*b),
                _ => None,
            })
        };
        let add_space_prefix = flag("tokenizer.ggml.add_space_prefix");
        let add_eos = flag("tokenizer.ggml.add_eos_token");
        GgufVocab {
            add_space_prefix,
            add_eos,
            model: self.model,
            tokens: self.tokens,
            token_types: self.token_types,
            merges: self.merges,
            scores: self.scores,
            pre: self.pre,
            bos_id: self.bos,
            eos_id: self.eos,
            eot_id,
            add_bos: self.add_bos,
            chat_template: self.chat_template,
        }
    }

    /// Rebuilds the GGUF vocabulary from a Hugging Face folder's `tokenizer.json` the way bitnet.cpp's
    /// converter does (ids in order, added tokens as control/user-defined with score -1000, merges as
    /// "a b"), with BOS/EOS from `config.json` and the chat template from `tokenizer_config.json`.
    pub fn from_hf(dir: &Path, config: &serde_json::Value, tok: &Tokenizer) -> Result<Self> {
        let mut m = Self::from_hf_vocab(dir, config, tok)?;
        if let Some(id) = tok.appended_token() {
            // Embedding models: every input ends with EOS (what their tokenizer.json post-processor does).
            if m.eos.is_none() {
                m.eos = Some(id);
            }
            m.extra.push(("tokenizer.ggml.add_eos_token".to_string(), true.into()));
        }
        Ok(m)
    }

    /// A SentencePiece folder's vocabulary as llama.cpp's converter writes it (`tokenizer.ggml.model =
    /// llama`): the pieces, scores and types of `tokenizer.model`, then the added tokens of
    /// tokenizer.json beyond them, then `[PAD<id>]` fillers up to the model's vocabulary size.
    fn from_sentencepiece(dir: &Path, config: &serde_json::Value, tok: &Tokenizer) -> Result<Self> {
        let sp = dir.join("tokenizer.model");
        let (pieces, add_space_prefix) =
            bitnet_tokenizer::sentencepiece_pieces(&sp).with_context(|| format!("reading {}", sp.display()))?;
        let mut tokens = Vec::with_capacity(pieces.len());
        let mut scores = Vec::with_capacity(pieces.len());
        let mut types = Vec::with_capacity(pieces.len());
        for (t, s, ty) in pieces {
            tokens.push(t);
            scores.push(s);
            types.push(ty);
        }
        // Added tokens past the pieces (1bitLLM's <pad>), from the loaded tokenizer.
        while let Some(text) = tok.token_piece(tokens.len() as u32) {
            tokens.push(text.to_string());
            scores.push(ADDED_TOKEN_SCORE);
            types.push(TYPE_CONTROL);
        }
        let vocab = config
            .get("vocab_size")
            .and_then(|v| v.as_u64())
            .map_or(tokens.len(), |v| v as usize);
        while tokens.len() < vocab {
            tokens.push(format!("[PAD{}]", tokens.len()));
            scores.push(ADDED_TOKEN_SCORE);
            types.push(TYPE_UNUSED);
        }
        let id_of = |key: &str| {
            config
                .get(key)
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
        };
        Ok(TokenizerMeta {
            model: "llama".to_string(),
            pre: Some("default".to_string()),
            tokens,
            scores: Some(scores),
            token_types: Some(types),
            merges: Vec::new(),
            bos: id_of("bos_token_id").or(tok.bos_id()),
            eos: id_of("eos_token_id").or(tok.eos_id()),
            add_bos: Some(tok.add_bos_default()),
            chat_template: tok.chat_template().map(str::to_string),
            extra: vec![("tokenizer.ggml.add_space_prefix".to_string(), add_space_prefix.into())],
            pre_reason: "default: a SentencePiece vocabulary (tokenizer.model)".to_string(),
        })
    }

    fn from_hf_vocab(dir: &Path, config: &serde_json::Value, tok: &Tokenizer) -> Result<Self> {
        if dir.join("tokenizer.model").is_file() && tok.pre_tokenizer_name().contains("sentencepiece") {
            return Self::from_sentencepiece(dir, config, tok);
        }
        let p = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let j: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        let model = j
            .get("model")
            .with_context(|| format!("{}: missing 'model'", p.display()))?;
        let kind = model.get("type").and_then(|t| t.as_str()).unwrap_or("BPE");
        if kind != "BPE" {
            bail!(
                "{}: model type '{kind}' is not supported (only byte-level BPE)",
                p.display()
            );
        }
        let vocab = model
            .get("vocab")
            .and_then(|v| v.as_object())
            .with_context(|| format!("{}: missing object 'model.vocab'", p.display()))?;
        let mut entries: Vec<(u32, String, bool)> = Vec::with_capacity(vocab.len());
        for (s, id) in vocab {
            let id = id
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .with_context(|| format!("{}: vocab entry {s:?} has a bad id {id}", p.display()))?;
            entries.push((id, s.clone(), false));
        }
        let mut special = std::collections::HashMap::new();
        let mut added_by_id = std::collections::BTreeMap::new();
        if let Some(added) = j.get("added_tokens").and_then(|a| a.as_array()) {
            for a in added {
                let id = a
                    .get("id")
                    .and_then(|v| v.as_u64())
                    .and_then(|v| u32::try_from(v).ok())
                    .with_context(|| format!("{}: an added token has no valid 'id'", p.display()))?;
                let content = a
                    .get("content")
                    .and_then(|v| v.as_str())
                    .with_context(|| format!("{}: added token {id} has no 'content'", p.display()))?;
                // A later entry with the same id replaces an earlier one.
                added_by_id.insert(
                    id,
                    (
                        content.to_string(),
                        a.get("special").and_then(|v| v.as_bool()).unwrap_or(false),
                    ),
                );
            }
        }
        // One pass over the vocabulary (removing each added token's id one by one was quadratic).
        entries.retain(|e| !added_by_id.contains_key(&e.0));
        for (id, (content, is_special)) in added_by_id {
            special.insert(id, is_special);
            entries.push((id, content, true));
        }
        entries.sort_by_key(|e| e.0);
        let n = entries.len();
        for (i, e) in entries.iter().enumerate() {
            if e.0 as usize != i {
                bail!(
                    "{}: token ids are not contiguous (id {} where {i} was expected)",
                    p.display(),
                    e.0
                );
            }
        }
        let mut tokens = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        for (id, s, added) in entries {
            tokens.push(s);
            if added {
                scores.push(ADDED_TOKEN_SCORE);
                types.push(if special.get(&id).copied().unwrap_or(false) {
                    TYPE_CONTROL
                } else {
                    TYPE_USER_DEFINED
                });
            } else {
                scores.push(0.0);
                types.push(TYPE_NORMAL);
            }
        }
        let mut merges = Vec::new();
        if let Some(ms) = model.get("merges").and_then(|m| m.as_array()) {
            for m in ms {
                let s = match m {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(pair) if pair.len() == 2 => {
                        let a = pair[0].as_str().unwrap_or_default();
                        let b = pair[1].as_str().unwrap_or_default();
                        format!("{a} {b}")
                    }
                    other => bail!("{}: merge {other} is neither \"a b\" nor [a, b]", p.display()),
                };
                merges.push(s);
            }
        }
        let id_of = |key: &str| {
            config
                .get(key)
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
        };
        let (pre, pre_reason) = hf_pre_tokenizer(j.get("pre_tokenizer"));
        Ok(TokenizerMeta {
            model: "gpt2".to_string(),
            pre,
            tokens,
            scores: Some(scores),
            token_types: Some(types),
            merges,
            bos: id_of("bos_token_id").or(tok.bos_id()),
            eos: id_of("eos_token_id").or(tok.eos_id()),
            add_bos: Some(tok.add_bos_default()),
            chat_template: tok.chat_template().map(str::to_string),
            extra: Vec::new(),
            pre_reason,
        })
    }
}

/// llama.cpp's name for a `tokenizer.json` pre-tokenizer: `llama-bpe` for Llama-3's split regex.
fn hf_pre_tokenizer(pre: Option<&serde_json::Value>) -> (Option<String>, String) {
    let text = pre.map(|v| v.to_string()).unwrap_or_default();
    let llama3 = serde_json::Value::String(LLAMA3_REGEX.to_string()).to_string();
    if text.contains(&llama3) {
        return (
            Some(LLAMA_BPE.to_string()),
            "llama-bpe: tokenizer.json splits with Llama-3's regex".to_string(),
        );
    }
    let qwen2 = serde_json::Value::String(QWEN2_REGEX.to_string()).to_string();
    if text.contains(&qwen2) {
        return (
            Some("qwen2".to_string()),
            "qwen2: tokenizer.json splits with Qwen2's regex".to_string(),
        );
    }
    let byte_level_regex = pre.is_some_and(|v| {
        v.get("type").and_then(|t| t.as_str()) == Some("ByteLevel")
            && v.get("use_regex").and_then(|u| u.as_bool()).unwrap_or(true)
    });
    if byte_level_regex {
        return (
            Some("gpt2".to_string()),
            "gpt2: tokenizer.json uses GPT-2's ByteLevel regex".to_string(),
        );
    }
    (
        None,
        "left unset: tokenizer.json's pre-tokenizer is not one llama.cpp names (pass --pre)".to_string(),
    )
}

/// Which key layout to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// bitnet.cpp's official I2_S file: arch `bitnet-b1.58`, `general.file_type` 40.
    BitnetCpp,
    /// llama.cpp's `bitnet` arch with the given `general.file_type` (36 TQ1_0, 37 TQ2_0).
    LlamaCpp { file_type: u32 },
}

/// The architecture name the peers write for a family in a layout: bitnet.cpp's official file says
/// `bitnet-b1.58` for the 2B-4T family, llama.cpp says `bitnet`; both write 1bitLLM models as
/// `bitnet`, Llama-architecture models as `llama` and the embedding models as `qwen3`.
pub fn arch_of(layout: Layout, family: Family) -> &'static str {
    match (family, layout) {
        (Family::BitNetB158, Layout::BitnetCpp) => arch::BITNET_B158,
        (Family::BitNetB158 | Family::OneBitLlm, _) => arch::LLAMACPP_BITNET,
        (Family::Llama158, _) => arch::LLAMA,
        (Family::BitNetEmbedQwen3, _) => arch::QWEN3,
    }
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).with_context(|| format!("{what} = {v} does not fit the u32 GGUF key"))
}

/// Writes every metadata key of the output, in the order of the layout's reference converter.
pub fn write_metadata(
    w: &mut GgufWriter,
    layout: Layout,
    cfg: &ModelConfig,
    name: &str,
    t: &TokenizerMeta,
) -> Result<()> {
    let a = arch_of(layout, cfg.family);
    let k = |s: &str| arch::arch_key(a, s);
    let mut put = |key: String, v: MetadataValue| w.add_metadata(key, v).map_err(anyhow::Error::from);
    let tokenizer = |put: &mut dyn FnMut(String, MetadataValue) -> Result<()>, with_scores: bool| -> Result<()> {
        put("tokenizer.ggml.model".into(), t.model.as_str().into())?;
        if let Some(p) = &t.pre {
            put("tokenizer.ggml.pre".into(), p.as_str().into())?;
        }
        put("tokenizer.ggml.tokens".into(), t.tokens.clone().into())?;
        if let (true, Some(s)) = (with_scores, &t.scores) {
            put("tokenizer.ggml.scores".into(), s.clone().into())?;
        }
        if let Some(ty) = &t.token_types {
            put("tokenizer.ggml.token_type".into(), ty.clone().into())?;
        }
        if !t.merges.is_empty() {
            put("tokenizer.ggml.merges".into(), t.merges.clone().into())?;
        }
        if let Some(b) = t.bos {
            put("tokenizer.ggml.bos_token_id".into(), b.into())?;
        }
        if let Some(e) = t.eos {
            put("tokenizer.ggml.eos_token_id".into(), e.into())?;
        }
        for (key, v) in &t.extra {
            put(key.clone(), v.clone())?;
        }
        if let Some(c) = &t.chat_template {
            put("tokenizer.chat_template".into(), c.as_str().into())?;
        }
        Ok(())
    };
    put(key::ARCHITECTURE.into(), a.into())?;
    // The integer hyperparameters, by key; each layout writes them in its own converter's order.
    let hp = |put: &mut dyn FnMut(String, MetadataValue) -> Result<()>, key: &str| -> Result<()> {
        let v = match key {
            key::VOCAB_SIZE => cfg.vocab_size,
            key::CONTEXT_LENGTH => cfg.context_length,
            key::EMBEDDING_LENGTH => cfg.hidden_size,
            key::BLOCK_COUNT => cfg.num_layers,
            key::FEED_FORWARD_LENGTH => cfg.intermediate_size,
            key::ROPE_DIMENSION_COUNT => cfg.rope_dim,
            key::HEAD_COUNT => cfg.num_heads,
            key::HEAD_COUNT_KV => cfg.num_kv_heads,
            _ => bail!("internal error: unknown hyperparameter {key}"),
        };
        put(k(key), u32_of(v, key)?.into())
    };
    // Keys only some architectures have: explicit head widths where heads are not hidden / heads wide
    // (Qwen3), and the pooling of embedding models.
    let family_keys = |put: &mut dyn FnMut(String, MetadataValue) -> Result<()>| -> Result<()> {
        if cfg.num_heads * cfg.head_dim != cfg.hidden_size || a == arch::QWEN3 {
            put(k(key::KEY_LENGTH), u32_of(cfg.head_dim, "head dimension")?.into())?;
            put(k(key::VALUE_LENGTH), u32_of(cfg.head_dim, "head dimension")?.into())?;
        }
        if let Some(p) = cfg.pooling {
            let v: u32 = match p {
                Pooling::Mean => 1,
                Pooling::Cls => 2,
                Pooling::Last => 3,
            };
            put(k(key::POOLING_TYPE), v.into())?;
        }
        Ok(())
    };
    match layout {
        Layout::BitnetCpp => {
            put(key::NAME.into(), name.into())?;
            for key in [
                key::VOCAB_SIZE,
                key::CONTEXT_LENGTH,
                key::EMBEDDING_LENGTH,
                key::BLOCK_COUNT,
                key::FEED_FORWARD_LENGTH,
                key::ROPE_DIMENSION_COUNT,
                key::HEAD_COUNT,
                key::HEAD_COUNT_KV,
            ] {
                hp(&mut put, key)?;
            }
            put("tokenizer.ggml.add_bos_token".into(), t.add_bos.unwrap_or(true).into())?;
            put(k(key::RMS_EPS), cfg.rms_eps.into())?;
            put(k(key::ROPE_FREQ_BASE), cfg.rope_theta.into())?;
            family_keys(&mut put)?;
            put(key::FILE_TYPE.into(), 40u32.into())?;
            tokenizer(&mut put, true)?;
            put(key::QUANTIZATION_VERSION.into(), 2u32.into())?;
        }
        Layout::LlamaCpp { file_type } => {
            put(key::TYPE.into(), "model".into())?;
            put(key::NAME.into(), name.into())?;
            for key in [
                key::VOCAB_SIZE,
                key::BLOCK_COUNT,
                key::CONTEXT_LENGTH,
                key::EMBEDDING_LENGTH,
                key::FEED_FORWARD_LENGTH,
                key::HEAD_COUNT,
                key::HEAD_COUNT_KV,
                key::ROPE_DIMENSION_COUNT,
            ] {
                hp(&mut put, key)?;
            }
            put(k(key::ROPE_FREQ_BASE), cfg.rope_theta.into())?;
            put(k(key::RMS_EPS), cfg.rms_eps.into())?;
            if a == arch::LLAMACPP_BITNET {
                // Only the `bitnet` arch has an activation key (llama and qwen3 imply SiLU).
                let act = match cfg.ffn_act {
                    FfnActivation::Relu2 => "relu2",
                    FfnActivation::Silu => "silu",
                };
                put(k(key::HIDDEN_ACTIVATION), act.into())?;
                put(k(key::ROPE_SCALING_TYPE), "linear".into())?;
                put(k(key::ROPE_SCALING_FACTOR), 1.0f32.into())?;
            }
            family_keys(&mut put)?;
            if let Some(b) = t.add_bos {
                put("tokenizer.ggml.add_bos_token".into(), b.into())?;
            }
            // llama.cpp writes scores only for SentencePiece vocabularies (they order its merges).
            tokenizer(&mut put, t.model == "llama")?;
            put(key::QUANTIZATION_VERSION.into(), 2u32.into())?;
            put(key::FILE_TYPE.into(), file_type.into())?;
        }
    }
    Ok(())
}
