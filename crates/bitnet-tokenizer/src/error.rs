//! The one error type of this crate.
//!
//! Messages name the file, metadata key or id at fault, because the usual cause of a failure is a
//! malformed model file and the user needs to know which part of it to look at.

use std::path::PathBuf;

/// Everything that can go wrong while loading a tokenizer or encoding/decoding with it.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file of a Hugging Face model folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A file of a Hugging Face model folder is not valid JSON or not what we expect in it.
    #[error("invalid {path}: {message}")]
    InvalidFile {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The GGUF tokenizer metadata is inconsistent (the message names the key at fault).
    #[error("invalid GGUF tokenizer metadata: {0}")]
    InvalidVocab(String),

    /// The vocabulary uses a tokenizer kind this crate does not implement.
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),

    /// A token id that is not part of the vocabulary was given to decode.
    #[error("token id {id} is out of range (vocabulary size {vocab_size})")]
    InvalidTokenId {
        /// The offending id.
        id: u32,
        /// The vocabulary size (valid ids are `0..vocab_size`, minus any holes).
        vocab_size: usize,
    },

    /// Encoding failed (e.g. BOS requested but the vocabulary has none).
    #[error("cannot encode: {0}")]
    Encode(String),
}
