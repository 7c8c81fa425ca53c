//! Perplexity with llama-perplexity's method, so figures compare directly with llama.cpp's and
//! bitnet.cpp's:
//!
//! * tokenize the whole text once, with BOS;
//! * cut it into `n_chunks = n_tokens / n_ctx` chunks of `n_ctx` tokens (the rest is dropped);
//! * evaluate each chunk from an empty cache, in batches of `n_batch` tokens, with the chunk's first token
//!   replaced by BOS;
//! * score only the second half: the logits of positions `n_ctx/2 ..= n_ctx-2` predict the next token;
//! * `PPL = exp(mean NLL)`, error bar `PPL * sqrt(var(NLL) / (count - 1))`.

use anyhow::{bail, Result};
use bitnet_model::{BitNetModel, InferenceState, LogitsWanted};

use crate::progress;

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct PplOptions {
    pub n_ctx: usize,
    pub n_batch: usize,
    /// Replace each chunk's first token by BOS (llama.cpp does when the vocabulary adds BOS).
    pub bos: Option<u32>,
    /// Stop after this many chunks.
    pub max_chunks: Option<usize>,
    pub quiet: bool,
}

/// Where a chunk's scored positions start.
pub fn first_scored(n_ctx: usize) -> usize {
    n_ctx / 2
}

/// Scored positions per chunk.
pub fn scored_per_chunk(n_ctx: usize) -> usize {
    n_ctx - 1 - first_scored(n_ctx)
}

/// Number of chunks a run over `n_tokens` tokens evaluates.
pub fn n_chunks(n_tokens: usize, opts: &PplOptions) -> Result<usize> {
    if opts.n_ctx < 4 {
        bail!("context size {} is too small (at least 4)", opts.n_ctx);
    }
    if opts.n_batch == 0 {
        bail!("batch size must be at least 1");
    }
    if n_tokens < 2 * opts.n_ctx {
        bail!(
            "the text has {n_tokens} tokens; perplexity with -c {} needs at least {} (2 * context)",
            opts.n_ctx,
            2 * opts.n_ctx
        );
    }
    let n = n_tokens / opts.n_ctx;
    Ok(opts.max_chunks.map_or(n, |m| m.clamp(1, n)))
}

/// Log-softmax of one row (max in f32, sum of exponentials in f64), written to `out`.
pub fn log_softmax(logits: &[f32], out: &mut [f64]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    let lse = sum.ln();
    for (o, &v) in out.iter_mut().zip(logits) {
        *o = (v - max) as f64 - lse;
    }
}

/// Negative log-likelihood of `target` under one row of logits.
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    sum.ln() - (logits[target as usize] - max) as f64
}

/// Running sums of NLL.
#[derive(Clone, Copy, Debug, Default)]
pub struct NllStats {
    pub sum: f64,
    pub sum2: f64,
    pub count: usize,
}

impl NllStats {
    pub fn add(&mut self, v: f64) {
        self.sum += v;
        self.sum2 += v * v;
        self.count += 1;
    }

    pub fn ppl(&self) -> f64 {
        (self.sum / self.count.max(1) as f64).exp()
    }

    /// llama.cpp's error bar: `PPL * sqrt((E[v^2] - E[v]^2) / (count - 1))`.
    pub fn ppl_stderr(&self) -> f64 {
        if self.count < 2 {
            return f64::NAN;
        }
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum2 / n - mean * mean;
        if var <= 0.0 {
            return 0.0;
        }
        (var / (n - 1.0)).sqrt() * mean.exp()
    }
}

/// Result of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PplResult {
    pub ppl: f64,
    pub ppl_stderr: f64,
    pub n_ctx: usize,
    pub n_tokens: usize,
    pub n_chunks: usize,
    pub n_scored: usize,
    /// PPL after each chunk.
    pub running_ppl: Vec<f64>,
}

/// Evaluates every chunk and hands `visit(chunk, targets, logits)` the logits of the scored positions
/// (`scored_per_chunk(n_ctx)` rows of `vocab`) and the tokens they predict.
pub fn for_each_chunk(
    model: &BitNetModel,
    tokens: &[u32],
    opts: &PplOptions,
    mut visit: impl FnMut(usize, &[u32], &[f32]) -> Result<()>,
) -> Result<usize> {
    let n = n_chunks(tokens.len(), opts)?;
    let (n_ctx, vocab) = (opts.n_ctx, model.head.rows());
    let first = first_scored(n_ctx);
    let mut state = InferenceState::try_new(model, n_ctx)?;
    let mut logits = vec![0f32; n_ctx * vocab];
    let mut batch = Vec::with_capacity(opts.n_batch);
    let pb = progress::bar(n as u64, "chunks", opts.quiet);
    for c in 0..n {
        let start = c * n_ctx;
        state.reset();
        let mut pos = 0;
        while pos < n_ctx {
            let end = (pos + opts.n_batch).min(n_ctx);
            batch.clear();
            batch.extend_from_slice(&tokens[start + pos..start + end]);
            if pos == 0 {
                if let Some(b) = opts.bos {
                    batch[0] = b;
                }
            }
            let out = model.forward(&batch, &mut state, LogitsWanted::All)?;
            logits[pos * vocab..end * vocab].copy_from_slice(out);
            pos = end;
        }
        let m = scored_per_chunk(n_ctx);
        visit(
            c,
            &tokens[start + first + 1..start + first + 1 + m],
            &logits[first * vocab..(first + m) * vocab],
        )?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(n)
}

/// Runs llama-perplexity's method. `on_chunk(i, running_ppl)` is called after each chunk (the CLI prints
/// the running estimate with it).
pub fn perplexity(
    model: &BitNetModel,
    tokens: &[u32],
    opts: &PplOptions,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<PplResult> {
    let vocab = model.head.rows();
    let mut st = NllStats::default();
    let mut running = Vec::new();
    let n = for_each_chunk(model, tokens, opts, |c, targets, logits| {
        for (row, &t) in logits.chunks_exact(vocab).zip(targets) {
            st.add(nll(row, t));
        }
        running.push(st.ppl());
        on_chunk(c, st.ppl());
        Ok(())
    })?;
    Ok(PplResult {
        ppl: st.ppl(),
        ppl_stderr: st.ppl_stderr(),
        n_ctx: opts.n_ctx,
        n_tokens: tokens.len(),
        n_chunks: n,
        n_scored: st.count,
        running_ppl: running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_arithmetic_matches_llama_perplexity() {
        let o = PplOptions {
            n_ctx: 64,
            n_batch: 64,
            bos: None,
            max_chunks: None,
            quiet: true,
        };
        // The fixture: 3197 tokens with BOS at context 64 -> 49 chunks of 31 scored tokens = 1519.
        assert_eq!(n_chunks(3197, &o).unwrap(), 49);
        assert_eq!(scored_per_chunk(64) * 49, 1519);
        assert!(n_chunks(127, &o).is_err());
    }

    #[test]
    fn nll_and_stderr() {
        let l = [0.0f32, (3.0f32).ln()];
        assert!((nll(&l, 1) - (4.0f64 / 3.0).ln()).abs() < 1e-7);
        let mut s = NllStats::default();
        for v in [1.0, 2.0, 3.0] {
            s.add(v);
        }
        // mean 2, population variance 2/3, stderr sqrt((2/3)/2) * e^2
        assert!((s.ppl() - 2f64.exp()).abs() < 1e-9);
        assert!((s.ppl_stderr() - (1.0f64 / 3.0).sqrt() * 2f64.exp()).abs() < 1e-9);
        let mut ls = [0f64; 2];
        log_softmax(&l, &mut ls);
        assert!((ls[1] + nll(&l, 1)).abs() < 1e-12);
    }
}
