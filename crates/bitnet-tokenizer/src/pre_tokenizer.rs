//! Choice of the pre-tokenizer (the regex that splits text into words before BPE) for GGUF files.
//!
//! GGUF names the pre-tokenizer with `tokenizer.ggml.pre`. The official
//! microsoft/bitnet-b1.58-2B-4T `ggml-model-i2_s.gguf` has no such key; llama.cpp/bitnet.cpp then
//! fall back to their "default" pre-tokenizer (punctuation-run, GPT-2-like and digit regexes) and
//! tokenize differently from Hugging Face (contractions, punctuation runs, code). The model was
//! trained with the Llama-3 tokenizer, so we use the Llama-3 regex when the key is missing: we
//! match Hugging Face, deliberately not bitnet.cpp. A file that says `default` explicitly gets
//! llama.cpp's default, so that it tokenizes as its producer intended.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::TokenizerError;

/// The Llama-3 split regex, exactly as in Meta's / Hugging Face's tokenizer.json.
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The Qwen2 / Qwen3 split regex (single digits; llama.cpp's `LLAMA_VOCAB_PRE_TYPE_QWEN2`).
pub const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_DEFAULT` (what it uses for `tokenizer.ggml.pre = "default"`):
/// punctuation runs, then a GPT-2-like split, then digit runs, then groups of three digits. Each
/// regex splits the pieces left by the previous one.
pub const LLAMACPP_DEFAULT_REGEXES: [&str; 4] = [
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

/// The pre-tokenizer families we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreKind {
    /// Split(Llama-3 regex, Isolated) + ByteLevel without regex; BPE with `ignore_merges`.
    Llama3,
    /// GPT-2: ByteLevel with its built-in GPT-2 regex; BPE applies all merges.
    Gpt2,
    /// llama.cpp's "default": the [`LLAMACPP_DEFAULT_REGEXES`] in turn; BPE applies all merges.
    LlamaCppDefault,
    /// Qwen2/Qwen3: NFC, then Split(Qwen2 regex) + ByteLevel; BPE applies all merges.
    Qwen2,
}

impl PreKind {
    /// Whether the BPE model returns a pre-token that is itself a vocabulary entry as one token
    /// without running merges (Hugging Face's Llama-3 tokenizer.json sets this).
    pub(crate) fn ignore_merges(self) -> bool {
        matches!(self, PreKind::Llama3)
    }

    /// The `tokenizers` pre-tokenizer, mirroring the structure of Hugging Face's tokenizer.json
    /// for this family.
    pub(crate) fn build(self) -> Result<PreTokenizerWrapper, TokenizerError> {
        match self {
            PreKind::Llama3 => Ok(Sequence::new(vec![
                split(LLAMA3_REGEX)?.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()),
            PreKind::Gpt2 => Ok(ByteLevel::new(false, true, true).into()),
            PreKind::Qwen2 => Ok(Sequence::new(vec![
                split(QWEN2_REGEX)?.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()),
            PreKind::LlamaCppDefault => {
                let mut steps = Vec::with_capacity(LLAMACPP_DEFAULT_REGEXES.len() + 1);
                for re in LLAMACPP_DEFAULT_REGEXES {
                    steps.push(split(re)?.into());
                }
                steps.push(ByteLevel::new(false, true, false).into());
                Ok(Sequence::new(steps).into())
            }
        }
    }
}

/// A `Split` pre-tokenizer that keeps both the matches and the text between them as pieces.
fn split(regex: &str) -> Result<Split, TokenizerError> {
    Split::new(
        SplitPattern::Regex(regex.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| TokenizerError::Unsupported(format!("pre-tokenizer regex {regex:?}: {e}")))
}

/// Maps `tokenizer.ggml.pre` to a pre-tokenizer family and a human-readable description of the
/// choice (shown by [`crate::Tokenizer::pre_tokenizer_name`]).
pub(crate) fn choose(pre: Option<&str>) -> (PreKind, String) {
    match pre {
        None | Some("") => (
            PreKind::Llama3,
            "llama3 (default: tokenizer.ggml.pre missing)".to_string(),
        ),
        // Falcon3's and Falcon-E's vocabularies use the Llama-3 regex with ignore_merges (llama.cpp maps
        // `falcon3` to it; `falcon_e` is only known to bitnet.cpp's newest fork, assumed the same).
        Some(p @ ("llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "falcon_e" | "falcon-e")) => {
            (PreKind::Llama3, format!("llama3 (tokenizer.ggml.pre = {p})"))
        }
        Some("default") => (
            PreKind::LlamaCppDefault,
            "llama.cpp default (tokenizer.ggml.pre = default)".to_string(),
        ),
        Some(p @ ("gpt2" | "gpt-2")) => (PreKind::Gpt2, format!("gpt2 (tokenizer.ggml.pre = {p})")),
        Some(p @ ("qwen2" | "qwen3")) => (PreKind::Qwen2, format!("qwen2 (tokenizer.ggml.pre = {p})")),
        Some(other) => (
            PreKind::Llama3,
            format!(
                "llama3 (fallback: unknown tokenizer.ggml.pre = {:?})",
                crate::shorten(other)
            ),
        ),
    }
}
