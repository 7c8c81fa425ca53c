//! Id -> vocabulary piece table shared by [`crate::Tokenizer::decode`] and [`crate::StreamDecoder`].
//!
//! Decoding is done here rather than by the `tokenizers` crate so that one rule (the Hugging Face
//! `ByteLevel` decoder's) serves both whole-sequence and streaming decoding, whatever the source of
//! the vocabulary, and so that an invalid id is an error rather than silently skipped.

use crate::byte_level::piece_bytes;
use crate::TokenizerError;

/// How a vocabulary writes text in its pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceForm {
    /// GPT-2 byte-level characters (`Ġworld`).
    ByteLevel,
    /// SentencePiece: `▁` for a space, `<0xXX>` byte-fallback tokens.
    SentencePiece,
}

/// Every id's piece as stored in the vocabulary (byte-level form, e.g. `Ġworld`, or SentencePiece
/// form, `▁world`).
#[derive(Debug, Clone)]
pub(crate) struct TokenTable {
    /// Indexed by id; `None` for ids that have no token (holes in a Hugging Face vocabulary).
    pieces: Vec<Option<String>>,
    form: PieceForm,
}

impl TokenTable {
    pub(crate) fn new(pieces: Vec<Option<String>>) -> Self {
        Self {
            pieces,
            form: PieceForm::ByteLevel,
        }
    }

    pub(crate) fn with_form(pieces: Vec<Option<String>>, form: PieceForm) -> Self {
        Self { pieces, form }
    }

    /// Number of ids (highest id + 1).
    pub(crate) fn len(&self) -> usize {
        self.pieces.len()
    }

    /// The stored piece of `id`, if `id` is a token.
    pub(crate) fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize)?.as_deref()
    }

    /// Appends the raw bytes of token `id` to `out`.
    pub(crate) fn append_bytes(&self, id: u32, out: &mut Vec<u8>) -> Result<(), TokenizerError> {
        let piece = self.piece(id).ok_or(TokenizerError::InvalidTokenId {
            id,
            vocab_size: self.len(),
        })?;
        match self.form {
            PieceForm::ByteLevel => piece_bytes(piece, out),
            PieceForm::SentencePiece => crate::spm::piece_bytes(piece, out),
        }
        Ok(())
    }
}
