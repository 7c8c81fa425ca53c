//! Streaming detokenization for generation.
//!
//! A byte-level BPE token is a run of bytes, not of characters: a multi-byte UTF-8 character (an
//! emoji, a CJK ideograph) is often split over two or three tokens. Decoding each token on its own
//! would print U+FFFD for each half, so [`StreamDecoder`] keeps the bytes of an incomplete
//! character until the tokens that complete it arrive, and only ever hands out whole characters.
//! The concatenation of everything it yields (pushes + the final flush) equals
//! [`crate::Tokenizer::decode`] of the same ids.

use std::sync::Arc;

use crate::token_table::TokenTable;
use crate::TokenizerError;

/// Incremental UTF-8 decoder with the same output as [`String::from_utf8_lossy`] on the whole
/// input: each maximal invalid sequence becomes one U+FFFD, an incomplete sequence at the end of
/// the input so far is held back until more bytes arrive (or [`Utf8Stream::finish`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Utf8Stream {
    /// Bytes of a character that is not complete yet (at most 3).
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Feeds `bytes`, appending every character they complete to `out`.
    pub(crate) fn feed(&mut self, bytes: &[u8], out: &mut String) {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut rest: &[u8] = &buf;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    return;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8, so this borrows without replacing anything.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        None => {
                            // A prefix of a valid character: wait for the rest of it.
                            self.pending = after.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Ends the input: an incomplete character left over becomes U+FFFD.
    pub(crate) fn finish(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            out.push_str(&String::from_utf8_lossy(&self.pending));
            self.pending.clear();
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Turns generated token ids into text as they arrive, never splitting a UTF-8 character.
///
/// Get one with [`crate::Tokenizer::stream_decoder`] (or [`StreamDecoder::new`]); it shares the
/// tokenizer's vocabulary, so it does not borrow the tokenizer. Special tokens are printed as their
/// text (like Hugging Face `decode(..., skip_special_tokens=False)`); a caller that does not want
/// to print a stop token should not push it.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    table: Arc<TokenTable>,
    utf8: Utf8Stream,
    bytes: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder for the ids of `tokenizer`.
    pub fn new(tokenizer: &crate::Tokenizer) -> Self {
        Self {
            table: tokenizer.table(),
            utf8: Utf8Stream::default(),
            bytes: Vec::new(),
        }
    }

    /// Adds token `id`; returns the text it completes, or `None` if it completes nothing yet.
    ///
    /// An id outside the vocabulary cannot be reported through this signature: it ends any
    /// pending partial character (as U+FFFD) and yields U+FFFD. Use [`StreamDecoder::try_push`]
    /// to get an error instead.
    pub fn push(&mut self, id: u32) -> Option<String> {
        match self.try_push(id) {
            Ok(text) => text,
            Err(_) => {
                let mut out = String::new();
                self.utf8.finish(&mut out);
                out.push(char::REPLACEMENT_CHARACTER);
                Some(out)
            }
        }
    }

    /// Like [`StreamDecoder::push`], but an id outside the vocabulary is an error (and changes
    /// nothing).
    pub fn try_push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.bytes.clear();
        self.table.append_bytes(id, &mut self.bytes)?;
        let mut out = String::new();
        self.utf8.feed(&self.bytes, &mut out);
        Ok((!out.is_empty()).then_some(out))
    }

    /// Ends the stream: returns what is still held back (an incomplete character, as U+FFFD),
    /// usually the empty string. The decoder can be reused afterwards.
    pub fn flush(&mut self) -> String {
        let mut out = String::new();
        self.utf8.finish(&mut out);
        out
    }

    /// True while bytes of an incomplete character are held back.
    pub fn has_pending(&self) -> bool {
        self.utf8.has_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream_in_pieces(bytes: &[u8], cuts: &[usize]) -> (String, Vec<String>) {
        let mut s = Utf8Stream::default();
        let mut chunks = Vec::new();
        let mut prev = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(bytes.len());
        for c in cuts {
            let mut out = String::new();
            s.feed(&bytes[prev..c], &mut out);
            chunks.push(out);
            prev = c;
        }
        let mut out = String::new();
        s.finish(&mut out);
        chunks.push(out);
        (chunks.concat(), chunks)
    }

    #[test]
    fn emoji_split_over_bytes() {
        let bytes = "a🚀b".as_bytes();
        let (all, chunks) = stream_in_pieces(bytes, &[2, 3, 4]);
        assert_eq!(all, "a🚀b");
        assert!(chunks.iter().all(|c| !c.contains('\u{FFFD}')));
    }

    #[test]
    fn invalid_and_truncated_bytes() {
        let bytes = [b'x', 0xFF, 0xE6, 0x97, b'y', 0xE6, 0x97];
        let (all, _) = stream_in_pieces(&bytes, &[1, 3]);
        assert_eq!(all, String::from_utf8_lossy(&bytes));
    }

    proptest! {
        #[test]
        fn matches_lossy_decoding(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                  cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let (all, _) = stream_in_pieces(&bytes, &cuts);
            prop_assert_eq!(all, String::from_utf8_lossy(&bytes).into_owned());
        }

        #[test]
        fn valid_text_never_yields_replacement(text in "\\PC{0,20}",
                                               cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let (all, chunks) = stream_in_pieces(text.as_bytes(), &cuts);
            prop_assert_eq!(&all, &text);
            let clean = |c: &String| !c.contains(char::REPLACEMENT_CHARACTER);
            prop_assert!(chunks.iter().all(clean) || !clean(&text));
        }
    }
}
