//! Loading a tokenizer from a Hugging Face model folder.
//!
//! `tokenizer.json` holds the tokenizer itself (read by the `tokenizers` crate). The special
//! tokens and chat template live in `tokenizer_config.json`, and the ids generation stops on in
//! `generation_config.json` (`eos_token_id`, an int or a list: Llama-3 instruct models stop on
//! `<|eot_id|>` as well as `<|end_of_text|>`). Both are optional.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokenizers::DecoderWrapper;

use crate::spm;
use crate::token_table::{PieceForm, TokenTable};
use crate::{shorten, Tokenizer, TokenizerError};

/// Builds the tokenizer; see [`Tokenizer::from_hf_dir`].
pub(crate) fn load(dir: &Path) -> Result<Tokenizer, TokenizerError> {
    let tok_path = dir.join("tokenizer.json");
    let sp_path = dir.join("tokenizer.model");
    let (inner, form, strip_leading_space, pre_name) = if !tok_path.exists() && sp_path.exists() {
        let (inner, prefix) = from_sentencepiece_model(&sp_path)?;
        (
            inner,
            PieceForm::SentencePiece,
            prefix,
            "tokenizer.model (sentencepiece)".to_string(),
        )
    } else {
        let bytes = std::fs::read(&tok_path).map_err(|source| TokenizerError::Io {
            path: tok_path.clone(),
            source,
        })?;
        let inner = crate::guarded(|| tokenizers::Tokenizer::from_bytes(&bytes))
            .map_err(|e| bad(&tok_path, e))?
            .map_err(|e| bad(&tok_path, e))?;
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| bad(&tok_path, e))?;
        if is_byte_level(inner.get_decoder()) {
            (inner, PieceForm::ByteLevel, false, "tokenizer.json".to_string())
        } else if is_sentencepiece(inner.get_decoder()) {
            let strip = strips_leading_space(&json);
            (
                inner,
                PieceForm::SentencePiece,
                strip,
                "tokenizer.json (sentencepiece BPE)".to_string(),
            )
        } else {
            return Err(TokenizerError::Unsupported(format!(
                "{}: only byte-level BPE (decoder ByteLevel) and SentencePiece BPE (decoder ByteFallback / \
                 Metaspace) tokenizers are supported",
                tok_path.display()
            )));
        }
    };

    // Id -> piece, including the added tokens.
    let vocab = inner.get_vocab(true);
    let size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
    // Holes in the id range are tolerated, a range far larger than the vocabulary is not (it
    // would only make us allocate a huge table for a broken file).
    if size > vocab.len().saturating_mul(2).max(1024) {
        return Err(bad(
            &tok_path,
            format!("token ids go up to {} for {} tokens", size - 1, vocab.len()),
        ));
    }
    let mut pieces: Vec<Option<String>> = vec![None; size];
    for (piece, id) in vocab {
        pieces[id as usize] = Some(piece);
    }
    let table = TokenTable::with_form(pieces, form);

    let cfg_path = dir.join("tokenizer_config.json");
    let cfg = read_optional_json(&cfg_path)?;
    let gen_path = dir.join("generation_config.json");
    let gen = read_optional_json(&gen_path)?;

    let token_id = |key: &str| -> Result<Option<u32>, TokenizerError> {
        let Some(text) = cfg.as_ref().and_then(|c| token_string(c.get(key)?)) else {
            return Ok(None);
        };
        match inner.token_to_id(text) {
            Some(id) => Ok(Some(id)),
            None => Err(bad(
                &cfg_path,
                format!("{key} {:?} is not a token of tokenizer.json", shorten(text)),
            )),
        }
    };
    let checked_id = |path: &Path, key: &str, v: &Value| -> Result<u32, TokenizerError> {
        v.as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .filter(|&id| (id as usize) < table.len())
            .ok_or_else(|| {
                bad(
                    path,
                    format!("{key} = {v} is not a token id (vocabulary size {})", table.len()),
                )
            })
    };

    let bos_id = match token_id("bos_token")? {
        Some(id) => Some(id),
        None => match gen.as_ref().and_then(|g| g.get("bos_token_id")) {
            Some(Value::Null) | None => None,
            Some(v) => Some(checked_id(&gen_path, "bos_token_id", v)?),
        },
    };
    let eos_id = token_id("eos_token")?;
    let mut gen_eos = Vec::new();
    match gen.as_ref().and_then(|g| g.get("eos_token_id")) {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for v in list {
                gen_eos.push(checked_id(&gen_path, "eos_token_id", v)?);
            }
        }
        Some(v) => gen_eos.push(checked_id(&gen_path, "eos_token_id", v)?),
    }
    let eot_id = inner.token_to_id("<|eot_id|>");
    let mut stop_ids = Vec::new();
    let end_of_text = inner.token_to_id("<|end_of_text|>");
    for id in eos_id.into_iter().chain(gen_eos).chain(eot_id).chain(end_of_text) {
        if !stop_ids.contains(&id) {
            stop_ids.push(id);
        }
    }

    // `add_bos_token` when the config has it (LlamaTokenizerFast); otherwise whatever the
    // tokenizer.json post-processor does, which is what `transformers` would do.
    let add_bos = match bos_id {
        None => false,
        Some(bos) => match cfg.as_ref().and_then(|c| c.get("add_bos_token")) {
            Some(Value::Bool(b)) => *b,
            _ => crate::guarded(|| inner.encode("", true))
                .ok()
                .and_then(|r| r.ok())
                .is_some_and(|e| e.get_ids().first() == Some(&bos)),
        },
    };

    // A post-processor that appends a token to every input (Qwen3 embedding models append
    // <|endoftext|>, which they pool).
    let append = crate::guarded(|| inner.encode("", true))
        .ok()
        .and_then(|r| r.ok())
        .and_then(|e| e.get_ids().last().copied())
        .filter(|&id| Some(id) != bos_id);

    let chat_template = match cfg.as_ref().and_then(|c| c.get("chat_template")) {
        Some(v) => chat_template_of(v),
        None => None,
    };
    let chat_template = match chat_template {
        Some(t) => Some(t),
        None => read_optional_text(&dir.join("chat_template.jinja"))?,
    };

    Ok(Tokenizer {
        inner,
        table: Arc::new(table),
        bos_id,
        eos_id,
        eot_id,
        add_bos,
        append,
        stop_ids,
        pre_name,
        chat_template,
        missing_bytes: Vec::new(),
        strip_leading_space,
        notes: Vec::new(),
        plain: Default::default(),
    })
}

fn bad(path: &Path, message: impl ToString) -> TokenizerError {
    TokenizerError::InvalidFile {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// True when the decoder maps byte-level characters back to bytes (what our decoding assumes).
fn is_byte_level(decoder: Option<&DecoderWrapper>) -> bool {
    match decoder {
        Some(DecoderWrapper::ByteLevel(_)) => true,
        Some(DecoderWrapper::Sequence(seq)) => seq
            .get_decoders()
            .iter()
            .any(|d| matches!(d, DecoderWrapper::ByteLevel(_))),
        _ => false,
    }
}

/// True for the decoders of SentencePiece-style BPE tokenizers (Llama-2: Replace ▁, ByteFallback,
/// Fuse, Strip; newer files: Metaspace).
fn is_sentencepiece(decoder: Option<&DecoderWrapper>) -> bool {
    match decoder {
        Some(DecoderWrapper::Metaspace(_)) | Some(DecoderWrapper::ByteFallback(_)) => true,
        Some(DecoderWrapper::Sequence(seq)) => seq
            .get_decoders()
            .iter()
            .any(|d| matches!(d, DecoderWrapper::ByteFallback(_) | DecoderWrapper::Metaspace(_))),
        _ => false,
    }
}

/// Whether the decoder drops one leading space (Llama-2's `Strip` with start 1, or a `Metaspace`
/// decoder that prepends a space when encoding).
fn strips_leading_space(json: &Value) -> bool {
    let dec = &json["decoder"];
    let one = |d: &Value| match d["type"].as_str() {
        Some("Strip") => d["start"].as_u64().unwrap_or(0) > 0,
        Some("Metaspace") => {
            d["prepend_scheme"].as_str().is_some_and(|s| s != "never") || d["add_prefix_space"].as_bool() == Some(true)
        }
        _ => false,
    };
    match dec["type"].as_str() {
        Some("Sequence") => dec["decoders"].as_array().is_some_and(|l| l.iter().any(one)),
        _ => one(dec),
    }
}

/// A tokenizer from a sentencepiece `tokenizer.model` alone (BPE models only).
fn from_sentencepiece_model(path: &Path) -> Result<(tokenizers::Tokenizer, bool), TokenizerError> {
    let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let m = spm::parse_model_proto(&bytes).map_err(|e| bad(path, e))?;
    if m.model_type != 2 {
        return Err(TokenizerError::Unsupported(format!(
            "{}: sentencepiece model type {} (only BPE, type 2, is supported)",
            path.display(),
            m.model_type
        )));
    }
    if m.pieces.is_empty() {
        return Err(bad(path, "no pieces"));
    }
    let pieces: Vec<spm::Piece<'_>> = m
        .pieces
        .iter()
        .map(|(text, score, ty)| spm::Piece {
            text,
            score: *score,
            ty: *ty,
        })
        .collect();
    Ok((spm::build(&pieces, m.add_dummy_prefix)?, m.add_dummy_prefix))
}

/// Reads a JSON file that may be absent; a file that exists but is not JSON is an error.
fn read_optional_json(path: &Path) -> Result<Option<Value>, TokenizerError> {
    let Some(text) = read_optional_text(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| bad(path, e))
}

fn read_optional_text(path: &Path) -> Result<Option<String>, TokenizerError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenizerError::Io {
            path: PathBuf::from(path),
            source,
        }),
    }
}

/// A special token as written in tokenizer_config.json: a string, or (older files) an object
/// with a `content` field.
fn token_string(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

/// The chat template: a string, or a list of `{name, template}` of which we take "default"
/// (else the first).
fn chat_template_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => {
            let named = |name: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
            };
            named("default")
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string)
        }
        _ => None,
    }
}
