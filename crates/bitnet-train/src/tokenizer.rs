//! Training a byte-level BPE tokenizer (GPT-2 pre-tokenizer, no prefix space) with the `tokenizers`
//! crate, and writing the Hugging Face tokenizer files our engine and transformers read.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder};

/// Begin of text (prepended to every document).
pub const BOS: &str = "<|begin_of_text|>";
/// End of text (appended to every document).
pub const EOS: &str = "<|end_of_text|>";
/// End of a chat turn (BitNet's chat template).
pub const EOT: &str = "<|eot_id|>";
/// The special tokens, ids 0, 1, 2 of a trained tokenizer.
pub const SPECIALS: [&str; 3] = [BOS, EOS, EOT];

/// Trains a tokenizer of `vocab_size` entries (including the 3 special tokens and the 256 bytes) on
/// `texts`, and writes `tokenizer.json`, `tokenizer_config.json` into `dir`.
pub fn train_bpe(texts: &[String], vocab_size: usize, dir: &Path) -> Result<()> {
    if vocab_size < 256 + SPECIALS.len() {
        anyhow::bail!(
            "vocabulary size {vocab_size} is too small: byte-level BPE needs at least {} entries",
            256 + SPECIALS.len()
        );
    }
    let specials: Vec<AddedToken> = SPECIALS.iter().map(|s| AddedToken::from(*s, true)).collect();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(specials.clone())
        .build();
    let byte_level = ByteLevel::default().add_prefix_space(false).trim_offsets(false);
    let mut tok = TokenizerBuilder::<
        BPE,
        tokenizers::NormalizerWrapper,
        ByteLevel,
        tokenizers::PostProcessorWrapper,
        ByteLevel,
    >::new()
    .with_model(BPE::default())
    .with_pre_tokenizer(Some(byte_level))
    .with_decoder(Some(byte_level))
    .build()
    .map_err(|e| anyhow!("building the tokenizer: {e}"))?;
    tok.add_special_tokens(&specials);
    tok.train(&mut trainer, texts.iter())
        .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("tokenizer.json");
    let json = tok
        .to_string(false)
        .map_err(|e| anyhow!("serializing the tokenizer: {e}"))?;
    bitnet_tools::safe_write::write_atomically(&path, |w| {
        w.write_all(json.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    })?;
    write_tokenizer_config(dir)
}

/// BitNet's chat format (`User: ...<|eot_id|>Assistant: ...`) for models this crate trains, with the generation
/// prompt ending at `Assistant:`. A byte-level BPE tokenizer attaches the space to the answer's first word
/// (`Ġword`), so the official template's trailing `'Assistant: '` would leave a lone space token that never
/// occurs in training text, and a small model answers that with noise.
pub const TRAINED_CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{{ message['role'] | capitalize + ': ' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

/// `tokenizer_config.json`: BOS/EOS, BOS on by default, and BitNet's chat template.
pub fn write_tokenizer_config(dir: &Path) -> Result<()> {
    let cfg = serde_json::json!({
        "bos_token": BOS,
        "eos_token": EOS,
        "add_bos_token": true,
        "add_eos_token": false,
        "model_max_length": 1_000_000,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": TRAINED_CHAT_TEMPLATE,
    });
    let p = dir.join("tokenizer_config.json");
    let text = serde_json::to_string_pretty(&cfg)?;
    bitnet_tools::safe_write::write_atomically(&p, |w| {
        w.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", p.display()))
    })
}

/// The byte-level vocabulary and merges of a `tokenizer.json` (for GGUF export): tokens in id order,
/// merges as `"a b"`, and the ids of the special (added) tokens.
pub struct BpeVocab {
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    pub special_ids: Vec<u32>,
}

/// Reads a BPE `tokenizer.json` (merges either as `"a b"` strings or `["a", "b"]` pairs).
pub fn read_bpe_vocab(path: &Path) -> Result<BpeVocab> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let j: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let model = j
        .get("model")
        .with_context(|| format!("{}: no 'model'", path.display()))?;
    let vocab = model
        .get("vocab")
        .and_then(|v| v.as_object())
        .with_context(|| format!("{}: 'model.vocab' is not an object", path.display()))?;
    let mut pairs: Vec<(u32, String)> = Vec::with_capacity(vocab.len());
    for (k, v) in vocab {
        let id = v
            .as_u64()
            .with_context(|| format!("{}: id of token {k:?} is not a number", path.display()))?;
        pairs.push((id as u32, k.clone()));
    }
    let mut special_ids = Vec::new();
    if let Some(added) = j.get("added_tokens").and_then(|a| a.as_array()) {
        for a in added {
            let (Some(id), Some(content)) = (
                a.get("id").and_then(|v| v.as_u64()),
                a.get("content").and_then(|v| v.as_str()),
            ) else {
                anyhow::bail!("{}: malformed entry in 'added_tokens'", path.display());
            };
            if !pairs.iter().any(|(i, _)| *i == id as u32) {
                pairs.push((id as u32, content.to_string()));
            }
            special_ids.push(id as u32);
        }
    }
    pairs.sort_by_key(|p| p.0);
    for (i, (id, t)) in pairs.iter().enumerate() {
        if *id as usize != i {
            anyhow::bail!(
                "{}: token ids are not dense (token {t:?} has id {id}, expected {i})",
                path.display()
            );
        }
    }
    let mut merges = Vec::new();
    if let Some(ms) = model.get("merges").and_then(|m| m.as_array()) {
        for m in ms {
            match m {
                serde_json::Value::String(s) => merges.push(s.clone()),
                serde_json::Value::Array(ab) if ab.len() == 2 => {
                    let a = ab[0].as_str().unwrap_or_default();
                    let b = ab[1].as_str().unwrap_or_default();
                    merges.push(format!("{a} {b}"));
                }
                _ => anyhow::bail!("{}: malformed merge {m}", path.display()),
            }
        }
    }
    Ok(BpeVocab {
        tokens: pairs.into_iter().map(|p| p.1).collect(),
        merges,
        special_ids,
    })
}
