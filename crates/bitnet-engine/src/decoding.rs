//! One sequence's token-by-token decision making, shared by [`mod@crate::generate`] (one sequence) and the
//! batch [`crate::scheduler`] (many): sample from the logits, stop at EOS/EOT (never shown), at a stop
//! string (never shown), at the token limit or when the context is full, and turn ids into text that
//! never splits a UTF-8 character.

use anyhow::Result;
use bitnet_tokenizer::{StreamDecoder, Tokenizer};

use crate::generate::{GenerateOptions, StopReason};
use crate::sampler::Sampler;
use crate::stop::StopMatcher;

/// What one step decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The new token, when it is part of the output (None when the step ended on EOS/EOT).
    pub token: Option<u32>,
    /// Text to show now (possibly empty).
    pub text: String,
    /// Set when the sequence is over; otherwise `token` must be fed to the model next.
    pub finished: Option<StopReason>,
}

/// Sampling, stopping and detokenizing state of one sequence.
pub struct Decoding {
    sampler: Sampler,
    dec: StreamDecoder,
    stops: StopMatcher,
    stop_ids: Vec<u32>,
    max_new_tokens: usize,
    ignore_eos: bool,
    generated: usize,
}

impl Decoding {
    /// `prompt` is given to the penalties' history.
    pub fn new(tok: &Tokenizer, opts: &GenerateOptions, prompt: &[u32]) -> Self {
        let mut sampler = Sampler::new(opts.sampler.clone());
        for &t in prompt {
            sampler.accept(t);
        }
        Decoding {
            sampler,
            dec: StreamDecoder::new(tok),
            stops: StopMatcher::new(&opts.stop),
            stop_ids: tok.stop_ids().to_vec(),
            max_new_tokens: opts.max_new_tokens,
            ignore_eos: opts.ignore_eos,
            generated: 0,
        }
    }

    /// Tokens generated so far (stop tokens excluded).
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// True when no token may be generated at all (`max_new_tokens == 0`).
    pub fn exhausted(&self) -> bool {
        self.generated >= self.max_new_tokens
    }

    /// Decides the next token from `logits`. `context_left` says whether the model can take one more
    /// token after this one (false: this is the last that fits, so the sequence ends after it).
    pub fn step(&mut self, logits: &[f32], context_left: bool) -> Result<Step> {
        let id = self.sampler.sample(logits);
        if !self.ignore_eos && self.stop_ids.contains(&id) {
            return Ok(Step {
                token: None,
                text: self.flush(),
                finished: Some(StopReason::EndOfSequence),
            });
        }
        self.sampler.accept(id);
        self.generated += 1;
        let piece = self.dec.try_push(id)?.unwrap_or_default();
        let (mut text, hit) = self.stops.push(&piece);
        let finished = if hit {
            Some(StopReason::StopString)
        } else if self.generated >= self.max_new_tokens {
            Some(StopReason::Length)
        } else if !context_left {
            Some(StopReason::ContextFull)
        } else {
            None
        };
        if matches!(finished, Some(StopReason::Length | StopReason::ContextFull)) {
            text += &self.flush();
        }
        Ok(Step {
            token: Some(id),
            text,
            finished,
        })
    }

    /// Text still held back (a partial UTF-8 character, a possible stop-string start), for when the
    /// sequence ends for a reason the decoder does not see (cancelled).
    pub fn flush(&mut self) -> String {
        let rest = self.dec.flush();
        let (mut text, hit) = self.stops.push(&rest);
        if !hit {
            text += &self.stops.flush();
        }
        text
    }
}
