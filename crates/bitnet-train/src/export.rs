//! Export of a trained model to GGUF I2_S with the engine's writer, laid out like Microsoft's official
//! `ggml-model-i2_s.gguf` (architecture `bitnet-b1.58`, F16 tied embedding, F32 norms, I2_S projections
//! ternarized with absmean exactly as the online quantization of the HF folder does).

use std::path::Path;

use anyhow::{Context, Result};
use bitnet_gguf::{GgmlType, GgufWriter, MetadataValue};
use bitnet_kernels::{i2s, ternarize_absmean};
use half::f16;

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
    let arch = "bitnet-b1.58";
    let k = |s: &str| format!("{arch}.{s}");
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", arch)?;
    w.add_metadata("general.name", name)?;
    w.add_metadata(k("vocab_size"), dims.vocab as u32)?;
    w.add_metadata(k("context_length"), dims.context as u32)?;
    w.add_metadata(k("embedding_length"), dims.hidden as u32)?;
    w.add_metadata(k("block_count"), dims.layers as u32)?;
    w.add_metadata(k("feed_forward_length"), dims.intermediate as u32)?;
    w.add_metadata(k("rope.dimension_count"), dims.head_dim() as u32)?;
    w.add_metadata(k("attention.head_count"), dims.heads as u32)?;
    w.add_metadata(k("attention.head_count_kv"), dims.kv_heads as u32)?;
    w.add_metadata(k("attention.layer_norm_rms_epsilon"), dims.rms_eps)?;
    w.add_metadata(k("rope.freq_base"), dims.rope_theta)?;
    w.add_metadata("general.file_type", 40u32)?;
    w.add_metadata("general.quantization_version", 2u32)?;
    w.add_metadata("tokenizer.ggml.model", "gpt2")?;
    w.add_metadata("tokenizer.ggml.pre", "gpt2")?;
    let id_of = |t: &str| v.tokens.iter().position(|x| x == t).map(|i| i as u32);
    let types: Vec<MetadataValue> = (0..v.tokens.len())
        .map(|i| MetadataValue::I32(if v.special_ids.contains(&(i as u32)) { 3 } else { 1 }))
        .collect();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        MetadataValue::Array(v.tokens.iter().cloned().map(MetadataValue::String).collect()),
    )?;
    w.add_metadata(
        "tokenizer.ggml.scores",
        MetadataValue::Array(vec![MetadataValue::F32(0.0); v.tokens.len()]),
    )?;
    w.add_metadata("tokenizer.ggml.token_type", MetadataValue::Array(types))?;
    w.add_metadata(
        "tokenizer.ggml.merges",
        MetadataValue::Array(v.merges.iter().cloned().map(MetadataValue::String).collect()),
    )?;
    if let Some(b) = id_of(BOS) {
        w.add_metadata("tokenizer.ggml.bos_token_id", b)?;
    }
    if let Some(e) = id_of(EOS) {
        w.add_metadata("tokenizer.ggml.eos_token_id", e)?;
    }
    if let Some(e) = id_of(EOT) {
        w.add_metadata("tokenizer.ggml.eot_token_id", e)?;
    }
    w.add_metadata("tokenizer.ggml.add_bos_token", true)?;
    w.add_metadata("tokenizer.chat_template", crate::tokenizer::TRAINED_CHAT_TEMPLATE)?;

    let m = by_name(values);
    let get = |n: &str| -> Result<&[f32]> { m.get(n).copied().with_context(|| format!("parameter '{n}' is missing")) };
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let ternary = |v: &[f32]| -> Result<Vec<u8>> {
        let mut codes = vec![0i8; v.len()];
        let scale = ternarize_absmean(v, &mut codes);
        Ok(i2s::encode(&codes, scale)?)
    };
    let (h, f) = (dims.hidden as u64, dims.intermediate as u64);
    let (q, kv) = (
        (dims.heads * dims.head_dim()) as u64,
        (dims.kv_heads * dims.head_dim()) as u64,
    );
    let emb: Vec<u8> = get("model.embed_tokens.weight")?
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect();
    w.add_tensor("token_embd.weight", &[h, dims.vocab as u64], GgmlType::F16, emb)?;
    w.add_tensor(
        "output_norm.weight",
        &[h],
        GgmlType::F32,
        f32_bytes(get("model.norm.weight")?),
    )?;
    for i in 0..dims.layers {
        let hf = |s: &str| format!("model.layers.{i}.{s}");
        let g = |s: &str| format!("blk.{i}.{s}.weight");
        w.add_tensor(
            g("attn_norm"),
            &[h],
            GgmlType::F32,
            f32_bytes(get(&hf("input_layernorm.weight"))?),
        )?;
        w.add_tensor(
            g("attn_q"),
            &[h, q],
            GgmlType::I2_S,
            ternary(get(&hf("self_attn.q_proj.weight"))?)?,
        )?;
        w.add_tensor(
            g("attn_k"),
            &[h, kv],
            GgmlType::I2_S,
            ternary(get(&hf("self_attn.k_proj.weight"))?)?,
        )?;
        w.add_tensor(
            g("attn_v"),
            &[h, kv],
            GgmlType::I2_S,
            ternary(get(&hf("self_attn.v_proj.weight"))?)?,
        )?;
        w.add_tensor(
            g("attn_sub_norm"),
            &[q],
            GgmlType::F32,
            f32_bytes(get(&hf("self_attn.attn_sub_norm.weight"))?),
        )?;
        w.add_tensor(
            g("attn_output"),
            &[q, h],
            GgmlType::I2_S,
            ternary(get(&hf("self_attn.o_proj.weight"))?)?,
        )?;
        w.add_tensor(
            g("ffn_norm"),
            &[h],
            GgmlType::F32,
            f32_bytes(get(&hf("post_attention_layernorm.weight"))?),
        )?;
        w.add_tensor(
            g("ffn_gate"),
            &[h, f],
            GgmlType::I2_S,
            ternary(get(&hf("mlp.gate_proj.weight"))?)?,
        )?;
        w.add_tensor(
            g("ffn_up"),
            &[h, f],
            GgmlType::I2_S,
            ternary(get(&hf("mlp.up_proj.weight"))?)?,
        )?;
        w.add_tensor(
            g("ffn_sub_norm"),
            &[f],
            GgmlType::F32,
            f32_bytes(get(&hf("mlp.ffn_sub_norm.weight"))?),
        )?;
        w.add_tensor(
            g("ffn_down"),
            &[f, h],
            GgmlType::I2_S,
            ternary(get(&hf("mlp.down_proj.weight"))?)?,
        )?;
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
