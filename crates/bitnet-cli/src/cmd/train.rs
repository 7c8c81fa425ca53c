//! `bitnet train`: quantization-aware training of a small BitNet b1.58 model on CPU (see `bitnet-train`),
//! and `--gen-corpus` to write the project's synthetic stories/dialogues corpus.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bitnet_train::model::ModelDims;
use bitnet_train::pipeline::{self, RunSpec};
use bitnet_train::trainer::TrainOptions;
use clap::Args as ClapArgs;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Corpus text files (documents separated by blank lines).
    pub corpus: Vec<PathBuf>,
    /// Write the synthetic corpus (stories and Q/A dialogues) to this file and exit.
    #[arg(long = "gen-corpus", value_name = "FILE")]
    pub gen_corpus: Option<PathBuf>,
    /// Documents in the generated corpus.
    #[arg(long = "gen-docs", default_value_t = 20000)]
    pub gen_docs: usize,
    /// Checkpoint folder (a Hugging Face model folder; also where a trained tokenizer goes).
    #[arg(short = 'o', long = "out", default_value = "bitnet-train-out")]
    pub out: PathBuf,
    /// Continue the run saved in --out.
    #[arg(long)]
    pub resume: bool,
    /// Use this tokenizer (tokenizer.json or a folder with one) instead of training one.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary size of the trained byte-level BPE tokenizer.
    #[arg(long = "vocab-size", default_value_t = 2048)]
    pub vocab_size: usize,
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    #[arg(long, default_value_t = 768)]
    pub ffn: usize,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long = "kv-heads", default_value_t = 2)]
    pub kv_heads: usize,
    /// Model context (max_position_embeddings).
    #[arg(long, default_value_t = 256)]
    pub context: usize,
    #[arg(long = "rope-theta", default_value_t = 10000.0)]
    pub rope_theta: f32,
    /// Tokens per training sequence (default: the context).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Sequences per micro-batch.
    #[arg(short = 'b', long, default_value_t = 16)]
    pub batch: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Peak learning rate (BitNet trains ternary models with high rates).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// Peak weight decay (stage one of the schedule; zero in stage two).
    #[arg(long = "weight-decay", default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the total gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Validation loss every N steps.
    #[arg(long = "val-every", default_value_t = 100)]
    pub val_every: u64,
    /// Validation windows per evaluation.
    #[arg(long = "val-windows", default_value_t = 32)]
    pub val_windows: usize,
    /// Hold out every N-th document for validation.
    #[arg(long = "val-doc-every", default_value_t = 20)]
    pub val_doc_every: usize,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long = "save-every", default_value_t = 200)]
    pub save_every: u64,
    /// Print a log line every N steps.
    #[arg(long = "log-every", default_value_t = 10)]
    pub log_every: u64,
    /// Stop (with a checkpoint) at this step, as if interrupted; --resume continues.
    #[arg(long = "stop-at")]
    pub stop_at: Option<u64>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Plot the loss curve to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Export the trained model to this GGUF (I2_S) file.
    #[arg(long)]
    pub gguf: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    if let Some(p) = &a.gen_corpus {
        let text = bitnet_train::corpus::generate(a.seed, a.gen_docs);
        bitnet_tools::safe_write::write_atomically(p, |w| {
            w.write_all(text.as_bytes())
                .with_context(|| format!("writing {}", p.display()))
        })?;
        eprintln!(
            "wrote {} documents ({} bytes) to {}",
            a.gen_docs,
            text.len(),
            p.display()
        );
        return Ok(());
    }
    if a.corpus.is_empty() {
        bail!("give one or more corpus files (or --gen-corpus FILE to write the synthetic one)");
    }
    crate::common::init_threads(a.threads)?;
    let dims = ModelDims {
        hidden: a.hidden,
        intermediate: a.ffn,
        layers: a.layers,
        heads: a.heads,
        kv_heads: a.kv_heads,
        vocab: a.vocab_size,
        context: a.context,
        rope_theta: a.rope_theta,
        rms_eps: 1e-5,
    };
    let opts = TrainOptions {
        dims,
        batch: a.batch,
        seq: a.seq.unwrap_or(a.context),
        accum: a.accum,
        steps: a.steps,
        lr: a.lr,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        clip: a.clip,
        val_every: a.val_every,
        val_windows: a.val_windows,
        save_every: a.save_every,
        seed: a.seed,
    };
    let spec = RunSpec {
        corpus: a.corpus,
        tokenizer: a.tokenizer,
        vocab_size: a.vocab_size,
        out: a.out.clone(),
        resume: a.resume,
        opts,
        val_every_doc: a.val_doc_every,
        plot: a.plot.clone(),
        gguf: a.gguf.clone(),
        stop_at: a.stop_at,
        log_every: a.log_every,
        show_progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let s = pipeline::run(&spec)?;
    eprintln!(
        "trained {} steps ({} parameters) on {} tokens seen ({} train / {} validation tokens in the corpus) in {:.0} s ({:.0} tok/s)",
        s.steps,
        s.num_params,
        s.tokens_seen,
        s.train_tokens,
        s.val_tokens,
        s.train_seconds,
        s.tokens_seen as f64 / s.train_seconds.max(1e-9)
    );
    eprintln!(
        "validation loss {} nats/token; unigram baseline {:.4}",
        s.final_val_loss.map_or("n/a".to_string(), |v| format!("{v:.4}")),
        s.unigram_baseline
    );
    eprintln!("checkpoint: {}", a.out.display());
    if let Some(p) = &a.plot {
        eprintln!("loss plot: {}", p.display());
    }
    if let Some(g) = &a.gguf {
        eprintln!("GGUF: {}", g.display());
    }
    Ok(())
}
