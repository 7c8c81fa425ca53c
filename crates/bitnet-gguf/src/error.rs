//! The crate's single error type.
//!
//! Every message is meant to be shown to a user as is: it names the file (the name given to
//! [`GgufFile::open`](crate::GgufFile::open) or
//! [`GgufFile::from_bytes`](crate::GgufFile::from_bytes)), the metadata key or tensor concerned, and the limit that was broken, so that a bad or
//! unsupported model file can be diagnosed without a hex editor.

/// Errors from reading, querying or writing GGUF files.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// An I/O error while opening, mapping or writing a file (`file` is the path, or
    /// `<stream>` when writing to an arbitrary [`std::io::Write`]).
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error("{file}: not a GGUF file: magic bytes are {hex} ({text:?}), expected 47 47 55 46 (\"GGUF\"){hint}", hex = hex(found), text = String::from_utf8_lossy(found), hint = magic_hint(found))]
    BadMagic { file: String, found: [u8; 4] },

    /// A GGUF version other than 2 or 3.
    #[error("{file}: unsupported GGUF version {version}{hint} (this reader supports versions 2 and 3)", hint = version_hint(*version))]
    UnsupportedVersion { file: String, version: u32 },

    /// The version field reads as a byte-swapped 1, 2 or 3: the file was written big-endian.
    #[error("{file}: big-endian GGUF file (version field reads {raw:#010x}, i.e. version {version} byte-swapped); only little-endian GGUF files are supported")]
    BigEndian { file: String, version: u32, raw: u32 },

    /// The file ends before a field that the header says is there.
    #[error(
        "{file}: truncated file: {what} needs {needed} bytes at offset {offset}, but only {available} bytes remain"
    )]
    Truncated {
        file: String,
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },

    /// The header is structurally readable but violates a rule or limit; `what` says which.
    #[error("{file}: invalid GGUF: {what}")]
    Invalid { file: String, what: String },

    /// A tensor uses a ggml type id this crate does not know.
    #[error("{file}: tensor '{tensor}' has unknown ggml type id {type_id}")]
    UnknownType { file: String, tensor: String, type_id: u32 },

    /// A typed getter was asked for a key the file does not have.
    #[error("{file}: metadata key '{key}' not found")]
    MissingKey { file: String, key: String },

    /// A typed getter found the key, but with a value of another type.
    #[error("{file}: metadata key '{key}' has type {found}, expected {expected}")]
    WrongType {
        file: String,
        key: String,
        expected: &'static str,
        found: String,
    },

    /// A typed getter found an integer of an acceptable type whose value does not fit the
    /// requested type (e.g. a negative value for `get_u64`, or 2^32 for `get_u32`).
    #[error("{file}: metadata key '{key}' has value {value}, which does not fit in {target}")]
    OutOfRange {
        file: String,
        key: String,
        value: String,
        target: &'static str,
    },

    /// A tensor looked up by name does not exist.
    #[error("{file}: tensor '{name}' not found")]
    MissingTensor { file: String, name: String },

    /// [`GgufWriter`](crate::GgufWriter) was given something it cannot write as a valid file
    /// (duplicate key, mixed-type array, data length that does not match the shape, ...).
    #[error("GGUF writer: {what}")]
    InvalidInput { what: String },
}

fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(" ")
}

fn magic_hint(found: &[u8; 4]) -> &'static str {
    match found {
        b"FUGG" => " (byte-reversed magic: not a GGUF file written by ggml or gguf-py)",
        b"lmgg" | b"fmgg" | b"tjgg" | b"ggml" | b"ggmf" | b"ggjt" => {
            " (a legacy GGML/GGMF/GGJT model: convert it to GGUF first)"
        }
        _ => "",
    }
}

fn version_hint(version: u32) -> &'static str {
    match version {
        1 => " (GGUF v1 used 32-bit counts and lengths and is obsolete: re-convert the model)",
        0 => " (version 0 does not exist)",
        _ => " (newer than this reader)",
    }
}
