//! Checkpoints as Hugging Face folders: `config.json` (BitNet, `quantization_mode: online`),
//! `model.safetensors` (bf16 master weights, the embedding tied to the head), the tokenizer files, and
//! for resuming: `trainer_state.json` (step, RNG, options, loss history) and `optimizer.safetensors`
//! (float32 masters and both AdamW moments, so a resumed run continues bit for bit).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use half::bf16;

use safetensors::{serialize_to_file, Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};

use crate::model::{param_shapes, ModelDims, NamedTensor};
use crate::optim::{AdamW, AdamWConfig, Moments};

/// The files a checkpoint save writes (others in the folder, such as the tokenizer, are carried over).
pub const FILES: [&str; 5] = [
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "optimizer.safetensors",
    "trainer_state.json",
];

/// The HF `config.json` of a model of shape `d`.
pub fn hf_config(d: &ModelDims, bos: u32, eos: u32) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "relu2",
        "hidden_size": d.hidden,
        "initializer_range": 0.02,
        "intermediate_size": d.intermediate,
        "max_position_embeddings": d.context,
        "num_attention_heads": d.heads,
        "num_hidden_layers": d.layers,
        "num_key_value_heads": d.kv_heads,
        "head_dim": d.head_dim(),
        "rms_norm_eps": d.rms_eps,
        "rope_theta": d.rope_theta,
        "tie_word_embeddings": true,
        "torch_dtype": "bfloat16",
        "vocab_size": d.vocab,
        "quantization_config": {
            "quant_method": "bitnet",
            "linear_class": "autobitlinear",
            "quantization_mode": "online"
        }
    })
}

/// Reads the model shape back from a `config.json`.
pub fn dims_from_config(j: &serde_json::Value) -> Result<ModelDims> {
    let u = |k: &str| -> Result<usize> {
        j.get(k)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .with_context(|| format!("config.json: missing or non-integer '{k}'"))
    };
    let theta = j
        .get("rope_theta")
        .or_else(|| j.get("rope_parameters").and_then(|p| p.get("rope_theta")))
        .and_then(|v| v.as_f64())
        .unwrap_or(10_000.0) as f32;
    let d = ModelDims {
        hidden: u("hidden_size")?,
        intermediate: u("intermediate_size")?,
        layers: u("num_hidden_layers")?,
        heads: u("num_attention_heads")?,
        kv_heads: j
            .get("num_key_value_heads")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .unwrap_or(u("num_attention_heads")?),
        vocab: u("vocab_size")?,
        context: u("max_position_embeddings")?,
        rope_theta: theta,
        rms_eps: j.get("rms_norm_eps").and_then(|v| v.as_f64()).unwrap_or(1e-5) as f32,
    };
    if let Some(hd) = j.get("head_dim").and_then(|v| v.as_u64()) {
        if hd as usize != d.head_dim() {
            bail!("config.json: head_dim {hd} differs from hidden_size / num_attention_heads");
        }
    }
    d.validate()?;
    Ok(d)
}

/// A tensor to serialize.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn write_tensors(path: &Path, tensors: Vec<(String, Raw)>) -> Result<()> {
    let views: Vec<(String, &Raw)> = tensors.iter().map(|(n, r)| (n.clone(), r)).collect();
    serialize_to_file(views, None, path).with_context(|| format!("writing {}", path.display()))
}

fn f32_raw(shape: &[usize], v: &[f32]) -> Raw {
    Raw {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Rounds to bf16 (nearest even) and back: what the saved master weights hold.
pub fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

/// Writes `model.safetensors` (bf16) and `config.json` into `dir`.
pub fn save_weights(
    dir: &Path,
    dims: &ModelDims,
    values: &[(String, Vec<usize>, Vec<f32>)],
    bos: u32,
    eos: u32,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tensors = values
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                Raw {
                    dtype: Dtype::BF16,
                    shape: s.clone(),
                    data: v.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
                },
            )
        })
        .collect();
    write_tensors(&dir.join("model.safetensors"), tensors)?;
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, serde_json::to_string_pretty(&hf_config(dims, bos, eos))?)
        .with_context(|| format!("writing {}", cfg.display()))?;
    let gen = serde_json::json!({ "bos_token_id": bos, "eos_token_id": [eos, 2] });
    let gp = dir.join("generation_config.json");
    std::fs::write(&gp, serde_json::to_string_pretty(&gen)?).with_context(|| format!("writing {}", gp.display()))
}

/// Reads every parameter of `dir/model.safetensors` (any float dtype) as f32.
pub fn load_weights(dir: &Path, dims: &ModelDims) -> Result<Vec<NamedTensor>> {
    load_tensors_file(&dir.join("model.safetensors"), dims)
}

/// Reads every parameter of a model of shape `dims` from one safetensors file (any float dtype) as f32.
pub fn load_tensors_file(p: &Path, dims: &ModelDims) -> Result<Vec<NamedTensor>> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    let mut out = Vec::new();
    for (name, shape) in param_shapes(dims) {
        let t = st
            .tensor(&name)
            .map_err(|e| anyhow::anyhow!("{}: tensor '{name}': {e}", p.display()))?;
        if t.shape() != shape.as_slice() {
            bail!(
                "{}: tensor '{name}' has shape {:?}, expected {shape:?}",
                p.display(),
                t.shape()
            );
        }
        out.push((
            name,
            shape,
            to_f32(t.dtype(), t.data()).with_context(|| format!("{}", p.display()))?,
        ));
    }
    Ok(out)
}

fn to_f32(dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        d => bail!("unsupported dtype {d:?} (expected F32, BF16 or F16)"),
    })
}

/// Everything besides the tensors that a resumed run needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: u64,
    pub rng: u64,
    pub adamw: AdamWConfig,
    /// The options of the run (JSON of [`crate::trainer::TrainOptions`]).
    pub options: serde_json::Value,
    pub history: Vec<HistoryPoint>,
    pub tokens_seen: u64,
    pub train_seconds: f64,
}

/// One logged step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub val_loss: Option<f64>,
}

/// Writes `optimizer.safetensors` (f32 masters + moments) and `trainer_state.json`.
pub fn save_state(
    dir: &Path,
    values: &[(String, Vec<usize>, Vec<f32>)],
    opt: &AdamW,
    state: &TrainerState,
) -> Result<()> {
    let mut tensors = Vec::new();
    for ((n, s, v), m) in values.iter().zip(&opt.state) {
        tensors.push((format!("master.{n}"), f32_raw(s, v)));
        tensors.push((format!("exp_avg.{n}"), f32_raw(s, &m.exp_avg)));
        tensors.push((format!("exp_avg_sq.{n}"), f32_raw(s, &m.exp_avg_sq)));
    }
    write_tensors(&dir.join("optimizer.safetensors"), tensors)?;
    let p = dir.join("trainer_state.json");
    std::fs::write(&p, serde_json::to_string_pretty(state)?).with_context(|| format!("writing {}", p.display()))
}

/// Reads what [`save_state`] wrote: f32 masters, the optimizer, and the state.
pub fn load_state(dir: &Path, dims: &ModelDims) -> Result<(Vec<NamedTensor>, AdamW, TrainerState)> {
    let sp = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&sp).with_context(|| format!("reading {}", sp.display()))?;
    let state: TrainerState = serde_json::from_str(&text).with_context(|| format!("parsing {}", sp.display()))?;
    let p = dir.join("optimizer.safetensors");
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .map_err(|e| anyhow::anyhow!("{}: tensor '{name}': {e}", p.display()))?;
        if t.shape() != shape || t.dtype() != Dtype::F32 {
            bail!(
                "{}: tensor '{name}' is {:?} {:?}, expected F32 {shape:?}",
                p.display(),
                t.dtype(),
                t.shape()
            );
        }
        to_f32(Dtype::F32, t.data())
    };
    let mut values = Vec::new();
    let mut moments = Vec::new();
    for (name, shape) in param_shapes(dims) {
        values.push((name.clone(), shape.clone(), get(&format!("master.{name}"), &shape)?));
        moments.push(Moments {
            exp_avg: get(&format!("exp_avg.{name}"), &shape)?,
            exp_avg_sq: get(&format!("exp_avg_sq.{name}"), &shape)?,
        });
    }
    let opt = AdamW {
        cfg: state.adamw,
        step: state.step,
        state: moments,
    };
    Ok((values, opt, state))
}

/// Map from name to values, for tests and export.
pub fn by_name(values: &[(String, Vec<usize>, Vec<f32>)]) -> HashMap<&str, &[f32]> {
    values.iter().map(|(n, _, v)| (n.as_str(), v.as_slice())).collect()
}
