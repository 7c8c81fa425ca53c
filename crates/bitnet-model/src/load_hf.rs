//! Building a [`BitNetModel`] from a Hugging Face folder: `config.json`, `model.safetensors` (or a
//! sharded `model.safetensors.index.json`) and the tokenizer files.
//!
//! Two weight forms exist: bf16 master weights (`quantization_mode: online`, ternarized here with
//! absmean per tensor) and the packed release (uint8 `(out/4, in)` codes plus `weight_scale`).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bitnet_kernels::{hf_packed, Bytes, FloatFormat, FloatMatrix, TernaryMatrix};
use bitnet_tokenizer::Tokenizer;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::arch::{hf_arch, hf_layer_of, hf_model_of, HfArch, LayerTensor, ModelTensor, Pooling};
use crate::bitnet::{BitNetModel, Linear};
use crate::config::{FfnActivation, ModelConfig};
use crate::layer_builder::{build_layer, LayerSource};
use crate::ops::Rope;
use crate::ternarize::{ternary_from_float, FloatToTernary};

/// One tensor of a safetensors file, located in its memory map.
#[derive(Clone, Debug)]
pub struct StTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub file: usize,
    pub start: usize,
    pub len: usize,
}

/// All tensors of a (possibly sharded) safetensors checkpoint.
pub struct Checkpoint {
    pub files: Vec<(PathBuf, Arc<Mmap>)>,
    pub tensors: HashMap<String, StTensor>,
}

impl Checkpoint {
    /// Maps `model.safetensors`, or every shard named in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            let text = std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
            let j: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
            let map = j
                .get("weight_map")
                .and_then(|m| m.as_object())
                .with_context(|| format!("{}: missing object 'weight_map'", index.display()))?;
            let mut names = BTreeSet::new();
            for (k, v) in map {
                let f = v
                    .as_str()
                    .with_context(|| format!("{}: weight_map['{k}'] is not a string", index.display()))?;
                if f.is_empty() || f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    bail!("{}: shard name '{f}' must be a plain file name", index.display());
                }
                names.insert(f.to_string());
            }
            names.into_iter().map(|f| dir.join(f)).collect()
        } else {
            bail!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            );
        };
        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        let files_seen: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        for (fi, p) in paths.into_iter().enumerate() {
            let f = File::open(&p).with_context(|| format!("opening {}", p.display()))?;
            // SAFETY: the file is opened read-only and mapped privately; we never write through the map.
            // Like every mmap-based loader we assume the file is not truncated while in use.
            let map = unsafe { Mmap::map(&f) }.with_context(|| format!("mapping {}", p.display()))?;
            // Full validation: header JSON, dtypes, shapes against byte lengths, offsets within the file.
            SafeTensors::deserialize(&map).map_err(|e| anyhow::anyhow!("{}: invalid safetensors: {e}", p.display()))?;
            let (header_len, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| anyhow::anyhow!("{}: invalid safetensors header: {e}", p.display()))?;
            let base = 8 + header_len;
            for (name, info) in meta.tensors() {
                let (a, b) = info.data_offsets;
                if let Some(prev) = tensors.get(&name) {
                    let StTensor { file, .. } = prev;
                    bail!(
                        "tensor '{name}' is in two shards ({} and {}); a checkpoint holds each tensor once",
                        files_seen[*file],
                        p.display()
                    );
                }
                tensors.insert(
                    name.clone(),
                    StTensor {
                        name: name.clone(),
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        file: fi,
                        start: base + a,
                        len: b - a,
                    },
                );
            }
            files.push((p, Arc::new(map)));
        }
        Ok(Checkpoint { files, tensors })
    }

    pub fn get(&self, name: &str) -> Result<&StTensor> {
        self.tensors
            .get(name)
            .with_context(|| format!("required tensor '{name}' is missing from the checkpoint"))
    }

    fn bytes(&self, t: &StTensor) -> Bytes {
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = self.files[t.file].1.clone();
        Bytes::from_shared(owner, t.start, t.len)
    }

    fn float_format(t: &StTensor) -> Result<FloatFormat> {
        Ok(match t.dtype {
            Dtype::BF16 => FloatFormat::BF16,
            Dtype::F16 => FloatFormat::F16,
            Dtype::F32 => FloatFormat::F32,
            d => bail!("tensor '{}' has dtype {d:?}, expected BF16, F16 or F32", t.name),
        })
    }

    /// A `[rows, cols]` float matrix.
    pub fn float_matrix(&self, name: &str, rows: usize, cols: usize) -> Result<FloatMatrix> {
        let t = self.get(name)?;
        if t.shape != [rows, cols] {
            bail!("tensor '{name}' has shape {:?}, expected [{rows}, {cols}]", t.shape);
        }
        FloatMatrix::new(Self::float_format(t)?, rows, cols, self.bytes(t)).with_context(|| format!("tensor '{name}'"))
    }

    /// A float vector of length `len`.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.get(name)?;
        if t.shape != [len] {
            bail!("tensor '{name}' has shape {:?}, expected [{len}]", t.shape);
        }
        let m = FloatMatrix::new(Self::float_format(t)?, 1, len, self.bytes(t))
            .with_context(|| format!("tensor '{name}'"))?;
        let mut v = vec![0.0; len];
        m.dequantize_row(0, &mut v);
        Ok(v)
    }

    /// A scalar (shape `[]` or `[1]`) as f32.
    pub fn scalar(&self, name: &str) -> Result<f32> {
        let t = self.get(name)?;
        if t.shape.iter().product::<usize>() != 1 {
            bail!("tensor '{name}' has shape {:?}, expected a single value", t.shape);
        }
        let m = FloatMatrix::new(Self::float_format(t)?, 1, 1, self.bytes(t))
            .with_context(|| format!("tensor '{name}'"))?;
        let mut v = [0.0f32];
        m.dequantize_row(0, &mut v);
        Ok(v[0])
    }
}

/// How packed checkpoints apply `weight_scale` (transformers' `linear_class`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScaleRule {
    /// `autobitlinear`: output times `weight_scale`.
    Multiply,
    /// `bitlinear`: output divided by `weight_scale`.
    Divide,
}

/// Loads a Hugging Face folder.
pub fn load(dir: &Path, ffn_override: Option<FfnActivation>) -> Result<(BitNetModel, Tokenizer)> {
    let (mut cfg, json) = read_config(dir, ffn_override)?;
    if cfg.family.is_embedding() {
        cfg.pooling = Some(sentence_transformers_pooling(dir)?);
    }
    let tokenizer = Tokenizer::from_hf_dir(dir).with_context(|| format!("tokenizer of {}", dir.display()))?;
    let ck = Checkpoint::open(dir)?;
    let q = json.get("quantization_config");
    let rule = match q.and_then(|q| q.get("linear_class")).and_then(|v| v.as_str()) {
        Some("autobitlinear") => ScaleRule::Multiply,
        Some("bitlinear") | None => ScaleRule::Divide,
        Some(other) => bail!("config.json: unknown quantization_config.linear_class '{other}'"),
    };
    let model = build(
        &ck,
        cfg,
        rule,
        json.get("tie_word_embeddings")
            .and_then(|v| v.as_bool())
            .unwrap_or(true),
    )
    .with_context(|| format!("loading weights of {}", dir.display()))?;
    crate::check_vocab(&model, &tokenizer).with_context(|| format!("loading {}", dir.display()))?;
    Ok((model, tokenizer))
}

/// The pooling a sentence-transformers folder declares (`modules.json` -> its Pooling module's
/// `config.json`); last-token pooling, the BitNet embedding models' own, when there is none.
pub fn sentence_transformers_pooling(dir: &Path) -> Result<Pooling> {
    let modules = dir.join("modules.json");
    let Ok(text) = std::fs::read_to_string(&modules) else {
        return Ok(Pooling::Last);
    };
    let j: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", modules.display()))?;
    let Some(m) = j.as_array().and_then(|l| {
        l.iter()
            .find(|m| m["type"].as_str().is_some_and(|t| t.ends_with(".Pooling")))
    }) else {
        return Ok(Pooling::Last);
    };
    let sub = m["path"].as_str().unwrap_or("");
    if sub.contains("..") || sub.starts_with('/') || sub.contains('\\') {
        bail!(
            "{}: pooling module path '{sub}' must be inside the folder",
            modules.display()
        );
    }
    let cfg_path = dir.join(sub).join("config.json");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?;
    let c: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", cfg_path.display()))?;
    let on = |k: &str| c[k].as_bool() == Some(true);
    Ok(if on("pooling_mode_lasttoken") {
        Pooling::Last
    } else if on("pooling_mode_mean_tokens") {
        Pooling::Mean
    } else if on("pooling_mode_cls_token") {
        Pooling::Cls
    } else {
        bail!(
            "{}: no pooling mode this engine computes (last token, mean or cls) is enabled",
            cfg_path.display()
        )
    })
}

/// Reads and validates `config.json`.
pub fn read_config(dir: &Path, ffn_override: Option<FfnActivation>) -> Result<(ModelConfig, serde_json::Value)> {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    let cfg = ModelConfig::from_hf_json(&json, ffn_override).with_context(|| format!("{}", p.display()))?;
    Ok((cfg, json))
}

fn linear(ck: &Checkpoint, name: &str, rows: usize, cols: usize, rule: ScaleRule) -> Result<Linear> {
    let t = ck.get(name)?;
    if t.dtype == Dtype::U8 {
        // Packed release: (rows/4, cols) bytes, four 2-bit codes per byte.
        if !rows.is_multiple_of(4) || t.shape != [rows / 4, cols] {
            bail!(
                "packed tensor '{name}' has shape {:?}, expected [{}, {cols}]",
                t.shape,
                rows / 4
            );
        }
        let mut codes = vec![0i8; rows * cols];
        hf_packed::unpack(&ck.bytes(t), rows, cols, &mut codes).with_context(|| format!("tensor '{name}'"))?;
        let scale_name = format!("{name}_scale");
        let ws = ck.scalar(&scale_name)?;
        let scale = match rule {
            ScaleRule::Multiply => ws,
            ScaleRule::Divide => {
                if ws == 0.0 {
                    bail!("tensor '{scale_name}' is zero, which 'bitlinear' divides by");
                }
                1.0 / ws
            }
        };
        if !scale.is_finite() {
            bail!("tensor '{scale_name}' is not a finite number ({ws})");
        }
        let w = TernaryMatrix::from_codes(rows, cols, &codes, scale).with_context(|| format!("tensor '{name}'"))?;
        return Ok(Linear::for_cpu(w));
    }
    let m = ck.float_matrix(name, rows, cols)?;
    Ok(Linear::for_cpu(ternary_from_float(&m, FloatToTernary::Absmean, name)?))
}

/// Reads a Hugging Face folder's layer tensors under its architecture's names.
struct HfLayers<'a> {
    ck: &'a Checkpoint,
    arch: &'static HfArch,
    rule: ScaleRule,
}

impl LayerSource for HfLayers<'_> {
    fn norm(&self, i: usize, t: LayerTensor, len: usize) -> Result<Vec<f32>> {
        self.ck.vector(&hf_layer_of(self.arch, i, t), len)
    }

    fn linear(&self, i: usize, t: LayerTensor, rows: usize, cols: usize) -> Result<Linear> {
        linear(self.ck, &hf_layer_of(self.arch, i, t), rows, cols, self.rule)
    }
}

/// The Hugging Face architecture entry of a configuration read by [`read_config`].
fn hf_arch_of(cfg: &ModelConfig) -> Result<&'static HfArch> {
    let name = cfg.arch.strip_prefix("hf:").unwrap_or(&cfg.arch);
    hf_arch(name).with_context(|| format!("internal error: no architecture entry for '{name}'"))
}

fn build(ck: &Checkpoint, cfg: ModelConfig, rule: ScaleRule, tied: bool) -> Result<BitNetModel> {
    let arch = hf_arch_of(&cfg)?;
    let (h, vocab) = (cfg.hidden_size, cfg.vocab_size);
    let embed_name = hf_model_of(arch, ModelTensor::Embedding);
    let embed = ck.float_matrix(&embed_name, vocab, h)?;
    let head = if !tied {
        if !ck.tensors.contains_key(ModelTensor::Head.hf()) {
            bail!(
                "config.json says tie_word_embeddings: false, but tensor '{}' (the untied output head) is \
                 missing",
                ModelTensor::Head.hf()
            );
        }
        ck.float_matrix(ModelTensor::Head.hf(), vocab, h)?
    } else {
        embed.clone()
    };
    let src = HfLayers { ck, arch, rule };
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        layers.push(build_layer(&cfg, i, &src)?);
    }
    let final_norm = ck.vector(&hf_model_of(arch, ModelTensor::FinalNorm), h)?;
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
