//! Choosing the next token from logits, in llama.cpp's order: repetition / presence / frequency penalties
//! over the last `repeat_last_n` tokens, then top-k, top-p, min-p, and temperature (0 = greedy after the
//! penalties).

use std::collections::{HashMap, VecDeque};

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
    /// `--repeat-penalty`: logits of recent tokens are divided by it (multiplied when negative); 1.0 disables.
    pub repeat_penalty: f32,
    /// `--repeat-last-n`: how many recent tokens (prompt included) the penalties look at; 0 disables them,
    /// `usize::MAX` means the whole context.
    pub repeat_last_n: usize,
    /// `--presence-penalty`: subtracted once from the logit of every recent token; 0 disables.
    pub presence_penalty: f32,
    /// `--frequency-penalty`: subtracted once per occurrence of a recent token; 0 disables.
    pub frequency_penalty: f32,
}

impl SamplerConfig {
    /// Greedy decoding with no penalties (what `--temp 0` gives with the other flags at their defaults).
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        }
    }

    fn penalties_active(&self) -> bool {
        self.repeat_last_n > 0
            && (self.repeat_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0)
    }

    /// Checks every field's range; the message names the llama.cpp flag.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() {
            return Err(format!("--temp must be a finite number (got {})", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("--top-p must be in [0, 1] (got {})", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("--min-p must be in [0, 1] (got {})", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(format!(
                "--repeat-penalty must be a positive number (got {})",
                self.repeat_penalty
            ));
        }
        if !(self.presence_penalty.is_finite() && (-2.0..=2.0).contains(&self.presence_penalty)) {
            return Err(format!(
                "--presence-penalty must be in [-2, 2] (got {})",
                self.presence_penalty
            ));
        }
        if !(self.frequency_penalty.is_finite() && (-2.0..=2.0).contains(&self.frequency_penalty)) {
            return Err(format!(
                "--frequency-penalty must be in [-2, 2] (got {})",
                self.frequency_penalty
            ));
        }
        Ok(())
    }
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: 0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

/// A sampler with its own random stream (same seed, same choices).
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
    cand: Vec<(u32, f32)>,
    /// The last `repeat_last_n` accepted tokens, for the penalties.
    history: VecDeque<u32>,
    /// Penalized copy of the logits (only used when a penalty is active).
    scratch: Vec<f32>,
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
            history: VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    /// Records a token of the sequence (prompt or generated) for the penalties.
    pub fn accept(&mut self, id: u32) {
        let n = self.cfg.repeat_last_n;
        if n == 0 {
            return;
        }
        if self.history.len() >= n {
            self.history.pop_front();
        }
        self.history.push_back(id);
    }

    /// Forgets the accepted tokens (keeps the random stream where it is).
    pub fn clear_history(&mut self) {
        self.history.clear();
    }

    /// Applies the repetition, presence and frequency penalties to `logits` in place, as llama.cpp does:
    /// a positive logit is divided by `repeat_penalty`, a negative one multiplied, then
    /// `count * frequency_penalty + presence_penalty` is subtracted.
    pub fn apply_penalties(&self, logits: &mut [f32]) {
        let c = &self.cfg;
        if !c.penalties_active() || self.history.is_empty() {
            return;
        }
        let mut counts: HashMap<u32, u32> = HashMap::with_capacity(self.history.len());
        for &t in &self.history {
            *counts.entry(t).or_insert(0) += 1;
        }
        for (&t, &n) in &counts {
            let Some(l) = logits.get_mut(t as usize) else { continue };
            if *l <= 0.0 {
                *l *= c.repeat_penalty;
            } else {
                *l /= c.repeat_penalty;
            }
            *l -= n as f32 * c.frequency_penalty + c.presence_penalty;
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Picks a token id from one position's logits (penalties first when active). Does not
    /// [`accept`](Self::accept) the token: the caller does, once it is part of the sequence.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.penalties_active() && !self.history.is_empty() {
            let mut buf = std::mem::take(&mut self.scratch);
            buf.clear();
            buf.extend_from_slice(logits);
            self.apply_penalties(&mut buf);
            let id = self.sample_filtered(&buf);
            self.scratch = buf;
            id
        } else {
            self.sample_filtered(logits)
        }
    }

    fn sample_filtered(&mut self, logits: &[f32]) -> u32 {
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
            ..Default::default()
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
            ..Default::default()
        });
        for _ in 0..200 {
            let t = s.sample(&logits);
            assert!(t == 3 || t == 9);
        }
    }

    #[test]
    fn penalties_follow_llama_cpp_formula() {
        let mut s = Sampler::new(SamplerConfig {
            repeat_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            repeat_last_n: 3,
            ..SamplerConfig::greedy()
        });
        for t in [9, 1, 1, 2] {
            s.accept(t); // 9 falls out of the window of 3
        }
        let mut l = vec![4.0f32, 4.0, -4.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0];
        s.apply_penalties(&mut l);
        assert_eq!(l[0], 4.0);
        assert_eq!(l[1], 4.0 / 2.0 - 2.0 * 0.25 - 0.5);
        assert_eq!(l[2], -4.0 * 2.0 - 0.25 - 0.5);
        assert_eq!(l[9], 3.0, "token 9 left the window");
    }

    #[test]
    fn repeat_penalty_changes_the_greedy_choice() {
        let logits = [1.0f32, 1.5, 0.2];
        let mut plain = Sampler::new(SamplerConfig::greedy());
        plain.accept(1);
        assert_eq!(plain.sample(&logits), 1, "no penalty configured");
        let mut pen = Sampler::new(SamplerConfig {
            repeat_penalty: 2.0,
            ..SamplerConfig::greedy()
        });
        pen.accept(1);
        assert_eq!(pen.sample(&logits), 0, "1.5 / 2 < 1.0");
        pen.clear_history();
        assert_eq!(pen.sample(&logits), 1);
    }

    #[test]
    fn validate_names_the_flag() {
        let bad = SamplerConfig {
            top_p: 1.5,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("--top-p"));
        let bad = SamplerConfig {
            repeat_penalty: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("--repeat-penalty"));
        assert!(SamplerConfig::default().validate().is_ok());
    }
}
