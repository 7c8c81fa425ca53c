//! Export of a trained model to GGUF I2_S with the engine's writer, laid out like Microsoft's official
//! `ggml-model-i2_s.gguf` (architecture `bitnet-b1.58`, F16 tied embedding, F32 norms, I2_S projections
//! ternarized with absmean exactly as the online quantization of the HF folder does).

use std::path::Path;

use anyhow::{Context, Result};
use bitnet_gguf::{GgmlType, GgufWriter, MetadataValue};
use bitnet_kernels::{i2s, ternarize_absmean};
use half::f16;

use bitnet_model::arch::{gguf_layer, hf_layer, LayerTensor, ModelTensor};
use bitnet_model::gguf_meta::{write_metadata, Layout, TokenizerMeta};

use crate::checkpoint::by_name;
use crate::model::ModelDims;
use crate::tokenizer::{read_bpe_vocab, BOS, EOS, EOT};

/// Builds the GGUF of a model from its parameter values and the tokenizer in `tokenizer_json`.
pub fn gguf_writer(
    dims: &ModelDims,
    values: &[(String, Vec<usize>, Vec<f32>)],
    tokenizer_json: &Path,
    name: &str,
) -> Result<GgufWriter> {
    let v = read_bpe_vocab(tokenizer_json)?;
    if v.tokens.len() != dims.vocab {
        anyhow::bail!(
            "{}: the tokenizer has {} tokens but the model's vocabulary is {}",
            tokenizer_json.display(),
            v.tokens.len(),
            dims.vocab
        );
    }
    let cfg = dims.config();
    let id_of = |t: &str| v.tokens.iter().position(|x| x == t).map(|i| i as u32);
    let tokenizer = TokenizerMeta {
        model: "gpt2".to_string(),
        pre: Some("gpt2".to_string()),
        scores: Some(vec![0.0; v.tokens.len()]),
        token_types: Some(
            (0..v.tokens.len())
                .map(|i| if v.special_ids.contains(&(i as u32)) { 3 } else { 1 })
                .collect(),
        ),
        tokens: v.tokens.clone(),
        merges: v.merges.clone(),
        bos: id_of(BOS),
        eos: id_of(EOS),
        add_bos: Some(true),
        chat_template: Some(crate::tokenizer::TRAINED_CHAT_TEMPLATE.to_string()),
        extra: id_of(EOT)
            .map(|e| ("tokenizer.ggml.eot_token_id".to_string(), MetadataValue::U32(e)))
            .into_iter()
            .collect(),
        ..TokenizerMeta::default()
    };
    let mut w = GgufWriter::new();
    write_metadata(&mut w, Layout::BitnetCpp, &cfg, name, &tokenizer)?;

    let m = by_name(values);
    let get = |n: &str| -> Result<&[f32]> { m.get(n).copied().with_context(|| format!("parameter '{n}' is missing")) };
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let ternary = |v: &[f32]| -> Result<Vec<u8>> {
        let mut codes = vec![0i8; v.len()];
        let scale = ternarize_absmean(v, &mut codes);
        Ok(i2s::encode(&codes, scale)?)
    };
    let emb: Vec<u8> = get(ModelTensor::Embedding.hf())?
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect();
    let h = dims.hidden as u64;
    w.add_tensor(
        ModelTensor::Embedding.gguf(),
        &[h, dims.vocab as u64],
        GgmlType::F16,
        emb,
    )?;
    w.add_tensor(
        ModelTensor::FinalNorm.gguf(),
        &[h],
        GgmlType::F32,
        f32_bytes(get(ModelTensor::FinalNorm.hf())?),
    )?;
    for i in 0..dims.layers {
        for t in LayerTensor::GGUF_ORDER {
            let ggml_dims: Vec<u64> = cfg.layer_tensor_shape(t).iter().rev().map(|&d| d as u64).collect();
            let v = get(&hf_layer(i, t))?;
            if t.is_norm() {
                w.add_tensor(gguf_layer(i, t), &ggml_dims, GgmlType::F32, f32_bytes(v))?;
            } else {
                w.add_tensor(gguf_layer(i, t), &ggml_dims, GgmlType::I2_S, ternary(v)?)?;
            }
        }
    }
    Ok(w)
}

/// Writes the GGUF to `path`.
pub fn write_gguf(
    dims: &ModelDims,
    values: &[(String, Vec<usize>, Vec<f32>)],
    tokenizer_json: &Path,
    name: &str,
    path: &Path,
) -> Result<()> {
    gguf_writer(dims, values, tokenizer_json, name)?
        .write_to_path(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
