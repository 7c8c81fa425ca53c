//! The generation loop: prefill the prompt, then sample and decode one token at a time, streaming text.

use std::time::Instant;

use anyhow::{bail, Result};
use bitnet_model::{BitNetModel, InferenceState, LogitsWanted};
use bitnet_tokenizer::Tokenizer;

use crate::decoding::Decoding;
use crate::sampler::SamplerConfig;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// `-n`: the most new tokens.
    pub max_new_tokens: usize,
    /// `--ignore-eos`: keep going past end-of-sequence / end-of-turn tokens.
    pub ignore_eos: bool,
    pub sampler: SamplerConfig,
    /// Stop strings: generation ends before the first occurrence of any of them (not shown).
    pub stop: Vec<String>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-sequence or end-of-turn token (not printed).
    EndOfSequence,
    /// A stop string (not printed).
    StopString,
    /// `max_new_tokens` reached.
    Length,
    /// The KV cache is full.
    ContextFull,
    /// The caller asked to stop (or the client went away).
    Cancelled,
}

impl StopReason {
    /// OpenAI's `finish_reason`: "stop" for a natural end, "length" for a limit.
    pub fn openai_name(self) -> &'static str {
        match self {
            StopReason::EndOfSequence | StopReason::StopString | StopReason::Cancelled => "stop",
            StopReason::Length | StopReason::ContextFull => "length",
        }
    }
}

/// Timings and counts of one generation.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    pub stop: StopReason,
}

impl GenerationStats {
    pub fn prefill_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-9)
    }
    /// Tokens per second after the first (the first comes from the prefill logits).
    pub fn decode_tps(&self) -> f64 {
        self.new_tokens.saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

/// Generates after `prompt`, calling `on_text(id, text)` for each new token with the text it completes
/// (possibly empty while a UTF-8 character is split across tokens or text may begin a stop string;
/// `id` is `u32::MAX` for text released at the end). `on_text` returns false to stop.
/// The prompt continues `state` from `state.pos` (so a caller may keep a shared prefix in the cache).
/// Returns the new token ids (stop token excluded).
pub fn generate(
    model: &BitNetModel,
    tok: &Tokenizer,
    state: &mut InferenceState,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_text: impl FnMut(u32, &str) -> bool,
) -> Result<(Vec<u32>, GenerationStats)> {
    if prompt.is_empty() {
        bail!("the prompt is empty (no tokens and no BOS)");
    }
    let mut d = Decoding::new(tok, opts, prompt);
    let t0 = Instant::now();
    let mut logits = model.forward(prompt, state, LogitsWanted::Last)?.to_vec();
    let prefill_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut out = Vec::new();
    let mut stop = StopReason::Length;
    while !d.exhausted() {
        let step = d.step(&logits, state.pos < state.cache.capacity())?;
        if let Some(id) = step.token {
            out.push(id);
        }
        if !on_text(step.token.unwrap_or(u32::MAX), &step.text) {
            stop = StopReason::Cancelled;
            break;
        }
        if let Some(r) = step.finished {
            stop = r;
            break;
        }
        let Some(id) = step.token else { break };
        logits.copy_from_slice(model.forward(&[id], state, LogitsWanted::Last)?);
    }
    let stats = GenerationStats {
        prompt_tokens: prompt.len(),
        new_tokens: out.len(),
        prefill_secs,
        decode_secs: t1.elapsed().as_secs_f64(),
        stop,
    };
    Ok((out, stats))
}
