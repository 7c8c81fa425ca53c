//! `bitnet bench`: llama-bench-style throughput of the forward pass alone.
//!
//! Tests (each repeated `-r` times after one untimed warm-up, reported as mean ± std of tokens/s):
//! * `ppP`: one forward pass over `P` random token ids from an empty cache (prefill);
//! * `tgN`: `N` single-token steps after a 16-token prefix (decode);
//! * `tgN @ dD`: the same after a `D`-token prefix (`--ctx-depth`, long-context decode);
//! * `tgN x bB`: `N` steps of `B` sequences decoded together with `forward_batch` (aggregate t/s).
//!
//! Token ids are random (tokenization and sampling are not timed). With `--membw` the machine's read
//! bandwidth is measured in the same run, and each decode test also reports its effective bandwidth:
//! the weight bytes one token reads times tokens/s.

use std::time::Instant;

use anyhow::{bail, Result};
use bitnet_engine::rng::Rng;
use bitnet_kernels::{pool, simd_level};
use bitnet_model::{BitNetModel, InferenceState, LogitsWanted, Workspace};
use serde_json::json;

use crate::common::ModelArgs;

/// Untimed prefix before the `tg` tests (so that decode does not start at position 0).
const PREFIX: usize = 16;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length of the prefill test (0: skip it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Tokens of the decode tests (0: skip them).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Timed repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Also decode after a prompt of this many tokens (long-context decode).
    #[arg(short = 'd', long = "ctx-depth")]
    pub ctx_depth: Option<usize>,
    /// Also decode this many sequences together with `forward_batch` (aggregate tokens/s).
    #[arg(short = 'b', long = "batch")]
    pub batch: Option<usize>,
    /// Measure the machine's read bandwidth and report each decode test's effective bandwidth.
    #[arg(long = "membw")]
    pub membw: bool,
    /// Output format: md (a markdown table) or json.
    #[arg(short = 'o', long = "output", default_value = "md", value_parser = ["md", "json"])]
    pub output: String,
    /// Seed of the random token ids.
    #[arg(long = "seed", default_value_t = 1)]
    pub seed: u64,
}

struct TestResult {
    name: String,
    /// Tokens per timed run (for the aggregate figure).
    samples: Vec<f64>,
    /// Weight bytes read per decode step (None for prefill).
    bytes_per_step: Option<f64>,
    /// Tokens per decode step (1, or the batch size).
    tokens_per_step: usize,
}

impl TestResult {
    fn mean_std(&self) -> (f64, f64) {
        mean_std(&self.samples)
    }
}

fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn time<F: FnMut() -> Result<()>>(mut f: F) -> Result<f64> {
    let t0 = Instant::now();
    f()?;
    Ok(t0.elapsed().as_secs_f64())
}

/// More sequences than any batch worth measuring; each gets its own KV cache.
const MAX_BATCH: usize = 1024;

pub fn run(a: Args) -> Result<()> {
    if a.reps == 0 {
        bail!("-r/--repetitions must be at least 1");
    }
    if a.batch.is_some_and(|b| b > MAX_BATCH) {
        bail!("-b/--batch is at most {MAX_BATCH} sequences");
    }
    if a.model.model.is_none() {
        bail!("bitnet bench needs a model (-m FILE); make one with `bitnet synth --shape 2b4t -o FILE.gguf`");
    }
    let t_load = Instant::now();
    let (m, _tok) = a.model.load_language_model("bench")?;
    let load_s = t_load.elapsed().as_secs_f64();
    let vocab = m.cfg.vocab_size;
    let mut rng = Rng::new(a.seed);
    // Arbitrary, repeatable token ids.
    let mut ids_of =
        |n: usize, vocab: usize| -> Vec<u32> { (0..n).map(|_| (rng.next_u64() % vocab as u64) as u32).collect() };
    let bytes_tok = BitNetModel::weight_bytes_per_token(&m);
    let mut results: Vec<TestResult> = Vec::new();
    let depth = a.ctx_depth.unwrap_or(0);
    // Saturating: absurd -n/-d values become a context too large to allocate (a clear error), not an overflow.
    let ctx = [
        a.n_prompt,
        PREFIX.saturating_add(a.n_gen),
        depth.saturating_add(a.n_gen),
    ]
    .into_iter()
    .max()
    .unwrap_or(1)
    .saturating_add(1);
    let mut st = InferenceState::try_new(&m, ctx)?;

    if a.n_prompt > 0 {
        let ids = ids_of(a.n_prompt, vocab);
        let mut samples = Vec::new();
        for rep in 0..=a.reps {
            st.reset();
            let dt = time(|| m.forward(&ids, &mut st, LogitsWanted::Last).map(|_| ()))?;
            if rep > 0 {
                samples.push(a.n_prompt as f64 / dt);
            }
        }
        eprintln!("pp{} done", a.n_prompt);
        results.push(TestResult {
            name: format!("pp{}", a.n_prompt),
            samples,
            bytes_per_step: None,
            tokens_per_step: 1,
        });
    }

    // Decode after a short prefix, and after `depth` tokens: the two alternate repetition by
    // repetition, so that the machine's drift (often 20-30% within minutes on shared hosts) touches
    // both alike, and their ratio is reported per pair.
    let mut depth_ratio = None;
    if a.n_gen > 0 {
        let mut decode_once = |pre: &[u32], steps: &[u32]| -> Result<f64> {
            st.reset();
            m.forward(pre, &mut st, LogitsWanted::None)?;
            let dt = time(|| {
                for &t in steps {
                    m.forward(&[t], &mut st, LogitsWanted::Last)?;
                }
                Ok(())
            })?;
            Ok(steps.len() as f64 / dt)
        };
        let (pre, steps) = (ids_of(PREFIX, vocab), ids_of(a.n_gen, vocab));
        let deep = (depth > 0).then(|| (ids_of(depth, vocab), ids_of(a.n_gen, vocab)));
        let (mut short, mut long, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..=a.reps {
            let s = decode_once(&pre, &steps)?;
            let l = match &deep {
                Some((p, t)) => Some(decode_once(p, t)?),
                None => None,
            };
            if rep > 0 {
                short.push(s);
                if let Some(l) = l {
                    long.push(l);
                    ratios.push(l / s);
                }
            }
        }
        let tg = format!("tg{}", a.n_gen);
        eprintln!("{tg} done");
        results.push(TestResult {
            name: tg.clone(),
            samples: short,
            bytes_per_step: Some(bytes_tok),
            tokens_per_step: 1,
        });
        if depth > 0 {
            results.push(TestResult {
                name: format!("{tg} @ d{depth}"),
                samples: long,
                bytes_per_step: Some(bytes_tok),
                tokens_per_step: 1,
            });
            depth_ratio = Some((format!("{tg} @ d{depth} / {tg}"), mean_std(&ratios)));
        }
        if let Some(b) = a.batch.filter(|&b| b > 0) {
            let mut states: Vec<InferenceState> = (0..b)
                .map(|_| InferenceState::try_new(&m, PREFIX.saturating_add(a.n_gen).saturating_add(1)))
                .collect::<Result<_>>()?;
            let mut ws = Workspace::new();
            let steps: Vec<Vec<u32>> = (0..a.n_gen).map(|_| ids_of(b, vocab)).collect();
            let pre: Vec<Vec<u32>> = (0..b).map(|_| ids_of(PREFIX, vocab)).collect();
            let mut samples = Vec::new();
            for rep in 0..=a.reps {
                for (s, p) in states.iter_mut().zip(&pre) {
                    s.reset();
                    m.forward(p, s, LogitsWanted::None)?;
                }
                let mut refs: Vec<&mut InferenceState> = states.iter_mut().collect();
                let dt = time(|| {
                    for t in &steps {
                        m.forward_batch(t, &mut refs, &mut ws)?;
                    }
                    Ok(())
                })?;
                if rep > 0 {
                    samples.push((a.n_gen * b) as f64 / dt);
                }
            }
            eprintln!("batched decode done");
            results.push(TestResult {
                name: format!("tg{} x b{b}", a.n_gen),
                samples,
                bytes_per_step: Some(bytes_tok),
                tokens_per_step: b,
            });
        }
    }

    let membw = if a.membw {
        Some(bitnet_tools::membw::measure_read_bandwidth())
    } else {
        None
    };
    let model_name = a
        .model
        .model
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = a
        .model
        .model
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|md| md.len())
        .unwrap_or(0);
    let params = BitNetModel::param_count(&m);
    let backend = format!("CPU ({})", simd_level().name());
    let threads = pool::num_threads();
    let eff = |r: &TestResult| {
        r.bytes_per_step
            .map(|b| b * r.mean_std().0 / r.tokens_per_step as f64 / 1e9)
    };

    if a.output == "json" {
        let tests: Vec<_> = results
            .iter()
            .map(|r| {
                let (mean, std) = r.mean_std();
                json!({
                    "test": r.name,
                    "samples_ts": r.samples,
                    "avg_ts": mean,
                    "stddev_ts": std,
                    "weight_bytes_per_step": r.bytes_per_step,
                    "tokens_per_step": r.tokens_per_step,
                    "effective_gbs": eff(r),
                })
            })
            .collect();
        let out = json!({
            "model": model_name,
            "model_size_bytes": size,
            "params": params,
            "backend": backend,
            "threads": threads,
            "load_s": load_s,
            "repetitions": a.reps,
            "read_bandwidth_gbs": membw,
            "tests": tests,
            "depth_ratio": depth_ratio.as_ref().map(|(_, (mean, std))| json!({"mean": mean, "stddev": std})),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    let bw_col = membw.is_some();
    let mut hdr = "| model | size | params | backend | threads | test | t/s |".to_string();
    let mut sep = "| --- | ---: | ---: | --- | ---: | --- | ---: |".to_string();
    if bw_col {
        hdr.push_str(" eff. GB/s | % of read bw |");
        sep.push_str(" ---: | ---: |");
    }
    println!("{hdr}\n{sep}");
    for r in &results {
        let (mean, std) = r.mean_std();
        let mut line = format!(
            "| {model_name} | {:.2} GiB | {:.2} B | {backend} | {threads} | {} | {mean:.2} ± {std:.2} |",
            size as f64 / (1u64 << 30) as f64,
            params / 1e9,
            r.name
        );
        if let Some(bw) = membw {
            match eff(r) {
                Some(e) => line.push_str(&format!(" {e:.1} | {:.0}% |", 100.0 * e / bw)),
                None => line.push_str(" | |"),
            }
        }
        println!("{line}");
    }
    if let Some((name, (mean, std))) = &depth_ratio {
        println!("\n{name}: {mean:.3} ± {std:.3} (paired repetitions)");
    }
    if let Some(bw) = membw {
        println!(
            "\nread bandwidth ({threads} threads, best of 5 over 1 GiB): {bw:.1} GB/s; weights read per token: {:.3} GB",
            bytes_tok / 1e9
        );
    }
    eprintln!("load: {load_s:.2} s");
    Ok(())
}
