//! `bitnet perplexity`: llama-perplexity's method (chunks of CTX tokens, second half scored), optionally
//! saving logits for, or comparing against, a KL-divergence base.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bitnet_tools::kl::{self, BaseHeader, KlStats};
use bitnet_tools::perplexity::{self, for_each_chunk, PplOptions};
use bitnet_tools::safe_write;

use crate::common::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Context size: tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// Tokens per forward call within a chunk.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch: usize,
    /// Stop after this many chunks.
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
    /// Save the log-probabilities of every scored position to FILE (a base for --kl-divergence).
    #[arg(long = "kl-divergence-base")]
    pub kl_base: Option<PathBuf>,
    /// Compare against the base given with --kl-divergence-base FILE (mean KL, top-1 agreement, percentiles).
    #[arg(long = "kl-divergence", requires = "kl_base")]
    pub kl: bool,
    /// Print the result as JSON on stdout as well.
    #[arg(long = "json")]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let (model, tok) = a.model.load_language_model("perplexity")?;
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let add_bos = tok.add_bos_default();
    let tokens = tok.encode(&text, add_bos)?;
    let opts = PplOptions {
        n_ctx: a.ctx,
        n_batch: a.batch.min(a.ctx).max(1),
        bos: if add_bos { tok.bos_id() } else { None },
        max_chunks: a.chunks,
        quiet: false,
    };
    let n = perplexity::n_chunks(tokens.len(), &opts)?;
    let vocab = model.head.rows();
    eprintln!(
        "{} tokens, {n} chunks of {} ({} scored per chunk), batch {}",
        tokens.len(),
        opts.n_ctx,
        perplexity::scored_per_chunk(opts.n_ctx),
        opts.n_batch
    );
    match (&a.kl_base, a.kl) {
        (Some(base), true) => kl_compare(&model, &tokens, &opts, base, vocab, a.json),
        (Some(base), false) => {
            safe_write::install_interrupt_cleanup();
            let header = BaseHeader {
                n_ctx: opts.n_ctx,
                n_vocab: vocab,
                n_chunks: n,
                tokens: tokens.clone(),
            };
            eprintln!(
                "saving log-probabilities to {} ({} bytes)",
                base.display(),
                header.file_bytes()
            );
            let mut result = None;
            safe_write::write_atomically(base, |w| {
                header.write(w)?;
                let mut st = perplexity::NllStats::default();
                for_each_chunk(
                    &model,
                    &tokens,
                    &PplOptions {
                        max_chunks: Some(n),
                        ..opts.clone()
                    },
                    |c, targets, logits| {
                        for (row, &t) in logits.chunks_exact(vocab).zip(targets) {
                            st.add(perplexity::nll(row, t));
                        }
                        print_running(c, st.ppl());
                        kl::write_rows(w, logits, vocab)
                    },
                )?;
                result = Some(st);
                Ok(())
            })?;
            if let Some(st) = result {
                print_final(st.ppl(), st.ppl_stderr());
            }
            Ok(())
        }
        (None, _) => {
            let r = perplexity::perplexity(&model, &tokens, &opts, print_running)?;
            print_final(r.ppl, r.ppl_stderr);
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(())
        }
    }
}

fn print_running(c: usize, ppl: f64) {
    print!("[{}]{ppl:.4},", c + 1);
    let _ = std::io::stdout().flush();
}

fn print_final(ppl: f64, err: f64) {
    println!("\nFinal estimate: PPL = {ppl:.4} +/- {err:.5}");
}

fn kl_compare(
    model: &bitnet_model::BitNetModel,
    tokens: &[u32],
    opts: &PplOptions,
    base: &std::path::Path,
    vocab: usize,
    json: bool,
) -> Result<()> {
    let (h, mut r) = kl::open_base(base)?;
    if h.n_vocab != vocab {
        bail!(
            "{}: base has a vocabulary of {}, this model {vocab}",
            base.display(),
            h.n_vocab
        );
    }
    if h.n_ctx != opts.n_ctx {
        bail!(
            "{}: base was made with -c {}, this run uses -c {}",
            base.display(),
            h.n_ctx,
            opts.n_ctx
        );
    }
    if h.tokens != tokens {
        bail!(
            "{}: base was made from different tokens ({} vs {} here): use the same text and a model with the same tokenizer",
            base.display(),
            h.tokens.len(),
            tokens.len()
        );
    }
    let rows = perplexity::scored_per_chunk(opts.n_ctx);
    let mut st = KlStats::default();
    let mut base_rows = Vec::new();
    let mut scratch = Vec::new();
    let label = base.display().to_string();
    let o = PplOptions {
        max_chunks: Some(h.n_chunks),
        ..opts.clone()
    };
    for_each_chunk(model, tokens, &o, |c, targets, logits| {
        kl::read_rows(&mut r, rows, vocab, &mut base_rows, &label)?;
        for ((b, l), &t) in base_rows
            .chunks_exact(vocab)
            .zip(logits.chunks_exact(vocab))
            .zip(targets)
        {
            st.add(b, l, t, &mut scratch);
        }
        let s = st.summary();
        print!("[{}]{:.4}/{:.6},", c + 1, s.ppl_new, s.mean_kld);
        let _ = std::io::stdout().flush();
        Ok(())
    })?;
    let s = st.summary();
    println!("\n====== Perplexity statistics ======");
    println!("PPL(base):          {:.4}", s.ppl_base);
    println!("PPL(this):          {:.4}", s.ppl_new);
    println!("ln(PPL(this)/PPL(base)): {:.6}", s.ln_ppl_ratio);
    println!("====== KL divergence statistics ({} positions) ======", s.n);
    println!("Mean    KLD: {:.6} +/- {:.6}", s.mean_kld, s.mean_kld_stderr);
    for (l, v) in &s.kld_percentiles {
        println!("{l:<7} KLD: {v:.6}");
    }
    println!("====== Token probability statistics ======");
    println!("Same top-1: {:.3} %", s.same_top1_pct);
    if json {
        println!("{}", serde_json::to_string(&s)?);
    }
    Ok(())
}
