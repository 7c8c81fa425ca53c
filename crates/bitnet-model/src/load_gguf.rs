//! Building a [`BitNetModel`] from a GGUF file (bitnet.cpp's I2_S files, llama.cpp's TQ1_0/TQ2_0/F16
//! `bitnet` files). Ternary tensors are used in place from the memory map.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bitnet_gguf::{GgmlType, GgufFile, TensorInfo};
use bitnet_kernels::{Bytes, FloatFormat, FloatMatrix, TernaryMatrix};
use bitnet_tokenizer::Tokenizer;

use crate::arch::{gguf_layer, LayerTensor, ModelTensor};
use crate::bitnet::{BitNetModel, Linear};
use crate::config::{FfnActivation, ModelConfig};
use crate::gguf_meta::TokenizerMeta;
use crate::layer_builder::{build_layer, LayerSource};
use crate::ops::Rope;
use crate::ternarize::{ternary_from_float, FloatToTernary};

/// Opens and validates a GGUF model. The file is memory-mapped, not read.
pub fn load(path: &Path, ffn_override: Option<FfnActivation>) -> Result<(BitNetModel, Tokenizer)> {
    let gguf = GgufFile::open(path)?;
    from_gguf(&gguf, ffn_override).with_context(|| format!("loading {}", path.display()))
}

/// Builds the model and tokenizer of an opened GGUF file (mapped or in memory).
pub fn from_gguf(gguf: &GgufFile, ffn_override: Option<FfnActivation>) -> Result<(BitNetModel, Tokenizer)> {
    let cfg = ModelConfig::from_gguf(gguf, ffn_override)?;
    let tokenizer = tokenizer_from_gguf(gguf).context("reading the tokenizer")?;
    let model = build(gguf, cfg)?;
    crate::check_vocab(&model, &tokenizer)?;
    Ok((model, tokenizer))
}

/// The tokenizer described by the `tokenizer.*` keys (read once, by [`TokenizerMeta::read_gguf`],
/// which `bitnet convert` also uses).
pub fn tokenizer_from_gguf(g: &GgufFile) -> Result<Tokenizer> {
    Ok(Tokenizer::from_gguf_vocab(TokenizerMeta::read_gguf(g)?.into_vocab())?)
}

/// Maps a GGUF float/quantized type to the kernels' float formats.
pub fn float_format(t: GgmlType) -> Option<FloatFormat> {
    Some(match t {
        GgmlType::F32 => FloatFormat::F32,
        GgmlType::F16 => FloatFormat::F16,
        GgmlType::BF16 => FloatFormat::BF16,
        GgmlType::Q8_0 => FloatFormat::Q8_0,
        GgmlType::Q6_K => FloatFormat::Q6_K,
        GgmlType::Q4_K => FloatFormat::Q4_K,
        _ => return None,
    })
}

impl LayerSource for Tensors<'_> {
    fn norm(&self, i: usize, t: LayerTensor, len: usize) -> Result<Vec<f32>> {
        self.vector(&gguf_layer(i, t), len)
    }

    fn linear(&self, i: usize, t: LayerTensor, rows: usize, cols: usize) -> Result<Linear> {
        Tensors::linear(self, &gguf_layer(i, t), rows, cols)
    }
}

struct Tensors<'a> {
    g: &'a GgufFile,
    src: Arc<dyn AsRef<[u8]> + Send + Sync>,
}

impl Tensors<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.g
            .tensor(name)
            .with_context(|| format!("required tensor '{name}' is missing"))
    }

    fn bytes(&self, t: &TensorInfo) -> Bytes {
        let r = self.g.tensor_range(t);
        Bytes::from_shared(self.src.clone(), r.start, r.end - r.start)
    }

    /// Checks that a 2-D tensor is `[cols, rows]` in ggml order (rows = output features).
    fn check_2d(&self, t: &TensorInfo, rows: usize, cols: usize) -> Result<()> {
        let want = [cols as u64, rows as u64];
        if t.dims.as_slice() != want {
            bail!(
                "tensor '{}' has shape {:?}, expected {:?} (ggml order: [in, out])",
                t.name,
                t.dims,
                want
            );
        }
        Ok(())
    }

    fn float_matrix(&self, name: &str, rows: usize, cols: usize) -> Result<FloatMatrix> {
        let t = self.info(name)?;
        self.check_2d(t, rows, cols)?;
        let f = float_format(t.ggml_type)
            .with_context(|| format!("tensor '{name}' has type {}, expected a float type", t.ggml_type.name()))?;
        FloatMatrix::new(f, rows, cols, self.bytes(t)).with_context(|| format!("tensor '{name}'"))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        if t.dims.as_slice() != [len as u64] {
            bail!("tensor '{name}' has shape {:?}, expected [{len}]", t.dims);
        }
        let f = float_format(t.ggml_type)
            .with_context(|| format!("tensor '{name}' has type {}, expected a float type", t.ggml_type.name()))?;
        let m = FloatMatrix::new(f, 1, len, self.bytes(t)).with_context(|| format!("tensor '{name}'"))?;
        let mut v = vec![0.0; len];
        m.dequantize_row(0, &mut v);
        Ok(v)
    }

    fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        let t = self.info(name)?;
        self.check_2d(t, rows, cols)?;
        let data = self.bytes(t);
        let w = match t.ggml_type {
            GgmlType::I2_S => TernaryMatrix::from_i2s(rows, cols, data),
            GgmlType::TQ2_0 => TernaryMatrix::from_tq2_0(rows, cols, data),
            GgmlType::TQ1_0 => TernaryMatrix::from_tq1_0(rows, cols, data),
            other => {
                let f = float_format(other)
                    .with_context(|| format!("tensor '{name}' has unsupported type {}", other.name()))?;
                let m = FloatMatrix::new(f, rows, cols, data).with_context(|| format!("tensor '{name}'"))?;
                Ok(ternary_from_float(&m, FloatToTernary::ExactOrAbsmean, name)?)
            }
        }
        .with_context(|| format!("tensor '{name}'"))?;
        // llama.cpp's `bitnet` arch may carry a per-projection output scale `<name-without-.weight>.scale`.
        let scale_name = format!("{}.scale", name.trim_end_matches(".weight"));
        let out_scale = match self.g.tensor(&scale_name) {
            Some(_) => {
                let v = self.vector(&scale_name, 1)?;
                Some(v[0])
            }
            None => None,
        };
        let file_format = w.format();
        let lin = Linear::for_cpu(w);
        if lin.w.format() != file_format {
            // Repacked into memory of its own: the file's pages of this tensor are not read again.
            self.g.release(self.g.tensor_range(t));
        }
        Ok(Linear { out_scale, ..lin })
    }
}

fn build(g: &GgufFile, cfg: ModelConfig) -> Result<BitNetModel> {
    let ts = Tensors { g, src: g.source() };
    let (h, vocab) = (cfg.hidden_size, cfg.vocab_size);
    let embed = ts.float_matrix(ModelTensor::Embedding.gguf(), vocab, h)?;
    let head = if g.tensor(ModelTensor::Head.gguf()).is_some() {
        ts.float_matrix(ModelTensor::Head.gguf(), vocab, h)?
    } else {
        embed.clone()
    };
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        layers.push(build_layer(&cfg, i, &ts)?);
    }
    let final_norm = ts.vector(ModelTensor::FinalNorm.gguf(), h)?;
    let rope = Rope::new(cfg.rope_dim, cfg.rope_theta);
    let tied_head = std::ptr::eq(head.data().as_ptr(), embed.data().as_ptr());
    Ok(BitNetModel {
        cfg,
        embed,
        layers,
        final_norm,
        head,
        tied_head,
        rope,
        kv_type: Default::default(),
    })
}
