//! `bitnet generate`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bitnet_engine::{generate, GenerateOptions, SamplerConfig};
use bitnet_model::InferenceState;

use crate::common::ModelArgs;

/// llama.cpp's repetition-penalty flags (shared by `generate` and `chat`).
#[derive(clap::Args, Debug, Clone)]
pub struct PenaltyArgs {
    /// Penalize repeated tokens (1.0 = off; llama.cpp's default).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at (0 = off, -1 = the whole context).
    #[arg(long = "repeat-last-n", default_value_t = 64, allow_negative_numbers = true)]
    pub repeat_last_n: i64,
    /// Subtract this from the logit of every token already present (0 = off).
    #[arg(long = "presence-penalty", default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Subtract this times the count of each token already present (0 = off).
    #[arg(long = "frequency-penalty", default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
}

impl PenaltyArgs {
    /// Sets the penalty fields of `c`; `ctx` is what `--repeat-last-n -1` means.
    pub fn apply(&self, c: SamplerConfig, ctx: usize) -> SamplerConfig {
        SamplerConfig {
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: if self.repeat_last_n < 0 {
                ctx
            } else {
                self.repeat_last_n as usize
            },
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            ..c
        }
    }
}

/// llama.cpp's sampling flags (shared by `generate` and `chat`).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Random seed (default: from the clock; printed so the run can be repeated).
    #[arg(short = 's', long = "seed")]
    pub seed: Option<u64>,
    /// Temperature; 0 = greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k sampling (0 = off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (nucleus) sampling (1.0 = off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p sampling (0 = off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    #[command(flatten)]
    pub penalties: PenaltyArgs,
}

impl SamplingArgs {
    /// `--seed`, or one from the clock.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        })
    }

    /// The sampler these flags describe, validated; `ctx` is what `--repeat-last-n -1` means.
    pub fn config(&self, seed: u64, ctx: usize) -> Result<SamplerConfig> {
        let c = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            seed,
            ..self.penalties.apply(SamplerConfig::default(), ctx)
        };
        c.validate().map_err(anyhow::Error::msg)?;
        Ok(c)
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt text.
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Number of tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Context size (default: the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop when the text contains this string (not printed); repeatable.
    #[arg(long = "stop", short = 'r', visible_alias = "reverse-prompt")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Do not add the BOS token before the prompt.
    #[arg(long = "no-bos")]
    pub no_bos: bool,
    /// Do not echo the prompt before the generated text.
    #[arg(long = "no-display-prompt")]
    pub no_display_prompt: bool,
}

pub fn run(a: Args) -> Result<()> {
    let prompt = match (&a.prompt, &a.file) {
        (Some(_), Some(_)) => bail!("give either -p or -f, not both"),
        (Some(p), None) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading prompt file {}", f.display()))?
        }
        (None, None) => String::new(),
    };
    // Reject bad sampling flags before spending time on loading.
    a.sampling.config(0, usize::MAX)?;
    let (model, tok) = a.model.load_language_model("generate")?;
    let ids = tok.encode(&prompt, !a.no_bos && tok.add_bos_default())?;
    let ctx = a.ctx_size.unwrap_or(model.cfg.context_length.min(4096)).max(1);
    if ids.len() >= ctx {
        bail!(
            "the prompt has {} tokens but the context holds {ctx} (raise -c)",
            ids.len()
        );
    }
    let seed = a.sampling.seed();
    eprintln!("seed {seed}, prompt {} tokens, context {ctx}", ids.len());
    let opts = GenerateOptions {
        max_new_tokens: a.n_predict,
        ignore_eos: a.ignore_eos,
        stop: a.stop.clone(),
        sampler: a.sampling.config(seed, ctx)?,
    };
    let mut state = InferenceState::try_new(&model, ctx)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !a.no_display_prompt {
        write!(out, "{prompt}")?;
        out.flush()?;
    }
    let (_, stats) = generate(&model, &tok, &mut state, &ids, &opts, |_, text| {
        // A closed pipe (e.g. `| head`) ends generation instead of failing.
        write!(out, "{text}").and_then(|_| out.flush()).is_ok()
    })?;
    writeln!(out).ok();
    eprintln!(
        "prompt: {} tokens in {:.3} s ({:.1} t/s); generated: {} tokens in {:.3} s ({:.1} t/s); stop: {:?}",
        stats.prompt_tokens,
        stats.prefill_secs,
        stats.prefill_tps(),
        stats.new_tokens,
        stats.decode_secs,
        stats.decode_tps(),
        stats.stop
    );
    Ok(())
}
