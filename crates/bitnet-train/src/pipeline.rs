//! `bitnet train` end to end: read the corpus, train or copy a tokenizer, tokenize, train (or resume),
//! checkpoint, plot, export GGUF.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bitnet_tokenizer::Tokenizer;

use crate::checkpoint::HistoryPoint;
use crate::data;
use crate::export;
use crate::plot;
use crate::tokenizer;
use crate::trainer::{run_loop, LoopControl, TrainOptions, Trainer};

/// What to do (everything the CLI passes).
pub struct RunSpec {
    pub corpus: Vec<PathBuf>,
    /// A tokenizer to use (a `tokenizer.json` or a folder holding one); trained when `None`.
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary size of a trained tokenizer.
    pub vocab_size: usize,
    /// Checkpoint folder.
    pub out: PathBuf,
    /// Continue the run saved in `out`.
    pub resume: bool,
    /// Options of a fresh run (`dims.vocab` is replaced by the tokenizer's size).
    pub opts: TrainOptions,
    /// Every `val_every_doc`-th document is held out for validation.
    pub val_every_doc: usize,
    pub plot: Option<PathBuf>,
    pub gguf: Option<PathBuf>,
    pub stop_at: Option<u64>,
    pub log_every: u64,
    pub show_progress: bool,
}

/// What a run reports at the end.
#[derive(Debug)]
pub struct RunSummary {
    pub steps: u64,
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub unigram_baseline: f64,
    pub final_val_loss: Option<f64>,
    pub tokens_seen: u64,
    pub train_seconds: f64,
    pub num_params: usize,
    pub history: Vec<HistoryPoint>,
}

fn read_corpus(files: &[PathBuf]) -> Result<Vec<String>> {
    if files.is_empty() {
        bail!("no corpus files given");
    }
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading corpus file {}", f.display()))?;
        docs.extend(data::documents(&text));
    }
    if docs.is_empty() {
        bail!("the corpus is empty");
    }
    Ok(docs)
}

fn install_tokenizer(src: &Path, out: &Path) -> Result<()> {
    let file = if src.is_dir() {
        src.join("tokenizer.json")
    } else {
        src.to_path_buf()
    };
    if !file.is_file() {
        bail!("tokenizer {}: no tokenizer.json there", src.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::copy(&file, out.join("tokenizer.json")).with_context(|| format!("copying {}", file.display()))?;
    let cfg = file.with_file_name("tokenizer_config.json");
    if cfg.is_file() {
        std::fs::copy(&cfg, out.join("tokenizer_config.json")).with_context(|| format!("copying {}", cfg.display()))?;
    } else {
        tokenizer::write_tokenizer_config(out)?;
    }
    Ok(())
}

/// Runs (or resumes) a training run.
pub fn run(spec: &RunSpec) -> Result<RunSummary> {
    let docs = read_corpus(&spec.corpus)?;
    let (train_docs, val_docs) = data::split_docs(docs, spec.val_every_doc);
    if val_docs.is_empty() {
        bail!("the corpus has too few documents to hold out a validation set");
    }
    let resuming = spec.resume && spec.out.join("trainer_state.json").is_file();
    if !resuming {
        match &spec.tokenizer {
            Some(t) => install_tokenizer(t, &spec.out)?,
            None => tokenizer::train_bpe(&train_docs, spec.vocab_size, &spec.out)?,
        }
    }
    let tok = Tokenizer::from_hf_dir(&spec.out).with_context(|| format!("tokenizer in {}", spec.out.display()))?;
    let bos = tok.bos_id().context("the tokenizer has no begin-of-text token")?;
    let eos = tok.eos_id().context("the tokenizer has no end-of-text token")?;
    let train = data::encode_stream(&tok, &train_docs)?;
    let val_stream = data::encode_stream(&tok, &val_docs)?;
    let mut tr = if resuming {
        Trainer::resume(&spec.out)?
    } else {
        let mut o = spec.opts.clone();
        o.dims.vocab = tok.vocab_size();
        Trainer::new(o)?
    };
    if tr.opts.dims.vocab != tok.vocab_size() {
        bail!(
            "the checkpoint's vocabulary ({}) differs from its tokenizer's ({})",
            tr.opts.dims.vocab,
            tok.vocab_size()
        );
    }
    let seq = tr.opts.seq;
    let val = data::val_windows(&val_stream, seq, tr.opts.val_windows);
    let baseline = data::unigram_baseline(&train, &val_stream, tr.opts.dims.vocab);
    let ctl = LoopControl {
        out: &spec.out,
        bos,
        eos,
        stop_at: spec.stop_at,
        log_every: spec.log_every,
        show_progress: spec.show_progress,
    };
    run_loop(&mut tr, &train, &val, &ctl)?;
    if let Some(g) = &spec.gguf {
        // The GGUF holds what the HF folder holds: the bf16-rounded masters.
        let values: Vec<_> = tr
            .values()
            .into_iter()
            .map(|(n, s, v)| (n, s, crate::checkpoint::round_bf16(&v)))
            .collect();
        export::write_gguf(
            &tr.opts.dims,
            &values,
            &spec.out.join("tokenizer.json"),
            "bitnet-rs-demo",
            g,
        )?;
    }
    // Last, and not fatal: a missing font must not cost the trained model (it is saved above).
    if let Some(p) = &spec.plot {
        if let Err(e) = plot::plot_loss(&tr.state.history, Some(baseline), p) {
            eprintln!("warning: no loss plot: {e:#}");
        }
    }
    Ok(RunSummary {
        steps: tr.state.step,
        train_tokens: train.len(),
        val_tokens: val_stream.len(),
        unigram_baseline: baseline,
        final_val_loss: tr.state.history.iter().rev().find_map(|h| h.val_loss),
        tokens_seen: tr.state.tokens_seen,
        train_seconds: tr.state.train_seconds,
        num_params: tr.opts.dims.num_params(),
        history: tr.state.history.clone(),
    })
}
