//! Token streams for training and validation: documents (blank-line separated paragraphs of the corpus
//! files) wrapped in begin/end-of-text tokens, concatenated, and cut into windows.

use anyhow::{bail, Context, Result};
use bitnet_tokenizer::Tokenizer;

use crate::model::Rng;

/// Splits text into documents at blank lines (empty documents are dropped).
pub fn documents(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Encodes documents into one stream: `BOS doc EOS BOS doc EOS ...`.
pub fn encode_stream(tok: &Tokenizer, docs: &[String]) -> Result<Vec<u32>> {
    let bos = tok.bos_id().context("the tokenizer has no begin-of-text token")?;
    let eos = tok.eos_id().context("the tokenizer has no end-of-text token")?;
    let mut out = Vec::new();
    for d in docs {
        out.push(bos);
        out.extend(tok.encode(d, false).with_context(|| "encoding the corpus")?);
        out.push(eos);
    }
    Ok(out)
}

/// Splits documents into (train, validation): every `1/val_fraction`-th document is held out.
pub fn split_docs(docs: Vec<String>, val_every: usize) -> (Vec<String>, Vec<String>) {
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        if val_every > 0 && i % val_every == val_every - 1 {
            val.push(d);
        } else {
            train.push(d);
        }
    }
    (train, val)
}

/// A random batch of `batch` windows of `seq + 1` tokens: `(inputs, labels)`, each `batch * seq`.
pub fn random_batch(stream: &[u32], batch: usize, seq: usize, rng: &mut Rng) -> Result<(Vec<u32>, Vec<u32>)> {
    if stream.len() < seq + 2 {
        bail!(
            "the corpus has {} tokens, fewer than one window of {}",
            stream.len(),
            seq + 1
        );
    }
    let mut inputs = Vec::with_capacity(batch * seq);
    let mut labels = Vec::with_capacity(batch * seq);
    for _ in 0..batch {
        let start = rng.below(stream.len() - seq);
        inputs.extend_from_slice(&stream[start..start + seq]);
        labels.extend_from_slice(&stream[start + 1..start + seq + 1]);
    }
    Ok((inputs, labels))
}

/// The first `max_windows` non-overlapping windows of the validation stream (fixed across steps).
pub fn val_windows(stream: &[u32], seq: usize, max_windows: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start + seq < stream.len() && out.len() < max_windows {
        out.push((
            stream[start..start + seq].to_vec(),
            stream[start + 1..start + seq + 1].to_vec(),
        ));
        start += seq;
    }
    out
}

/// Cross-entropy (nats/token) of the unigram distribution of `train` on `val` (add-one smoothing):
/// the baseline a model that ignores context would reach.
pub fn unigram_baseline(train: &[u32], val: &[u32], vocab: usize) -> f64 {
    let mut counts = vec![1.0f64; vocab];
    for &t in train {
        if let Some(c) = counts.get_mut(t as usize) {
            *c += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    let n = val.len().max(1) as f64;
    val.iter()
        .map(|&t| -(counts.get(t as usize).copied().unwrap_or(1.0) / total).ln())
        .sum::<f64>()
        / n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_shifted_by_one() {
        let s: Vec<u32> = (0..100).collect();
        let mut r = Rng(1);
        let (i, l) = random_batch(&s, 3, 10, &mut r).unwrap_or_default();
        assert_eq!(i.len(), 30);
        for k in 0..30 {
            assert_eq!(l[k], i[k] + 1);
        }
        let v = val_windows(&s, 10, 100);
        assert_eq!(v.len(), 9);
        assert_eq!(v[1].0[0], 10);
    }

    #[test]
    fn unigram_baseline_of_uniform_text_is_log_vocab() {
        let s: Vec<u32> = (0..4000).map(|i| i % 4).collect();
        let b = unigram_baseline(&s, &s, 4);
        assert!((b - 4f64.ln()).abs() < 1e-6);
    }
}
