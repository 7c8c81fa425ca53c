//! SentencePiece BPE vocabularies (Llama-2, 1bitLLM, Mistral): GGUF `tokenizer.ggml.model = "llama"`
//! and `tokenizer.model` files.
//!
//! SentencePiece's BPE merges the adjacent pair whose concatenation has the highest score, where
//! llama.cpp and sentencepiece itself read scores rather than a merge list. The `tokenizers` crate
//! (which does our encoding) wants a merge list, so we derive one the way transformers'
//! `SentencePieceExtractor` does: every split `(l, r)` of a piece whose halves are both pieces is a
//! merge, ranked by the piece's score (highest first). Text is normalized as Llama-2's legacy
//! `tokenizer.json` does (prepend `▁` to each text segment, spaces to `▁`), characters without a
//! piece fall back to `<0xXX>` byte tokens, and control / user-defined tokens are matched in the
//! text first. On the fixtures this equals transformers and llama.cpp on every tokenizer case.

use std::collections::HashMap;

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence};
use tokenizers::{AddedToken, NormalizerWrapper};

use crate::TokenizerError;

/// GGUF / sentencepiece piece types.
pub(crate) const TYPE_NORMAL: i32 = 1;
pub(crate) const TYPE_UNKNOWN: i32 = 2;
pub(crate) const TYPE_CONTROL: i32 = 3;
pub(crate) const TYPE_USER_DEFINED: i32 = 4;

/// The SentencePiece word-boundary mark.
pub(crate) const SPACE_MARK: char = '\u{2581}';

/// One vocabulary entry.
pub(crate) struct Piece<'a> {
    pub text: &'a str,
    pub score: f32,
    pub ty: i32,
}

/// Builds the encoder. `add_space_prefix`: prepend `▁` to each text segment (sentencepiece's
/// `add_dummy_prefix`, GGUF `tokenizer.ggml.add_space_prefix`, true for Llama).
pub(crate) fn build(pieces: &[Piece<'_>], add_space_prefix: bool) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(pieces.len());
    for (id, p) in pieces.iter().enumerate() {
        ids.entry(p.text).or_insert(id as u32);
    }
    // Merges from the mergeable pieces (normal and user-defined; control, byte and unknown tokens are
    // never the result of a merge).
    let mut merges: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, p) in pieces.iter().enumerate() {
        if p.ty != TYPE_NORMAL && p.ty != TYPE_USER_DEFINED {
            continue;
        }
        for (at, _) in p.text.char_indices().skip(1) {
            let (l, r) = p.text.split_at(at);
            if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                let mergeable = |i: u32| matches!(pieces[i as usize].ty, TYPE_NORMAL | TYPE_USER_DEFINED);
                if mergeable(li) && mergeable(ri) {
                    merges.push((p.score, id as u32, li, ri));
                }
            }
        }
    }
    if merges.iter().any(|m| !m.0.is_finite()) {
        return Err(TokenizerError::InvalidVocab(
            "tokenizer.ggml.scores holds a non-finite score".to_string(),
        ));
    }
    // Highest score first; ties by the merged piece's id, then by the halves' ids (transformers' order).
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    let merges: Vec<(String, String)> = merges
        .into_iter()
        .map(|(_, _, l, r)| (pieces[l as usize].text.to_string(), pieces[r as usize].text.to_string()))
        .collect();
    let unk = pieces.iter().find(|p| p.ty == TYPE_UNKNOWN).map(|p| p.text.to_string());
    let vocab: Vocab = ids.iter().map(|(p, id)| (p.to_string(), *id)).collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| TokenizerError::InvalidVocab(format!("cannot build the SentencePiece model: {e}")))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let space = Replace::new(" ", SPACE_MARK.to_string())
        .map_err(|e| TokenizerError::InvalidVocab(format!("normalizer: {e}")))?;
    let normalizer: NormalizerWrapper = if add_space_prefix {
        Sequence::new(vec![Prepend::new(SPACE_MARK.to_string()).into(), space.into()]).into()
    } else {
        space.into()
    };
    inner.with_normalizer(Some(normalizer));
    let mut special = Vec::new();
    let mut user = Vec::new();
    for p in pieces {
        if p.text.is_empty() {
            continue;
        }
        match p.ty {
            TYPE_CONTROL | TYPE_UNKNOWN => special.push(AddedToken::from(p.text, true).normalized(false)),
            TYPE_USER_DEFINED => user.push(AddedToken::from(p.text, false).normalized(false)),
            _ => {}
        }
    }
    inner.add_special_tokens(&special);
    inner.add_tokens(&user);
    Ok(inner)
}

/// The byte a `<0xXX>` piece stands for.
pub(crate) fn byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Appends the text of one SentencePiece piece: `<0xXX>` is that byte, `▁` a space.
pub(crate) fn piece_bytes(piece: &str, out: &mut Vec<u8>) {
    if let Some(b) = byte_piece(piece) {
        out.push(b);
        return;
    }
    for c in piece.chars() {
        let c = if c == SPACE_MARK { ' ' } else { c };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// The pieces of a sentencepiece `tokenizer.model` (a `ModelProto` protobuf), and whether it adds
/// a dummy prefix. Only what the BPE encoder needs is read; every length is checked.
pub(crate) struct SpModel {
    pub pieces: Vec<(String, f32, i32)>,
    pub add_dummy_prefix: bool,
    /// `trainer_spec.model_type`: 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: u64,
}

/// Parses a sentencepiece model file.
pub(crate) fn parse_model_proto(buf: &[u8]) -> Result<SpModel, String> {
    let mut out = SpModel {
        pieces: Vec::new(),
        add_dummy_prefix: true,
        model_type: 1,
    };
    let mut r = Proto::new(buf);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, 2) => {
                let mut p = Proto::new(r.bytes()?);
                let (mut text, mut score, mut ty) = (String::new(), 0f32, TYPE_NORMAL);
                while let Some((f, w)) = p.key()? {
                    match (f, w) {
                        (1, 2) => {
                            text = std::str::from_utf8(p.bytes()?)
                                .map_err(|_| format!("piece {} is not UTF-8", out.pieces.len()))?
                                .to_string()
                        }
                        (2, 5) => score = f32::from_le_bytes(p.fixed32()?),
                        (3, 0) => ty = p.varint()? as i32,
                        _ => p.skip(w)?,
                    }
                }
                out.pieces.push((text, score, ty));
            }
            (2, 2) => {
                let mut t = Proto::new(r.bytes()?);
                while let Some((f, w)) = t.key()? {
                    match (f, w) {
                        (3, 0) => out.model_type = t.varint()?,
                        _ => t.skip(w)?,
                    }
                }
            }
            (3, 2) => {
                let mut n = Proto::new(r.bytes()?);
                while let Some((f, w)) = n.key()? {
                    match (f, w) {
                        (3, 0) => out.add_dummy_prefix = n.varint()? != 0,
                        _ => n.skip(w)?,
                    }
                }
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

/// A minimal protobuf wire-format reader.
struct Proto<'a> {
    buf: &'a [u8],
}

impl<'a> Proto<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Proto { buf }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".to_string())
    }

    fn key(&mut self) -> Result<Option<(u64, u8)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        Ok(Some((k >> 3, (k & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!("field of {n} bytes runs past the end"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "length out of range".to_string())?)
    }

    fn fixed32(&mut self) -> Result<[u8; 4], String> {
        let b = self.take(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_pieces() {
        assert_eq!(byte_piece("<0x0A>"), Some(10));
        assert_eq!(byte_piece("<0xFF>"), Some(255));
        assert_eq!(byte_piece("<0x1>"), None);
        assert_eq!(byte_piece("<s>"), None);
        let mut out = Vec::new();
        piece_bytes("\u{2581}Hello", &mut out);
        piece_bytes("<0xE6>", &mut out);
        assert_eq!(out, b" Hello\xE6");
    }

    #[test]
    fn truncated_protobuf_is_an_error() {
        // field 1, length 10, but only 2 bytes follow.
        assert!(parse_model_proto(&[0x0A, 10, 1, 2]).is_err());
        assert!(parse_model_proto(&[0xFF; 11]).is_err());
        assert!(parse_model_proto(&[]).is_ok_and(|m| m.pieces.is_empty()));
    }

    #[test]
    fn scores_order_the_merges() {
        let pieces = [
            Piece {
                text: "<unk>",
                score: 0.0,
                ty: TYPE_UNKNOWN,
            },
            Piece {
                text: "a",
                score: -1.0,
                ty: TYPE_NORMAL,
            },
            Piece {
                text: "b",
                score: -2.0,
                ty: TYPE_NORMAL,
            },
            Piece {
                text: "ab",
                score: -5.0,
                ty: TYPE_NORMAL,
            },
            Piece {
                text: "bb",
                score: -3.0,
                ty: TYPE_NORMAL,
            },
            Piece {
                text: "\u{2581}",
                score: -4.0,
                ty: TYPE_NORMAL,
            },
        ];
        let t = build(&pieces, false).expect("build");
        // "abb": bb (score -3) merges before ab (-5).
        let ids = t.encode_fast("abb", false).expect("encode").get_ids().to_vec();
        assert_eq!(ids, [1, 4]);
    }
}
