//! BitNet b1.58 models: the architecture table, configuration, loading from GGUF and Hugging Face
//! folders, the GGUF metadata writer, the forward pass and the KV cache.
//!
//! ```no_run
//! use bitnet_model::{load, LoadOptions, InferenceState, LogitsWanted};
//! let (model, tok) = load(std::path::Path::new("ggml-model-i2_s.gguf"), &LoadOptions::default())?;
//! let ids = tok.encode("Hello", true)?;
//! let mut state = InferenceState::new(&model, 4096);
//! let logits = model.forward(&ids, &mut state, LogitsWanted::Last)?;
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod arch;
pub mod bitnet;
pub mod config;
pub mod embed;
pub mod gguf_meta;
pub mod inspect;
pub mod kv_cache;
pub mod layer_builder;
pub mod load_gguf;
pub mod load_hf;
pub mod ops;
pub mod ternarize;

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
pub use bitnet::{BitNetModel, InferenceState, Layer, Linear, LogitsWanted, Norm, QuantScratch, Workspace};
use bitnet_tokenizer::Tokenizer;
pub use config::{FfnActivation, ModelConfig};
pub use kv_cache::{KvCache, KvData, KvLayer, KvType};

/// Options that change how a model is read.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Overrides the FFN activation the file implies (`--ffn-act`).
    pub ffn_act: Option<FfnActivation>,
}

/// What kind of model a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    Gguf,
    HfFolder,
}

/// Tells a GGUF file from a Hugging Face folder (a folder, or a file inside one).
pub fn detect(path: &Path) -> Result<(ModelKind, std::path::PathBuf)> {
    if path.is_dir() {
        return Ok((ModelKind::HfFolder, path.to_path_buf()));
    }
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening model {}", path.display()))?;
    let n = f
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    if n == 4 && &magic == b"GGUF" {
        return Ok((ModelKind::Gguf, path.to_path_buf()));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "config.json" || name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json") {
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            return Ok((ModelKind::HfFolder, dir.to_path_buf()));
        }
    }
    bail!(
        "{}: not a GGUF file (magic {:?}) nor a Hugging Face model folder",
        path.display(),
        &magic[..n]
    );
}

/// Loads a model and its tokenizer from a `.gguf` file or a Hugging Face folder.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<(BitNetModel, Tokenizer)> {
    match detect(path)? {
        (ModelKind::Gguf, p) => load_gguf::load(&p, opts.ffn_act),
        (ModelKind::HfFolder, p) => load_hf::load(&p, opts.ffn_act),
    }
}

/// A tokenizer whose ids run past the embedding table would make the forward pass index out of it:
/// refused when the model loads, naming both sizes.
pub fn check_vocab(model: &BitNetModel, tok: &Tokenizer) -> Result<()> {
    let (t, m) = (tok.vocab_size(), model.cfg.vocab_size);
    if t > m || model.embed.rows() < m || model.head.rows() < m {
        bail!(
            "the tokenizer has {t} token ids but the model's embedding table has {} rows and its head {} \
             (vocabulary size {m}): they do not belong together",
            model.embed.rows(),
            model.head.rows()
        );
    }
    Ok(())
}

/// Loads only the tokenizer of a model (no weights are read).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    match detect(path)? {
        (ModelKind::Gguf, p) => {
            let g = bitnet_gguf::GgufFile::open(&p)?;
            load_gguf::tokenizer_from_gguf(&g).with_context(|| format!("tokenizer of {}", p.display()))
        }
        (ModelKind::HfFolder, p) => Tokenizer::from_hf_dir(&p).with_context(|| format!("tokenizer of {}", p.display())),
    }
}
