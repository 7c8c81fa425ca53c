//! Tokenizer for bitnet-rs: the Llama-3 byte-level BPE tokenizer that BitNet b1.58 models
//! (microsoft/bitnet-b1.58-2B-4T) use, loaded from a Hugging Face folder ([`Tokenizer::from_hf_dir`])
//! or from GGUF metadata ([`Tokenizer::from_gguf_vocab`]).
//!
//! Both sources behave the same way and match Hugging Face `transformers`: `encode` parses
//! special-token text (e.g. `<|eot_id|>`) as the special token, adds BOS only when asked, and
//! `decode` prints special tokens as their text. [`StreamDecoder`] decodes generated tokens one at a
//! time without ever splitting a UTF-8 character.
//!
//! ```no_run
//! use bitnet_tokenizer::Tokenizer;
//!
//! # fn main() -> Result<(), bitnet_tokenizer::TokenizerError> {
//! let tok = Tokenizer::from_hf_dir(std::path::Path::new("bitnet-b1.58-2B-4T"))?;
//! let prompt = tok.encode("The capital of France is", tok.add_bos_default())?;
//! # let generated: Vec<u32> = Vec::new();
//! let mut out = tok.stream_decoder();
//! for id in generated {
//!     if tok.stop_ids().contains(&id) {
//!         break;
//!     }
//!     if let Some(text) = out.push(id) {
//!         print!("{text}");
//!     }
//! }
//! print!("{}", out.flush());
//! # let _ = prompt;
//! # Ok(())
//! # }
//! ```
// Parsers and the server face input from outside: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod byte_level;
pub mod chat_template;
mod error;
mod gguf_vocab;
mod hf;
mod pre_tokenizer;
mod spm;
mod stream;
mod token_table;

use std::path::Path;
use std::sync::Arc;

pub use chat_template::{ChatMessage, ChatTemplate, ChatTemplateError};
pub use error::TokenizerError;
pub use gguf_vocab::GgufVocab;
pub use pre_tokenizer::{LLAMA3_REGEX, LLAMACPP_DEFAULT_REGEXES, QWEN2_REGEX};

/// One piece of a sentencepiece model: text, score, type.
pub type SentencePiece = (String, f32, i32);

/// The pieces of a sentencepiece `tokenizer.model` as `(text, score, type)` (types as GGUF's
/// `tokenizer.ggml.token_type`), and whether it adds a dummy prefix: what a GGUF `llama`
/// vocabulary holds. Only BPE models are accepted.
pub fn sentencepiece_pieces(path: &Path) -> Result<(Vec<SentencePiece>, bool), TokenizerError> {
    let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let m = spm::parse_model_proto(&bytes).map_err(|message| TokenizerError::InvalidFile {
        path: path.to_path_buf(),
        message,
    })?;
    if m.model_type != 2 {
        return Err(TokenizerError::Unsupported(format!(
            "{}: sentencepiece model type {} (only BPE, type 2, is supported)",
            path.display(),
            m.model_type
        )));
    }
    Ok((m.pieces, m.add_dummy_prefix))
}
pub use stream::StreamDecoder;

use token_table::TokenTable;

/// A loaded tokenizer. Cheap to share (`Send + Sync`); cloning copies the vocabulary.
#[derive(Clone)]
pub struct Tokenizer {
    /// Does the encoding: added tokens, pre-tokenizer and BPE model.
    inner: tokenizers::Tokenizer,
    /// Id -> piece, for decoding (shared with stream decoders).
    table: Arc<TokenTable>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    eot_id: Option<u32>,
    add_bos: bool,
    /// The token appended to every input, if any (embedding models append EOS and pool it).
    append: Option<u32>,
    stop_ids: Vec<u32>,
    pre_name: String,
    chat_template: Option<String>,
    /// Bytes that have no token (only possible in a truncated GGUF vocabulary); text containing
    /// them cannot be encoded faithfully.
    missing_bytes: Vec<u8>,
    /// `decode` removes one leading space (SentencePiece vocabularies with a dummy prefix).
    strip_leading_space: bool,
    /// What was noticed or repaired while loading (for `bitnet inspect`).
    notes: Vec<String>,
    /// The same encoder without the special added tokens (built on first use): text that spells a
    /// special token is encoded as plain text.
    plain: Arc<std::sync::OnceLock<Result<tokenizers::Tokenizer, String>>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("pre_tokenizer", &self.pre_name)
            .field("bos_id", &self.bos_id)
            .field("add_bos", &self.add_bos)
            .field("stop_ids", &self.stop_ids)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from GGUF metadata (`tokenizer.ggml.model = "gpt2"`: byte-level BPE).
    ///
    /// The pre-tokenizer follows `tokenizer.ggml.pre`; when it is missing (as in the official
    /// bitnet-b1.58-2B-4T GGUF) the Llama-3 one is used, so that tokenization matches Hugging Face
    /// (see [`Tokenizer::pre_tokenizer_name`]). Control (type 3) and user-defined (type 4) tokens
    /// are recognised in text. Every id, merge and array length is validated.
    pub fn from_gguf_vocab(v: GgufVocab) -> Result<Self, TokenizerError> {
        gguf_vocab::build(v)
    }

    /// Loads `dir/tokenizer.json`, plus `tokenizer_config.json` (BOS/EOS tokens, `add_bos_token`,
    /// chat template) and `generation_config.json` (extra stop ids) when present. A
    /// `chat_template.jinja` file is used when the config has no template.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        hf::load(dir)
    }

    /// Encodes `text`. Special-token text (`<|eot_id|>`) becomes the special token. BOS is
    /// prepended once when `add_bos` is true (an error if the vocabulary has no BOS), never
    /// otherwise, whatever the source's own post-processing would do.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        if let Some(b) = self.missing_bytes.iter().find(|&&b| text.as_bytes().contains(&b)) {
            return Err(TokenizerError::Encode(format!(
                "the text contains byte 0x{b:02X}, which has no token in this vocabulary"
            )));
        }
        let bos = match (add_bos, self.bos_id) {
            (false, _) => None,
            (true, Some(id)) => Some(id),
            (true, None) => {
                return Err(TokenizerError::Encode(
                    "BOS requested but the vocabulary has no BOS token".to_string(),
                ))
            }
        };
        let encoding = guarded(|| self.inner.encode_fast(text, false))
            .map_err(TokenizerError::Encode)?
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        ids.extend(bos);
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// The encoder without special tokens (see [`Tokenizer::encode_with_plain_spans`]).
    fn plain(&self) -> Result<&tokenizers::Tokenizer, TokenizerError> {
        self.plain
            .get_or_init(|| {
                let json = self.inner.to_string(false).map_err(|e| e.to_string())?;
                let mut v: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
                if let Some(list) = v.get_mut("added_tokens").and_then(|a| a.as_array_mut()) {
                    list.retain(|t| t.get("special").and_then(|s| s.as_bool()) != Some(true));
                }
                let text = serde_json::to_string(&v).map_err(|e| e.to_string())?;
                guarded(|| text.parse::<tokenizers::Tokenizer>())?.map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| TokenizerError::Encode(format!("building the plain-text encoder: {e}")))
    }

    /// Whether `text` spells a special (control) token, such as `<|eot_id|>`.
    pub fn has_special_text(&self, text: &str) -> bool {
        let specials = self.inner.get_added_tokens_decoder();
        guarded(|| self.inner.encode_fast(text, false))
            .is_ok_and(|r| r.is_ok_and(|e| e.get_ids().iter().any(|id| specials.get(id).is_some_and(|t| t.special))))
    }

    /// Encodes `text` with no special-token parsing at all: `<|eot_id|>` is eleven characters of
    /// text, as OpenAI's API treats user text. BOS as in [`encode`](Self::encode).
    pub fn encode_plain(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let all = std::ops::Range {
            start: 0,
            end: text.len(),
        };
        self.encode_with_plain_spans(text, std::slice::from_ref(&all), add_bos)
    }

    /// Encodes `text` like [`encode`](Self::encode), except that special-token text inside the byte
    /// ranges `plain` (e.g. the messages' contents in a rendered chat prompt) is not turned into
    /// special tokens: only the text outside them (the chat template's own) may produce control tokens.
    /// When `plain` holds no special-token text the ids equal [`encode`](Self::encode)'s.
    pub fn encode_with_plain_spans(
        &self,
        text: &str,
        plain: &[std::ops::Range<usize>],
        add_bos: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = self.encode(text, add_bos)?;
        let first = usize::from(add_bos);
        let enc = guarded(|| self.inner.encode(text, false))
            .map_err(TokenizerError::Encode)?
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let specials = self.inner.get_added_tokens_decoder();
        let is_special = |id: u32| specials.get(&id).is_some_and(|t| t.special);
        let inside = |(a, b): (usize, usize)| plain.iter().any(|r| a < r.end && b > r.start);
        // The special tokens the template wrote (outside every plain span), by byte range.
        let mut genuine = Vec::new();
        let mut forged = false;
        for (&id, &off) in enc.get_ids().iter().zip(enc.get_offsets()) {
            if is_special(id) {
                if inside(off) {
                    forged = true;
                } else {
                    genuine.push((id, off));
                }
            }
        }
        if !forged {
            return Ok(ids);
        }
        // Text between the genuine special tokens is encoded without special tokens.
        let plain_enc = self.plain()?;
        ids.truncate(first);
        let mut at = 0;
        let push_text = |seg: &str, ids: &mut Vec<u32>| -> Result<(), TokenizerError> {
            if !seg.is_empty() {
                let e = guarded(|| plain_enc.encode_fast(seg, false))
                    .map_err(TokenizerError::Encode)?
                    .map_err(|e| TokenizerError::Encode(e.to_string()))?;
                ids.extend_from_slice(e.get_ids());
            }
            Ok(())
        };
        for (id, (a, b)) in genuine {
            push_text(text.get(at..a).unwrap_or(""), &mut ids)?;
            ids.push(id);
            at = b;
        }
        push_text(text.get(at..).unwrap_or(""), &mut ids)?;
        Ok(ids)
    }

    /// Decodes `ids` like Hugging Face `decode(ids, skip_special_tokens=False)`: special tokens
    /// appear as their text, invalid UTF-8 as U+FFFD. An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.table.append_bytes(id, &mut bytes)?;
        }
        // SentencePiece vocabularies that prepend `▁` to the text drop one leading space again
        // (Llama-2's `Strip` decoder; llama.cpp does the same for the first token).
        if self.strip_leading_space && bytes.first() == Some(&b' ') {
            bytes.remove(0);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A decoder for streaming generated ids (see [`StreamDecoder`]).
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new(self)
    }

    /// Number of token ids (highest id + 1), i.e. the size of the model's embedding table.
    pub fn vocab_size(&self) -> usize {
        self.table.len()
    }

    /// The BOS token id, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The EOS token id, if the vocabulary names one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The end-of-turn token id (`<|eot_id|>` for Llama-3), if any.
    pub fn eot_id(&self) -> Option<u32> {
        self.eot_id
    }

    /// Whether prompts should start with BOS (GGUF `add_bos_token`, HF `add_bos_token` or the
    /// tokenizer.json post-processor); false when there is no BOS token.
    pub fn add_bos_default(&self) -> bool {
        self.add_bos
    }

    /// The token the model's inputs end with, if any: EOS when GGUF `add_eos_token` is set, or what a
    /// tokenizer.json post-processor appends. Embedding models pool that token.
    pub fn appended_token(&self) -> Option<u32> {
        self.append
    }

    /// What was noticed or repaired while loading the vocabulary (e.g. bitnet.cpp's corrupted
    /// special-token texts), for `bitnet inspect`.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Ids that end generation: EOS, the generation_config.json EOS list, EOT (`<|eot_id|>`) and
    /// `<|end_of_text|>`, each once.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The text of one token, decoded on its own (e.g. `" world"`, `"<|eot_id|>"`; a token that
    /// holds part of a UTF-8 character gives U+FFFD). `None` for an id outside the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<String> {
        let mut bytes = Vec::new();
        self.table.append_bytes(id, &mut bytes).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The token as stored in the vocabulary (byte-level form, e.g. `"Ġworld"`).
    pub fn token_piece(&self, id: u32) -> Option<&str> {
        self.table.piece(id)
    }

    /// The id of a vocabulary piece or special token (`"<|eot_id|>"`, `"Ġworld"`).
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    /// Which pre-tokenizer is in use and why, e.g.
    /// `"llama3 (default: tokenizer.ggml.pre missing)"`; `"tokenizer.json"` for a Hugging Face
    /// folder.
    pub fn pre_tokenizer_name(&self) -> &str {
        &self.pre_name
    }

    /// The chat template (Jinja source) carried by the model files, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    pub(crate) fn table(&self) -> Arc<TokenTable> {
        Arc::clone(&self.table)
    }
}

/// At most 64 characters of `s`, for error messages about untrusted strings.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// Runs a call into the `tokenizers` crate, turning a panic into an error: it panics on some
/// malformed `tokenizer.json` files instead of failing (an `expect` in its decoder deserializer,
/// found by the `tokenizer_json` fuzz target), and a file from a stranger must not take the process
/// down.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    guarded_in("the tokenizers library", "this tokenizer", f)
}

/// [`guarded`] for any library: `library` failed on `input` (named in the error).
pub(crate) fn guarded_in<T>(library: &str, input: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_string());
        format!("{library} failed on {input} ({})", shorten(&what))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokenizer_and_stream_decoder_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Tokenizer>();
        check::<super::StreamDecoder>();
        check::<super::TokenizerError>();
    }

    #[test]
    fn shorten_cuts_long_strings_at_char_boundaries() {
        assert_eq!(super::shorten("abc"), "abc");
        let long = "日".repeat(100);
        assert_eq!(super::shorten(&long), format!("{}...", "日".repeat(64)));
    }
}
