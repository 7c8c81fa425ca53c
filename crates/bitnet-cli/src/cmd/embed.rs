//! `bitnet embed`: embeddings of texts with a BitNet embedding model, as JSON lines on stdout or a
//! `.npy` matrix (`-o`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bitnet_model::arch::Pooling;
use bitnet_model::embed::{input_ids, l2_normalize, truncate};
use bitnet_model::InferenceState;

use crate::common::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Texts to embed (each one vector).
    pub texts: Vec<String>,
    /// Read the texts from a file, one per line (`-` for standard input).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Text put before every input, e.g. $'Instruct: Given a question, find passages that answer it\nQuery: '
    /// (BitNet embedding models want a one-sentence task instruction on queries, none on documents).
    #[arg(long = "query-prefix", default_value = "")]
    pub query_prefix: String,
    /// L2-normalise each vector (what the models are trained for).
    #[arg(long = "normalize", default_value_t = true, action = clap::ArgAction::Set)]
    pub normalize: bool,
    /// Override the pooling the file declares: last (the appended EOS), mean or cls.
    #[arg(long = "pooling", value_parser = parse_pooling)]
    pub pooling: Option<Pooling>,
    /// Keep the first N dimensions (Matryoshka truncation), then normalise.
    #[arg(long = "dimensions")]
    pub dimensions: Option<usize>,
    /// Write a float32 `.npy` matrix `[texts, dims]` here instead of JSON lines on stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Most tokens evaluated per forward pass (longer texts are evaluated in chunks).
    #[arg(long = "chunk", default_value_t = 512)]
    pub chunk: usize,
}

fn parse_pooling(s: &str) -> Result<Pooling, String> {
    Pooling::parse(s).ok_or_else(|| format!("unknown pooling '{s}' (expected last, mean or cls)"))
}

pub fn run(a: Args) -> Result<()> {
    let mut texts = a.texts.clone();
    if let Some(f) = &a.file {
        let text = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        };
        texts.extend(text.lines().map(str::to_string));
    }
    if texts.is_empty() {
        bail!("no texts to embed: give them as arguments or with -f FILE");
    }
    let (model, tok) = a.model.load()?;
    let Some(file_pooling) = model.cfg.pooling else {
        bail!(
            "this is a language model ({}), not an embedding model: bitnet embed needs a BitNet embedding \
             model (e.g. bitnet-embedding GGUFs)",
            model.cfg.family.describe()
        );
    };
    let pooling = a.pooling.unwrap_or(file_pooling);
    let mut rows: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
    let mut out = std::io::stdout().lock();
    let mut state: Option<InferenceState> = None;
    for (i, t) in texts.iter().enumerate() {
        let ids = input_ids(&tok, &format!("{}{t}", a.query_prefix))?;
        let need = ids.len().max(1);
        if state.as_ref().is_none_or(|s| s.cache.capacity() < need) {
            state = Some(InferenceState::try_new(&model, need.next_power_of_two())?);
        }
        let Some(st) = state.as_mut() else { continue };
        let mut v = model
            .embed_ids(&ids, st, pooling, a.chunk)
            .with_context(|| format!("text {i}"))?;
        truncate(&mut v, a.dimensions)?;
        if a.normalize {
            l2_normalize(&mut v);
        }
        if a.output.is_none() {
            let line = serde_json::json!({"index": i, "tokens": ids.len(), "embedding": v});
            writeln!(out, "{line}")?;
        } else {
            rows.push(v);
        }
    }
    if let Some(path) = &a.output {
        let dims = rows.first().map_or(0, Vec::len);
        let flat: Vec<f32> = rows.concat();
        bitnet_tools::npy::write_f32(path, &[rows.len(), dims], &flat)?;
        eprintln!(
            "wrote {} embeddings of {dims} dimensions ({pooling} pooling{}) to {}",
            rows.len(),
            if a.normalize { ", L2-normalised" } else { "" },
            path.display()
        );
    }
    Ok(())
}
