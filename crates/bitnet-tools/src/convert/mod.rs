//! `bitnet convert`: any model we read to a GGUF with ternary weights in I2_S, TQ2_0 or TQ1_0.
//!
//! The input is loaded with bitnet-model's own loaders, so bf16 masters are ternarized exactly as the
//! engine does at load (absmean per tensor) and every format's codes come out of the same decoders the
//! engine runs on. I2_S output follows bitnet.cpp's official file (arch `bitnet-b1.58`, tensor names,
//! types and order, one f32 scale after each tensor's codes); TQ2_0/TQ1_0 output follows llama.cpp's
//! `bitnet` arch.

pub mod tensors;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bitnet_gguf::{GgmlType, GgufFile, GgufWriter};
use bitnet_model::{detect, load_gguf, load_hf, BitNetModel, FfnActivation, ModelKind};

use crate::progress;
use crate::safe_write;
use bitnet_model::arch::{gguf_layer, LayerTensor, ModelTensor, RopeLayout};
use bitnet_model::gguf_meta as metadata;
pub use bitnet_model::gguf_meta::{Layout, TokenizerMeta};
use bitnet_model::{Layer, Linear};
pub use tensors::{HeadType, TernaryType};

/// What `convert` does.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub to: TernaryType,
    /// Type of the embedding table (and output head, if untied). Default F16 like the official file.
    pub head_type: HeadType,
    /// Overrides the FFN activation the input implies.
    pub ffn_act: Option<FfnActivation>,
    /// Overrides `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    /// Replaces the chat template with this Jinja source (see [`ChatTemplate::source_of_spec`]).
    ///
    /// [`ChatTemplate::source_of_spec`]: bitnet_tokenizer::chat_template::ChatTemplate::source_of_spec
    pub chat_template: Option<String>,
    /// `general.name` (default: the input's, or the folder / file name).
    pub name: Option<String>,
    pub force: bool,
    pub quiet: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            to: TernaryType::I2S,
            head_type: HeadType::F16,
            ffn_act: None,
            pre: None,
            chat_template: None,
            name: None,
            force: false,
            quiet: true,
        }
    }
}

/// What a conversion did, for the command's summary.
#[derive(Clone, Debug)]
pub struct ConvertSummary {
    pub arch: String,
    pub n_tensors: usize,
    pub n_bytes: u64,
    pub pre: Option<String>,
    pub pre_reason: String,
    pub warnings: Vec<String>,
}

/// Converts `input` into `output` (atomically; refuses to overwrite without `force`).
pub fn convert(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<ConvertSummary> {
    safe_write::check_target(output, input, opts.force)?;
    let (writer, mut summary) = build(input, opts)?;
    let pb = progress::bar(1, "writing", opts.quiet);
    safe_write::write_atomically(output, |w| {
        summary.n_bytes = writer
            .write(w)
            .with_context(|| format!("writing {}", output.display()))?;
        Ok(())
    })?;
    pb.finish_and_clear();
    Ok(summary)
}

fn default_name(path: &Path) -> String {
    let p: PathBuf = if path.is_dir() {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    } else {
        path.with_extension("")
    };
    p.file_name().and_then(|n| n.to_str()).unwrap_or("bitnet").to_string()
}

/// Loads `input` and builds the output file in memory.
pub fn build(input: &Path, opts: &ConvertOptions) -> Result<(GgufWriter, ConvertSummary)> {
    let (kind, path) = detect(input)?;
    let (model, mut tmeta, src_name) = match kind {
        ModelKind::HfFolder => {
            let (model, tok) = load_hf::load(&path, opts.ffn_act)?;
            let (_, json) = load_hf::read_config(&path, opts.ffn_act)?;
            let t = TokenizerMeta::from_hf(&path, &json, &tok)?;
            (model, t, None)
        }
        ModelKind::Gguf => {
            let g = GgufFile::open(&path)?;
            let (model, _) =
                load_gguf::from_gguf(&g, opts.ffn_act).with_context(|| format!("loading {}", path.display()))?;
            let t = TokenizerMeta::from_gguf(&g).with_context(|| format!("tokenizer of {}", path.display()))?;
            let name = g.get("general.name").and_then(|v| v.as_str()).map(str::to_string);
            (model, t, name)
        }
    };
    if let Some(p) = &opts.pre {
        tmeta.pre = Some(p.clone());
        tmeta.pre_reason = format!("--pre {p}");
    }
    if let Some(t) = &opts.chat_template {
        tmeta.chat_template = Some(t.clone());
    }
    let name = opts.name.clone().or(src_name).unwrap_or_else(|| default_name(&path));
    build_from_model(&model, &tmeta, &name, opts)
}

/// A norm weight of a layer (`None` if the layer does not have it).
fn layer_norm(l: &Layer, t: LayerTensor) -> Option<&Vec<f32>> {
    match t {
        LayerTensor::AttnNorm => Some(&l.attn_norm),
        LayerTensor::FfnNorm => Some(&l.ffn_norm),
        LayerTensor::AttnSubNorm => l.attn_sub_norm.as_ref(),
        LayerTensor::FfnSubNorm => l.ffn_sub_norm.as_ref(),
        LayerTensor::QHeadNorm => l.q_norm.as_ref(),
        LayerTensor::KHeadNorm => l.k_norm.as_ref(),
        t => projection(l, t.input_norm_of()?).in_norm.as_ref().map(|n| &n.w),
    }
}

/// A projection of a layer.
fn projection(l: &Layer, t: LayerTensor) -> &Linear {
    match t {
        LayerTensor::Q => &l.wq,
        LayerTensor::K => &l.wk,
        LayerTensor::V => &l.wv,
        LayerTensor::O => &l.wo,
        LayerTensor::Gate => &l.w_gate,
        LayerTensor::Up => &l.w_up,
        _ => &l.w_down,
    }
}

/// Builds the output from a loaded model and its tokenizer metadata.
pub fn build_from_model(
    model: &BitNetModel,
    tmeta: &TokenizerMeta,
    name: &str,
    opts: &ConvertOptions,
) -> Result<(GgufWriter, ConvertSummary)> {
    let cfg = &model.cfg;
    let layout = match opts.to {
        TernaryType::I2S => Layout::BitnetCpp,
        TernaryType::TQ2_0 => Layout::LlamaCpp { file_type: 37 },
        TernaryType::TQ1_0 => Layout::LlamaCpp { file_type: 36 },
    };
    let arch = metadata::arch_of(layout, cfg.family);
    if layout == Layout::BitnetCpp && cfg.ffn_act_guessed {
        bail!(
            "the input does not say its FFN activation ({}); I2_S files name it by their architecture \
             (bitnet-b1.58: squared ReLU, bitnet: SiLU), so say which: --ffn-act relu2 for BitNet b1.58 \
             weights (e.g. 2B-4T converted by llama.cpp), --ffn-act silu for 1bitLLM weights",
            cfg.ffn_act_reason
        );
    }
    if arch == bitnet_model::arch::BITNET_B158 && cfg.ffn_act != FfnActivation::Relu2 {
        bail!(
            "the input's FFN activation is {} ({}), but arch bitnet-b1.58 (I2_S) always means squared ReLU; \
             if these are BitNet b1.58 weights (e.g. 2B-4T converted by llama.cpp) pass --ffn-act relu2, \
             otherwise convert to tq2_0/tq1_0, which record the activation",
            cfg.ffn_act,
            cfg.ffn_act_reason
        );
    }
    let mut w = GgufWriter::new();
    metadata::write_metadata(&mut w, layout, cfg, name, tmeta)?;
    let mut warnings = Vec::new();
    let n_lin = cfg.num_layers * 7;
    let pb = progress::bar(n_lin as u64 + 2, "converting", opts.quiet);
    let h = cfg.hidden_size as u64;

    let embd = ModelTensor::Embedding.gguf();
    let (ty, data) = tensors::encode_float(embd, &model.embed, opts.head_type)?;
    w.add_tensor(embd, &[h, model.embed.rows() as u64], ty, data)?;
    let tied = model.tied_head;
    if !tied {
        let out = ModelTensor::Head.gguf();
        let (ty, data) = tensors::encode_float(out, &model.head, opts.head_type)?;
        w.add_tensor(out, &[h, model.head.rows() as u64], ty, data)?;
    }
    pb.inc(1);
    w.add_tensor(
        ModelTensor::FinalNorm.gguf(),
        &[model.final_norm.len() as u64],
        GgmlType::F32,
        tensors::f32_bytes(&model.final_norm),
    )?;
    pb.inc(1);
    // `llama` files hold q/k rows in the order llama.cpp's interleaved RoPE reads (the peers'
    // converters permute them); a model read from such a file already is in that order.
    let permute = arch == bitnet_model::arch::LLAMA && cfg.rope_layout == RopeLayout::HalfSplit;
    for (i, l) in model.layers.iter().enumerate() {
        // Each layer's norms first, then its projections: the official file's order.
        for t in cfg.family.layer_tensors().filter(|t| t.is_norm()) {
            let v = layer_norm(l, t).with_context(|| format!("internal error: layer {i} has no {t:?}"))?;
            w.add_tensor(
                gguf_layer(i, t),
                &[v.len() as u64],
                GgmlType::F32,
                tensors::f32_bytes(v),
            )?;
        }
        for t in cfg.family.layer_tensors().filter(|t| !t.is_norm()) {
            let tname = gguf_layer(i, t);
            let lin = projection(l, t);
            let heads = match t {
                LayerTensor::Q if permute => Some(cfg.num_heads),
                LayerTensor::K if permute => Some(cfg.num_kv_heads),
                _ => None,
            };
            let data = tensors::encode_ternary(&tname, lin, opts.to, heads, &mut |m| warnings.push(m))?;
            w.add_tensor(tname, &[lin.w.cols() as u64, lin.w.rows() as u64], opts.to.ggml(), data)?;
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    let summary = ConvertSummary {
        arch: arch.to_string(),
        n_tensors: w.tensor_infos().len(),
        n_bytes: 0,
        pre: tmeta.pre.clone(),
        pre_reason: tmeta.pre_reason.clone(),
        warnings,
    };
    Ok((w, summary))
}
