//! Choosing the next token from logits: greedy, or temperature with top-k / top-p / min-p filtering
//! (llama.cpp's order: top-k, top-p, min-p, then temperature).

use crate::rng::Rng;

/// Sampling settings, named like llama.cpp's flags.
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// `--temp`; 0 (or less) means greedy.
    pub temperature: f32,
    /// `--top-k`; 0 disables.
    pub top_k: usize,
    /// `--top-p`; 1.0 disables.
    pub top_p: f32,
    /// `--min-p`; 0 disables.
    pub min_p: f32,
    /// `--seed`.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: 0,
        }
    }
}

/// A sampler with its own random stream (same seed, same choices).
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
    cand: Vec<(u32, f32)>,
}

/// Index of the largest logit (the first one on ties); NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut bv = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > bv {
            bv = v;
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Self {
        let rng = Rng::new(cfg.seed);
        Sampler {
            cfg,
            rng,
            cand: Vec::new(),
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Picks a token id from one position's logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let c = &self.cfg;
        if c.temperature <= 0.0 || logits.len() <= 1 {
            return argmax(logits);
        }
        self.cand.clear();
        self.cand.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| (i as u32, v)),
        );
        if self.cand.is_empty() {
            return argmax(logits);
        }
        // Sort descending by logit (stable on ids for determinism).
        let k = if c.top_k == 0 {
            self.cand.len()
        } else {
            c.top_k.min(self.cand.len())
        };
        if k < self.cand.len() {
            self.cand
                .select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            self.cand.truncate(k);
        }
        self.cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        // Probabilities at temperature 1 for top-p / min-p, as llama.cpp does.
        let max = self.cand[0].1;
        let probs: Vec<f64> = self.cand.iter().map(|&(_, v)| ((v - max) as f64).exp()).collect();
        let total: f64 = probs.iter().sum();
        let mut keep = self.cand.len();
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, p) in probs.iter().enumerate() {
                acc += p / total;
                if acc >= c.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if c.min_p > 0.0 {
            let thresh = c.min_p as f64 * probs[0];
            keep = keep.min(probs.iter().take_while(|&&p| p >= thresh).count().max(1));
        }
        self.cand.truncate(keep.max(1));
        let inv_t = 1.0 / c.temperature as f64;
        let weights: Vec<f64> = self
            .cand
            .iter()
            .map(|&(_, v)| ((v - max) as f64 * inv_t).exp())
            .collect();
        let sum: f64 = weights.iter().sum();
        let mut r = self.rng.next_f64() * sum;
        for (i, w) in weights.iter().enumerate() {
            r -= w;
            if r < 0.0 {
                return self.cand[i].0;
            }
        }
        self.cand[self.cand.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_reproduces() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 17) as f32 * 0.3).collect();
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits), argmax(&logits));
        let cfg = SamplerConfig {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(cfg.clone());
            (0..50).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(cfg);
            (0..50).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
        assert!(
            a.iter().any(|&t| t != a[0]),
            "temperature 1.5 over 100 tokens should vary"
        );
    }

    #[test]
    fn never_picks_filtered_tokens() {
        let mut logits = vec![-10.0f32; 50];
        logits[3] = 5.0;
        logits[9] = 4.9;
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            min_p: 0.0,
            seed: 1,
        });
        for _ in 0..200 {
            let t = s.sample(&logits);
            assert!(t == 3 || t == 9);
        }
    }
}
