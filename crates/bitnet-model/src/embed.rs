//! Embeddings: turning a text into one vector with an embedding model (BitNet embedding models on
//! a Qwen3 backbone). The model runs as a causal decoder; its final-normed hidden states are pooled
//! (the last token, the appended EOS, by default; mean or first where the file says so) and
//! L2-normalised. Long inputs are evaluated in chunks that continue one KV cache, so the pooled
//! vector is the same whatever the chunk size (up to f32 summation order).

use anyhow::{bail, Result};
use bitnet_tokenizer::Tokenizer;

use crate::arch::Pooling;
use crate::bitnet::{BitNetModel, InferenceState, LogitsWanted};

/// Accumulates pooled hidden states over the chunks of one input.
#[derive(Clone, Debug)]
pub struct Pooler {
    pooling: Pooling,
    sum: Vec<f64>,
    first: Vec<f32>,
    last: Vec<f32>,
    n: usize,
}

impl Pooler {
    pub fn new(pooling: Pooling, hidden: usize) -> Self {
        Pooler {
            pooling,
            sum: vec![0.0; if pooling == Pooling::Mean { hidden } else { 0 }],
            first: Vec::new(),
            last: vec![0.0; hidden],
            n: 0,
        }
    }

    /// Adds `rows` (final-normed hidden states, `[n, hidden]`) of the next tokens.
    pub fn push(&mut self, rows: &[f32]) {
        let h = self.last.len();
        if h == 0 || rows.len() < h {
            return;
        }
        if self.n == 0 {
            self.first = rows[..h].to_vec();
        }
        if self.pooling == Pooling::Mean {
            for r in rows.chunks_exact(h) {
                for (s, &v) in self.sum.iter_mut().zip(r) {
                    *s += f64::from(v);
                }
            }
        }
        self.last.copy_from_slice(&rows[rows.len() - h..]);
        self.n += rows.len() / h;
    }

    /// Tokens pooled so far.
    pub fn tokens(&self) -> usize {
        self.n
    }

    /// The pooled vector (not normalised).
    pub fn finish(self) -> Vec<f32> {
        match self.pooling {
            Pooling::Last => self.last,
            Pooling::Cls => self.first,
            Pooling::Mean => {
                let n = self.n.max(1) as f64;
                self.sum.iter().map(|&s| (s / n) as f32).collect()
            }
        }
    }
}

/// Scales `v` to unit L2 norm (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Keeps the first `dims` values (Matryoshka truncation); the caller normalises afterwards.
pub fn truncate(v: &mut Vec<f32>, dims: Option<usize>) -> Result<()> {
    if let Some(d) = dims {
        if d == 0 || d > v.len() {
            bail!("dimensions = {d} is out of range (1..={} for this model)", v.len());
        }
        v.truncate(d);
    }
    Ok(())
}

/// The token ids an embedding model reads for `text`: BOS when the tokenizer adds one, the text,
/// then the token the tokenizer appends (EOS for BitNet embedding models, the token they pool).
pub fn input_ids(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut ids = tok.encode(text, tok.add_bos_default())?;
    ids.extend(tok.appended_token());
    Ok(ids)
}

impl BitNetModel {
    /// The pooled, not yet normalised, embedding of `ids`, evaluated `chunk` tokens at a time in
    /// `state` (which is reset first and must hold `ids.len()` positions).
    pub fn embed_ids(
        &self,
        ids: &[u32],
        state: &mut InferenceState,
        pooling: Pooling,
        chunk: usize,
    ) -> Result<Vec<f32>> {
        if ids.is_empty() {
            bail!("nothing to embed: the input has no tokens");
        }
        state.reset();
        let mut pooler = Pooler::new(pooling, self.cfg.hidden_size);
        for part in ids.chunks(chunk.max(1)) {
            let rows = self.forward(part, state, LogitsWanted::Hidden)?;
            pooler.push(rows);
        }
        Ok(pooler.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_over_chunks_equals_pooling_at_once() {
        let rows: Vec<f32> = (0..12).map(|i| i as f32).collect(); // 4 tokens of width 3
        for p in [Pooling::Mean, Pooling::Last, Pooling::Cls] {
            let mut a = Pooler::new(p, 3);
            a.push(&rows);
            let mut b = Pooler::new(p, 3);
            b.push(&rows[..3]);
            b.push(&rows[3..]);
            assert_eq!(b.tokens(), 4);
            assert_eq!(a.finish(), b.finish(), "{p}");
        }
        let mut m = Pooler::new(Pooling::Mean, 3);
        m.push(&rows);
        assert_eq!(m.finish(), [4.5, 5.5, 6.5]);
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut v = vec![1.0; 8];
        assert!(truncate(&mut v, Some(9)).is_err() && truncate(&mut v, Some(0)).is_err());
        truncate(&mut v, Some(4)).expect("4 dims");
        assert_eq!(v.len(), 4);
    }
}
