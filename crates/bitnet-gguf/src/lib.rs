//! GGUF reading and writing for bitnet-rs, and nothing else.
//!
//! GGUF is the single-file model format of ggml, llama.cpp and bitnet.cpp: a header of typed
//! metadata (hyper-parameters, tokenizer) and tensor entries, followed by the tensor data.
//!
//! * [`GgufFile`] opens a GGUF v2 or v3 file by memory-mapping it and parsing only the
//!   header, so opening costs the same for a 1 MB fixture and a 2 GB model. Every structural
//!   rule and every offset is checked at open (see [`limits`]); afterwards tensor data is
//!   handed out as slices without further checks. No input, however corrupt, makes the reader
//!   panic, loop, or allocate memory out of proportion to the file.
//! * [`GgufWriter`] writes GGUF v3 files that the reader (and llama.cpp / bitnet.cpp) accept.
//!
//! Tensor types are limited to those BitNet b1.58 files use ([`GgmlType`]), including
//! bitnet.cpp's `I2_S` (type id 36), whose data size is `n / 4 + 32` bytes.
//!
//! ```no_run
//! use std::path::Path;
//! use bitnet_gguf::GgufFile;
//!
//! let gguf = GgufFile::open(Path::new("model.gguf"))?;
//! let arch = gguf.get_str("general.architecture")?;
//! let hidden = gguf.get_u64(&format!("{arch}.embedding_length"))?;
//! for t in gguf.tensors() {
//!     println!("{} {:?} {} {} bytes", t.name, t.dims, t.ggml_type, gguf.tensor_data(t).len());
//! }
//! # let _ = hidden;
//! # Ok::<(), bitnet_gguf::GgufError>(())
//! ```
// Parsers and the server face input from outside: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod getters;
pub mod limits;
mod parse;
mod reader;
mod tensor;
mod types;
mod value;
mod writer;

pub use error::GgufError;
pub use reader::{GgufFile, SharedBytes};
pub use tensor::TensorInfo;
pub use types::GgmlType;
pub use value::MetadataValue;
pub use writer::GgufWriter;
