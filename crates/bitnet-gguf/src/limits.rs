//! Limits the reader enforces (and the writer respects) so that no input file, however
//! corrupt or hostile, can make the reader allocate memory out of proportion to the file,
//! recurse without bound, or overflow an offset computation.
//!
//! Each limit is far above anything a real model needs; the comments say by how much.

/// Tensor data section alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_TENSOR_DIMS: u32 = 4;

/// Most values one tensor may hold: 2^48 (a 256 TiB f8 tensor); real tensors stay below 2^34.
/// Keeps every byte-size computation far from `u64` overflow.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 48;

/// Most tensors in one file (real models: at most tens of thousands).
pub const MAX_TENSORS: u64 = 1 << 20;

/// Most metadata values in one file, counting every array element (real files: around a
/// million for a 256k-token vocabulary). A parsed value takes 32 bytes in memory, so this also
/// caps the metadata's memory at about 512 MiB even for a file made only of 1-byte values.
///
/// Memory is only ever allocated for values actually present in the file: the worst case,
/// an array of 1-byte values, costs about 48 bytes of heap per byte of file while it grows.
pub const MAX_METADATA_VALUES: u64 = 1 << 24;

/// Deepest array nesting: an array directly under a key is level 1, an array of arrays
/// level 2, and so on. GGUF files in the wild use 1 (sometimes 2).
pub const MAX_ARRAY_DEPTH: u32 = 8;

/// Longest metadata key in bytes (the GGUF specification's limit, 2^16 - 1).
pub const MAX_KEY_LEN: u64 = 65535;

/// Smallest possible encoded size of a metadata entry: key length (8) + type (4) + 1-byte value.
pub(crate) const MIN_KV_BYTES: u64 = 8 + 4 + 1;

/// Smallest possible encoded size of a tensor entry: name length (8) + n_dims (4) + one
/// dimension (8) + type (4) + offset (8).
pub(crate) const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;
