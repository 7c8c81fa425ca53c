//! KL divergence between a base model's and another model's (or setting's) next-token distributions,
//! like llama-perplexity's `--kl-divergence-base` / `--kl-divergence`.
//!
//! The base run saves the log-probabilities of every scored position. Our file format (not llama.cpp's):
//!
//! ```text
//! magic "BNKLBASE" | version u32 = 1 | n_ctx u32 | n_vocab u32 | n_chunks u32 | n_tokens u32
//! tokens u32[n_tokens] | then per chunk, per scored position: f32 log-softmax[n_vocab]
//! ```
//!
//! Values are kept in f32 (not quantized to 16 bits as llama.cpp does) so that a model compared with
//! itself gives a KL of exactly 0 and small divergences are not buried in storage error; the file takes
//! `4 * n_vocab` bytes per scored token.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::perplexity::{log_softmax, scored_per_chunk, NllStats};

const MAGIC: &[u8; 8] = b"BNKLBASE";
const VERSION: u32 = 1;

/// Header of a base file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseHeader {
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunks: usize,
    pub tokens: Vec<u32>,
}

impl BaseHeader {
    /// Bytes the whole file will take.
    pub fn file_bytes(&self) -> u64 {
        28 + 4 * self.tokens.len() as u64
            + 4 * (self.n_chunks * scored_per_chunk(self.n_ctx)) as u64 * self.n_vocab as u64
    }

    pub fn write(&self, w: &mut dyn Write) -> Result<()> {
        w.write_all(MAGIC)?;
        for v in [
            VERSION as usize,
            self.n_ctx,
            self.n_vocab,
            self.n_chunks,
            self.tokens.len(),
        ] {
            let v = u32::try_from(v).context("KL base header value does not fit u32")?;
            w.write_all(&v.to_le_bytes())?;
        }
        for t in &self.tokens {
            w.write_all(&t.to_le_bytes())?;
        }
        Ok(())
    }

    pub fn read(r: &mut dyn Read, label: &str) -> Result<Self> {
        Self::read_sized(r, label, None)
    }

    /// [`read`](Self::read) of a file of `file_len` bytes: the sizes the header claims are checked
    /// against the length before anything is allocated for them, so a corrupt or hostile header
    /// cannot make the reader allocate gigabytes.
    pub fn read_sized(r: &mut dyn Read, label: &str, file_len: Option<u64>) -> Result<Self> {
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)
            .with_context(|| format!("{label}: too short for a KL base file"))?;
        if &magic != MAGIC {
            bail!("{label}: not a bitnet KL base file (magic {magic:?}; write one with --kl-divergence-base)");
        }
        let mut u = || -> Result<usize> {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .with_context(|| format!("{label}: truncated header"))?;
            Ok(u32::from_le_bytes(b) as usize)
        };
        let version = u()?;
        if version != VERSION as usize {
            bail!("{label}: KL base file version {version}, this build reads {VERSION}");
        }
        let (n_ctx, n_vocab, n_chunks, n_tokens) = (u()?, u()?, u()?, u()?);
        if n_ctx < 4 || n_vocab == 0 || n_chunks == 0 || n_tokens < n_chunks.saturating_mul(n_ctx) || n_tokens > 1 << 30
        {
            bail!("{label}: implausible header (n_ctx {n_ctx}, vocab {n_vocab}, chunks {n_chunks}, tokens {n_tokens})");
        }
        if let Some(len) = file_len {
            // Saturating: every factor comes from the file, and their product can exceed u64.
            let need = (4 * n_chunks as u64)
                .saturating_mul(scored_per_chunk(n_ctx) as u64)
                .saturating_mul(n_vocab as u64)
                .saturating_add(28 + 4 * n_tokens as u64);
            if need > len {
                bail!(
                    "{label}: the header (n_ctx {n_ctx}, vocab {n_vocab}, chunks {n_chunks}, tokens {n_tokens}) \
                     describes {need} bytes but the file has {len}: truncated or not a KL base file"
                );
            }
        }
        let mut raw = vec![0u8; n_tokens * 4];
        r.read_exact(&mut raw)
            .with_context(|| format!("{label}: truncated token list"))?;
        let tokens = raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(BaseHeader {
            n_ctx,
            n_vocab,
            n_chunks,
            tokens,
        })
    }
}

/// Writes the scored rows of one chunk as f32 log-probabilities.
pub fn write_rows(w: &mut dyn Write, logits: &[f32], n_vocab: usize) -> Result<()> {
    let mut lp = vec![0f64; n_vocab];
    let mut buf = Vec::with_capacity(n_vocab * 4);
    for row in logits.chunks_exact(n_vocab) {
        log_softmax(row, &mut lp);
        buf.clear();
        lp.iter()
            .for_each(|&v| buf.extend_from_slice(&(v as f32).to_le_bytes()));
        w.write_all(&buf)?;
    }
    Ok(())
}

/// Reads one chunk's rows (`rows * n_vocab` log-probabilities).
pub fn read_rows(r: &mut dyn Read, rows: usize, n_vocab: usize, out: &mut Vec<f32>, label: &str) -> Result<()> {
    let mut raw = vec![0u8; rows * n_vocab * 4];
    r.read_exact(&mut raw)
        .with_context(|| format!("{label}: truncated (fewer chunks than its header says)"))?;
    out.clear();
    out.extend(
        raw.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    Ok(())
}

/// Accumulates KL divergence statistics, position by position.
#[derive(Clone, Debug, Default)]
pub struct KlStats {
    kld: Vec<f64>,
    same_top1: usize,
    base: NllStats,
    new: NllStats,
}

/// Summary of a comparison.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KlSummary {
    pub n: usize,
    pub ppl_base: f64,
    pub ppl_new: f64,
    /// `ln(PPL(new) / PPL(base))`.
    pub ln_ppl_ratio: f64,
    pub mean_kld: f64,
    pub mean_kld_stderr: f64,
    /// Percent of positions where both pick the same most likely token.
    pub same_top1_pct: f64,
    /// (label, value): max, 99.9%, 99%, 95%, 90%, median, 10%, 5%, 1%, min.
    pub kld_percentiles: Vec<(String, f64)>,
}

fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

impl KlStats {
    /// Adds one position: the base's log-probabilities, the new model's logits, the true next token.
    pub fn add(&mut self, base_logp: &[f32], new_logits: &[f32], target: u32, scratch: &mut Vec<f64>) {
        scratch.resize(new_logits.len(), 0.0);
        log_softmax(new_logits, scratch);
        let mut kl = 0f64;
        for (&b, &n) in base_logp.iter().zip(scratch.iter()) {
            let b = b as f64;
            if b > f64::NEG_INFINITY {
                kl += b.exp() * (b - n);
            }
        }
        self.kld.push(kl.max(0.0));
        if argmax(base_logp) == argmax(new_logits) {
            self.same_top1 += 1;
        }
        self.base.add(-(base_logp[target as usize] as f64));
        self.new.add(-scratch[target as usize]);
    }

    pub fn summary(&self) -> KlSummary {
        let n = self.kld.len();
        let nf = n.max(1) as f64;
        let mean = self.kld.iter().sum::<f64>() / nf;
        let var = self.kld.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / nf;
        let mut sorted = self.kld.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| -> f64 {
            if sorted.is_empty() {
                return f64::NAN;
            }
            let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
            sorted[idx.min(sorted.len() - 1)]
        };
        let kld_percentiles = [
            ("max", 100.0),
            ("99.9%", 99.9),
            ("99.0%", 99.0),
            ("95.0%", 95.0),
            ("90.0%", 90.0),
            ("median", 50.0),
            ("10.0%", 10.0),
            ("5.0%", 5.0),
            ("1.0%", 1.0),
            ("min", 0.0),
        ]
        .iter()
        .map(|(l, p)| (l.to_string(), pct(*p)))
        .collect();
        KlSummary {
            n,
            ppl_base: self.base.ppl(),
            ppl_new: self.new.ppl(),
            ln_ppl_ratio: (self.new.sum - self.base.sum) / nf,
            mean_kld: mean,
            mean_kld_stderr: if n > 1 { (var / (nf - 1.0)).sqrt() } else { f64::NAN },
            same_top1_pct: 100.0 * self.same_top1 as f64 / nf,
            kld_percentiles,
        }
    }
}

/// Opens a base file for reading.
pub fn open_base(path: &Path) -> Result<(BaseHeader, std::io::BufReader<std::fs::File>)> {
    let f = std::fs::File::open(path).with_context(|| format!("opening KL base file {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let h = BaseHeader::read_sized(&mut r, &path.display().to_string(), Some(len))?;
    Ok((h, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_have_zero_kl_and_full_agreement() {
        let logits = [1.0f32, 2.0, 0.5, -1.0];
        let mut lp = vec![0f64; 4];
        log_softmax(&logits, &mut lp);
        let base: Vec<f32> = lp.iter().map(|&v| v as f32).collect();
        let mut st = KlStats::default();
        let mut s = Vec::new();
        st.add(&base, &logits, 1, &mut s);
        let sum = st.summary();
        assert!(sum.mean_kld < 1e-7, "{}", sum.mean_kld);
        assert_eq!(sum.same_top1_pct, 100.0);
        // A different model: KL = sum p (log p - log q) > 0, and the top-1 may differ.
        let other = [2.0f32, 1.0, 0.5, -1.0];
        st.add(&base, &other, 1, &mut s);
        let sum = st.summary();
        assert!(sum.mean_kld > 0.01);
        assert_eq!(sum.same_top1_pct, 50.0);
    }

    #[test]
    fn header_round_trip_and_rejects() {
        let h = BaseHeader {
            n_ctx: 8,
            n_vocab: 5,
            n_chunks: 2,
            tokens: (0..17).collect(),
        };
        let mut b = Vec::new();
        h.write(&mut b).unwrap();
        assert_eq!(BaseHeader::read(&mut b.as_slice(), "x").unwrap(), h);
        let e = BaseHeader::read(&mut &b[..20], "f.bin").unwrap_err().to_string();
        // A header that claims far more than the file holds is refused before any allocation.
        let mut huge = b.clone();
        huge[24..28].copy_from_slice(&(1u32 << 29).to_le_bytes());
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let e2 = BaseHeader::read_sized(&mut huge.as_slice(), "h.bin", Some(huge.len() as u64))
            .unwrap_err()
            .to_string();
        assert!(
            e2.contains("describes") && e2.contains(&format!("file has {}", huge.len())),
            "{e2}"
        );
        assert!(e.contains("f.bin"), "{e}");
        let e = BaseHeader::read(&mut &b"NOTMAGIC...................."[..], "f.bin")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a bitnet KL base file"), "{e}");
    }
}
