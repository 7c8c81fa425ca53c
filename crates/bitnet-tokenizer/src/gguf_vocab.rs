//! Building a tokenizer from the `tokenizer.ggml.*` metadata of a GGUF file.
//!
//! Everything here comes from a file we do not control, so every index, id and merge is checked
//! before it is used and problems are reported as errors naming the metadata key.

use std::collections::HashMap;

use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::AddedToken;

use crate::byte_level::byte_to_char;
use crate::pre_tokenizer;
use crate::spm;
use crate::token_table::{PieceForm, TokenTable};
use crate::{shorten, Tokenizer, TokenizerError};

/// The tokenizer metadata of a GGUF file (`tokenizer.ggml.*` and `tokenizer.chat_template`), as
/// read by the model crate. Nothing in it is trusted: [`Tokenizer::from_gguf_vocab`] validates it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) or `"llama"` (SentencePiece BPE).
    pub model: String,
    /// `tokenizer.ggml.tokens`: token id = index.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte (0 undefined).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: `"a b"` strings, highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.scores` (used only by SentencePiece vocabularies; length-checked).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name (see [`Tokenizer::pre_tokenizer_name`]).
    pub pre: Option<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.chat_template`, carried through for [`Tokenizer::chat_template`].
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece: prepend `▁`; default true).
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.ggml.add_eos_token` (embedding models append EOS to every input).
    pub add_eos: Option<bool>,
}

/// GGUF token types (llama.cpp's `llama_token_type`).
const TYPE_MAX: i32 = 6;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// Builds the tokenizer; see [`Tokenizer::from_gguf_vocab`].
pub(crate) fn build(mut v: GgufVocab) -> Result<Tokenizer, TokenizerError> {
    let spm = match v.model.as_str() {
        "gpt2" => false,
        "llama" => true,
        other => {
            return Err(TokenizerError::Unsupported(format!(
                "tokenizer.ggml.model = {:?} (\"gpt2\", byte-level BPE, and \"llama\", SentencePiece, are supported)",
                shorten(other)
            )))
        }
    };

    let n = v.tokens.len();
    if n == 0 {
        return Err(invalid("tokenizer.ggml.tokens is empty"));
    }
    if u32::try_from(n).is_err() {
        return Err(invalid(format!(
            "tokenizer.ggml.tokens has {n} entries, more than token ids can address"
        )));
    }
    let types = token_types(&v)?;
    if let Some(scores) = &v.scores {
        if scores.len() != n {
            return Err(invalid(format!(
                "tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {n}",
                scores.len()
            )));
        }
    }
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", v.bos_id),
        ("tokenizer.ggml.eos_token_id", v.eos_id),
        ("tokenizer.ggml.eot_token_id", v.eot_id),
    ] {
        if let Some(id) = id {
            if id as usize >= n {
                return Err(invalid(format!("{key} = {id} is not a token id (vocabulary size {n})")));
            }
        }
    }

    let mut notes = Vec::new();
    if let Some(note) = repair_bos_prefixed_specials(&mut v.tokens, &types, v.bos_id) {
        notes.push(note);
    }
    if spm {
        return build_spm(v, types, notes);
    }

    // Piece -> id; when a piece occurs twice the lower id wins (the higher one can still be decoded).
    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(n);
    for (id, piece) in v.tokens.iter().enumerate() {
        ids.entry(piece.as_str()).or_insert(id as u32);
    }
    let merges = parse_merges(&v.merges, &ids)?;

    // Bytes with no token cannot be encoded; the BPE model would silently drop them.
    let missing_bytes: Vec<u8> = (0..=255u8)
        .filter(|&b| !ids.contains_key(byte_to_char(b).to_string().as_str()))
        .collect();

    let (kind, pre_name) = pre_tokenizer::choose(v.pre.as_deref());
    let vocab: Vocab = ids.iter().map(|(p, id)| (p.to_string(), *id)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(kind.ignore_merges())
        .build()
        .map_err(|e| invalid(format!("cannot build the BPE model: {e}")))?;

    let mut inner = tokenizers::Tokenizer::new(bpe);
    if kind == pre_tokenizer::PreKind::Qwen2 {
        inner.with_normalizer(Some(tokenizers::normalizers::unicode::NFC));
    }
    inner.with_pre_tokenizer(Some(kind.build()?));
    inner.with_decoder(Some(ByteLevel::new(true, true, true)));

    // Control and user-defined tokens are matched in the text before pre-tokenization, so that
    // e.g. "<|eot_id|>" encodes to its id (like Hugging Face's added tokens).
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (piece, ty) in v.tokens.iter().zip(&types) {
        if piece.is_empty() {
            continue;
        }
        match *ty {
            TYPE_CONTROL => special.push(AddedToken::from(piece.as_str(), true).normalized(false)),
            TYPE_USER_DEFINED => user.push(AddedToken::from(piece.as_str(), false).normalized(false)),
            _ => {}
        }
    }
    inner.add_special_tokens(&special);
    inner.add_tokens(&user);

    let eot_id = v.eot_id.or_else(|| ids.get("<|eot_id|>").copied());
    let mut stop_ids = Vec::new();
    for id in [v.eos_id, eot_id, ids.get("<|end_of_text|>").copied()]
        .into_iter()
        .flatten()
    {
        if !stop_ids.contains(&id) {
            stop_ids.push(id);
        }
    }
    // Without the key llama.cpp adds BOS, except for Qwen2-style vocabularies, which have no BOS of
    // their own (bitnet.cpp's embedding converter writes bos = eos = <|endoftext|> and no
    // add_bos_token; transformers prepends nothing).
    let add_bos = v.bos_id.is_some() && v.add_bos.unwrap_or(kind != pre_tokenizer::PreKind::Qwen2);

    Ok(Tokenizer {
        inner,
        table: std::sync::Arc::new(TokenTable::new(v.tokens.into_iter().map(Some).collect())),
        bos_id: v.bos_id,
        eos_id: v.eos_id,
        eot_id,
        add_bos,
        append: v.eos_id.filter(|_| v.add_eos.unwrap_or(false)),
        stop_ids,
        pre_name,
        chat_template: v.chat_template,
        missing_bytes,
        strip_leading_space: false,
        notes,
        plain: Default::default(),
    })
}

/// A SentencePiece (`llama`) vocabulary: scores give the merge order (see [`crate::spm`]).
fn build_spm(v: GgufVocab, types: Vec<i32>, notes: Vec<String>) -> Result<Tokenizer, TokenizerError> {
    let scores = v
        .scores
        .clone()
        .ok_or_else(|| invalid("tokenizer.ggml.scores is missing (a SentencePiece vocabulary needs it)"))?;
    let pieces: Vec<spm::Piece<'_>> = v
        .tokens
        .iter()
        .zip(&scores)
        .zip(&types)
        .map(|((text, &score), &ty)| spm::Piece { text, score, ty })
        .collect();
    let add_space_prefix = v.add_space_prefix.unwrap_or(true);
    let inner = spm::build(&pieces, add_space_prefix)?;
    // A character with neither a piece nor byte-fallback tokens becomes <unk>, as in sentencepiece:
    // nothing is missing.
    let missing_bytes = Vec::new();
    let eot_id = v.eot_id;
    let mut stop_ids = Vec::new();
    for id in [v.eos_id, eot_id].into_iter().flatten() {
        if !stop_ids.contains(&id) {
            stop_ids.push(id);
        }
    }
    let add_bos = v.bos_id.is_some() && v.add_bos.unwrap_or(true);
    Ok(Tokenizer {
        inner,
        table: std::sync::Arc::new(TokenTable::with_form(
            v.tokens.into_iter().map(Some).collect(),
            PieceForm::SentencePiece,
        )),
        bos_id: v.bos_id,
        eos_id: v.eos_id,
        eot_id,
        add_bos,
        append: v.eos_id.filter(|_| v.add_eos.unwrap_or(false)),
        stop_ids,
        pre_name: format!(
            "sentencepiece (tokenizer.ggml.model = llama{})",
            if add_space_prefix {
                ", space prefix"
            } else {
                ", no space prefix"
            }
        ),
        chat_template: v.chat_template,
        missing_bytes,
        strip_leading_space: add_space_prefix,
        notes,
        plain: Default::default(),
    })
}

/// Undoes bitnet.cpp's converter bug: it stored every added token as `decode(encode(token))` with
/// BOS added, so each special token's text starts with the BOS text (`<|startoftext|>>>TITLE<<`,
/// and BOS itself is `<|startoftext|><|startoftext|>`). Recognised when BOS's text is one string
/// twice and every control / user-defined token starts with that string; the prefix is removed.
/// Returns what was repaired, for `bitnet inspect`.
fn repair_bos_prefixed_specials(tokens: &mut [String], types: &[i32], bos: Option<u32>) -> Option<String> {
    let bos_text = tokens.get(bos? as usize)?;
    let half = bos_text.len() / 2;
    if half == 0 || bos_text.len() % 2 != 0 || !bos_text.is_char_boundary(half) || bos_text[..half] != bos_text[half..]
    {
        return None;
    }
    let prefix = bos_text[..half].to_string();
    let special: Vec<usize> = (0..tokens.len())
        .filter(|&i| matches!(types.get(i), Some(&TYPE_CONTROL) | Some(&TYPE_USER_DEFINED)))
        .collect();
    let all_prefixed = special
        .iter()
        .all(|&i| tokens[i].len() > prefix.len() && tokens[i].starts_with(&prefix));
    if special.len() < 2 || !all_prefixed {
        return None;
    }
    for &i in &special {
        tokens[i] = tokens[i][prefix.len()..].to_string();
    }
    Some(format!(
        "repaired {} special tokens whose text bitnet.cpp's converter prefixed with the BOS text {:?}",
        special.len(),
        shorten(&prefix)
    ))
}

fn invalid(msg: impl Into<String>) -> TokenizerError {
    TokenizerError::InvalidVocab(msg.into())
}

/// The token types, checked; when the file has none, tokens that look like `<|...|>` are taken
/// as control tokens (that is how Llama-3 style special tokens are written).
fn token_types(v: &GgufVocab) -> Result<Vec<i32>, TokenizerError> {
    let n = v.tokens.len();
    match &v.token_types {
        Some(types) => {
            if types.len() != n {
                return Err(invalid(format!(
                    "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {n}",
                    types.len()
                )));
            }
            if let Some((i, t)) = types.iter().enumerate().find(|(_, t)| !(0..=TYPE_MAX).contains(*t)) {
                return Err(invalid(format!(
                    "tokenizer.ggml.token_type[{i}] = {t} is not a known token type (0..={TYPE_MAX})"
                )));
            }
            Ok(types.clone())
        }
        None => Ok(v
            .tokens
            .iter()
            .map(|t| {
                if t.len() > 4 && t.starts_with("<|") && t.ends_with("|>") {
                    TYPE_CONTROL
                } else {
                    1
                }
            })
            .collect()),
    }
}

/// Parses `"a b"` merges, checking that `a`, `b` and `ab` are all tokens.
fn parse_merges(merges: &[String], ids: &HashMap<&str, u32>) -> Result<Vec<(String, String)>, TokenizerError> {
    let mut out = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        // The separator is the first space after the first character (llama.cpp's rule; byte-level
        // pieces never contain a raw space, but a leading one is tolerated).
        let sep = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(at, _)| at);
        let Some(sep) = sep else {
            return Err(invalid(format!(
                "tokenizer.ggml.merges[{i}] = {:?} is not of the form \"a b\"",
                shorten(m)
            )));
        };
        let (a, b) = (&m[..sep], &m[sep + 1..]);
        let joined = format!("{a}{b}");
        for part in [a, b, joined.as_str()] {
            if !ids.contains_key(part) {
                return Err(invalid(format!(
                    "tokenizer.ggml.merges[{i}] = {:?} needs token {:?}, which is not in tokenizer.ggml.tokens",
                    shorten(m),
                    shorten(part)
                )));
            }
        }
        out.push((a.to_string(), b.to_string()));
    }
    Ok(out)
}
