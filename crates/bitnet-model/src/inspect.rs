//! `bitnet inspect`: what a model file holds, without running it.

use std::fmt::{self, Write as _};
use std::path::Path;

use anyhow::{Context, Result};
use bitnet_gguf::{GgufFile, MetadataValue};
use bitnet_tokenizer::Tokenizer;

use crate::config::ModelConfig;
use crate::{detect, load_gguf, load_hf, LoadOptions, ModelKind};

/// One row of the tensor table.
#[derive(Clone, Debug)]
pub struct TensorRow {
    pub name: String,
    pub dtype: String,
    /// Dimensions as the file stores them (ggml order `[in, out]` for GGUF, `[out, in]` for safetensors).
    pub shape: Vec<u64>,
    pub bytes: u64,
}

/// Everything `bitnet inspect` prints.
#[derive(Debug)]
pub struct Report {
    pub path: String,
    pub format: String,
    pub cfg: ModelConfig,
    pub tokenizer: Vec<(String, String)>,
    /// How the file's weight scales are applied, and why.
    pub scales: String,
    pub metadata: Vec<(String, String)>,
    pub tensors: Vec<TensorRow>,
}

/// Reads the header, configuration, tokenizer and tensor list of a model.
pub fn inspect(path: &Path, opts: &LoadOptions) -> Result<Report> {
    let (kind, p) = detect(path)?;
    match kind {
        ModelKind::Gguf => {
            let g = GgufFile::open(&p)?;
            let cfg = ModelConfig::from_gguf(&g, opts.ffn_act).with_context(|| format!("reading {}", p.display()))?;
            let tok = load_gguf::tokenizer_from_gguf(&g);
            let metadata = g.metadata().iter().map(|(k, v)| (k.clone(), summarize(v))).collect();
            let tensors = g
                .tensors()
                .iter()
                .map(|t| TensorRow {
                    name: t.name.clone(),
                    dtype: t.ggml_type.name().to_string(),
                    shape: t.dims.clone(),
                    bytes: t.n_bytes,
                })
                .collect();
            Ok(Report {
                path: p.display().to_string(),
                format: format!("GGUF v{} (alignment {})", g.version(), g.alignment()),
                scales: "per tensor (I2_S) or per block (TQ), multiplied: the converters store 1/weight_scale \
                         for models whose Hugging Face files divide"
                    .to_string(),
                cfg,
                tokenizer: tokenizer_summary(tok),
                metadata,
                tensors,
            })
        }
        ModelKind::HfFolder => {
            let (mut cfg, json) = load_hf::read_config(&p, opts.ffn_act)?;
            if cfg.family.is_embedding() {
                cfg.pooling = Some(load_hf::sentence_transformers_pooling(&p)?);
            }
            let ck = load_hf::Checkpoint::open(&p)?;
            let mut tensors: Vec<TensorRow> = ck
                .tensors
                .values()
                .map(|t| TensorRow {
                    name: t.name.clone(),
                    dtype: format!("{:?}", t.dtype),
                    shape: t.shape.iter().map(|&d| d as u64).collect(),
                    bytes: t.len as u64,
                })
                .collect();
            tensors.sort_by_key(|t| natural_key(&t.name));
            let q = json.get("quantization_config");
            let mode = q
                .and_then(|q| q.get("quantization_mode"))
                .and_then(|v| v.as_str())
                .unwrap_or("none");
            let class = q
                .and_then(|q| q.get("linear_class"))
                .and_then(|v| v.as_str())
                .unwrap_or("bitlinear");
            let scales = match class {
                "autobitlinear" => "weight_scale multiplied (linear_class autobitlinear: mean|W|)",
                _ if json.get("quantization_config").is_some() => {
                    "weight_scale divided (linear_class bitlinear or absent: 1/mean|W|, transformers' default)"
                }
                _ => "absmean per tensor at load (float master weights, no quantization_config)",
            }
            .to_string();
            let metadata = vec![
                ("quantization_mode".to_string(), mode.to_string()),
                ("linear_class".to_string(), class.to_string()),
                ("shards".to_string(), ck.files.len().to_string()),
            ];
            Ok(Report {
                path: p.display().to_string(),
                format: "Hugging Face folder (safetensors)".to_string(),
                scales,
                cfg,
                tokenizer: tokenizer_summary(Tokenizer::from_hf_dir(&p).map_err(anyhow::Error::from)),
                metadata,
                tensors,
            })
        }
    }
}

fn natural_key(s: &str) -> Vec<(String, u64)> {
    s.split('.')
        .map(|p| p.parse::<u64>().map_or((p.to_string(), 0), |n| (String::new(), n)))
        .collect()
}

fn tokenizer_summary(t: Result<Tokenizer>) -> Vec<(String, String)> {
    match t {
        Err(e) => vec![("error".into(), format!("{e:#}"))],
        Ok(t) => {
            let name = |id: u32| t.token_text(id).unwrap_or_default();
            vec![
                ("vocabulary".into(), t.vocab_size().to_string()),
                ("pre-tokenizer".into(), t.pre_tokenizer_name().to_string()),
                (
                    "BOS".into(),
                    t.bos_id().map_or("none".into(), |b| format!("{b} {}", name(b))),
                ),
                ("adds BOS".into(), t.add_bos_default().to_string()),
                (
                    "stop tokens".into(),
                    t.stop_ids()
                        .iter()
                        .map(|&i| format!("{i} {}", name(i)))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                (
                    "chat template".into(),
                    t.chat_template()
                        .map_or("none".into(), |s| format!("{} characters", s.chars().count())),
                ),
                (
                    "appends".into(),
                    t.appended_token()
                        .map_or("nothing".into(), |i| format!("{i} {}", name(i))),
                ),
            ]
            .into_iter()
            .chain(t.notes().iter().map(|n| ("note".to_string(), n.clone())))
            .collect()
        }
    }
}

/// A metadata value on one line: long arrays and strings are shortened.
pub fn summarize(v: &MetadataValue) -> String {
    match v {
        MetadataValue::Array(a) => {
            let head: Vec<String> = a.iter().take(4).map(summarize).collect();
            format!(
                "[{} items] [{}{}]",
                a.len(),
                head.join(", "),
                if a.len() > 4 { ", ..." } else { "" }
            )
        }
        MetadataValue::String(s) => {
            let mut short: String = s.chars().take(80).collect();
            if short.len() < s.len() {
                short.push_str("...");
            }
            format!("{short:?}")
        }
        MetadataValue::U8(x) => x.to_string(),
        MetadataValue::I8(x) => x.to_string(),
        MetadataValue::U16(x) => x.to_string(),
        MetadataValue::I16(x) => x.to_string(),
        MetadataValue::U32(x) => x.to_string(),
        MetadataValue::I32(x) => x.to_string(),
        MetadataValue::U64(x) => x.to_string(),
        MetadataValue::I64(x) => x.to_string(),
        MetadataValue::F32(x) => x.to_string(),
        MetadataValue::F64(x) => x.to_string(),
        MetadataValue::Bool(x) => x.to_string(),
    }
}

fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", U[i])
    }
}

/// Names, keys and values come from the file: control characters (terminal escapes, bells,
/// carriage returns) are shown escaped, so a hostile file cannot drive the terminal.
fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if ch.is_control() && ch != '\n' {
            out.extend(ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Widest name column: longer names overflow it rather than pushing every row right.
const MAX_NAME_COLUMN: usize = 64;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_to(&mut out)?;
        f.write_str(&escape_controls(&out))
    }
}

impl Report {
    fn write_to(&self, f: &mut String) -> fmt::Result {
        let c = &self.cfg;
        writeln!(f, "model:          {}", self.path)?;
        writeln!(f, "format:         {}", self.format)?;
        writeln!(f, "architecture:   {}", c.arch)?;
        writeln!(f, "family:         {} ({})", c.family.describe(), c.family_reason)?;
        writeln!(f, "weight scales:  {}", self.scales)?;
        let rope_why = match (c.rope_layout, self.format.starts_with("GGUF")) {
            (crate::arch::RopeLayout::Interleaved, _) => "architecture 'llama': its converters permute q/k rows",
            (_, true) => "the architecture keeps the Hugging Face row order",
            (_, false) => "Hugging Face row order",
        };
        writeln!(f, "RoPE layout:    {} ({rope_why})", c.rope_layout.describe())?;
        if let Some(p) = c.pooling {
            writeln!(
                f,
                "embedding:      {p} pooling, L2-normalised by default (an embedding model: no text generation)"
            )?;
        }
        writeln!(f, "hidden size:    {}", c.hidden_size)?;
        writeln!(f, "FFN size:       {}", c.intermediate_size)?;
        writeln!(f, "layers:         {}", c.num_layers)?;
        writeln!(
            f,
            "heads:          {} (KV heads {}, head dim {}, RoPE dims {})",
            c.num_heads, c.num_kv_heads, c.head_dim, c.rope_dim
        )?;
        writeln!(f, "vocabulary:     {}", c.vocab_size)?;
        writeln!(f, "context:        {}", c.context_length)?;
        writeln!(f, "RoPE base:      {}", c.rope_theta)?;
        writeln!(f, "RMSNorm eps:    {:e}", c.rms_eps)?;
        writeln!(f, "FFN activation: {} ({})", c.ffn_act, c.ffn_act_reason)?;
        writeln!(f, "\ntokenizer:")?;
        for (k, v) in &self.tokenizer {
            writeln!(f, "  {k:<14} {v}")?;
        }
        writeln!(f, "\nmetadata:")?;
        for (k, v) in &self.metadata {
            writeln!(f, "  {k:<44} {v}")?;
        }
        let total: u64 = self.tensors.iter().map(|t| t.bytes).sum();
        writeln!(f, "\ntensors: {} ({})", self.tensors.len(), human_bytes(total))?;
        let w = self
            .tensors
            .iter()
            .map(|t| t.name.chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, MAX_NAME_COLUMN);
        writeln!(f, "  {:<w$}  {:<6}  {:<18}  {:>12}", "name", "type", "shape", "size")?;
        for t in &self.tensors {
            let mut shape = String::new();
            let _ = write!(shape, "{:?}", t.shape);
            writeln!(
                f,
                "  {:<w$}  {:<6}  {:<18}  {:>12}",
                t.name,
                t.dtype,
                shape,
                human_bytes(t.bytes)
            )?;
        }
        Ok(())
    }
}
