//! Turning what a user sends into the token ids the model reads, in one place for `bitnet chat`,
//! `bitnet generate` and the server: a conversation through the model's chat template, a plain
//! prompt as `bitnet generate` encodes it, and the reuse of the KV cache across the turns of a
//! conversation ([`ConversationCache`]).

use std::fmt;

use bitnet_model::InferenceState;
use bitnet_tokenizer::{ChatMessage, ChatTemplate, Tokenizer};

/// Why a prompt could not be built.
#[derive(Debug)]
pub enum PromptError {
    /// The chat template failed (or tripped a rendering limit) for these messages.
    Template(String),
    /// The tokenizer rejected the text.
    Tokenize(String),
}

impl fmt::Display for PromptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptError::Template(e) => write!(f, "{e}"),
            PromptError::Tokenize(e) => write!(f, "tokenizing the prompt: {e}"),
        }
    }
}

impl std::error::Error for PromptError {}

/// The ids of a conversation rendered with `template`, ready for the assistant's answer. Like
/// transformers' `apply_chat_template(tokenize=True)`, nothing is added to what the template
/// writes: templates that want BOS write `{{ bos_token }}` (2B-4T's, Llama-3's), and those that do
/// not (Falcon3's) get none.
pub fn chat_prompt(
    tok: &Tokenizer,
    template: &ChatTemplate,
    messages: &[ChatMessage],
) -> Result<Vec<u32>, PromptError> {
    let text = template
        .render_for(tok, messages, true)
        .map_err(|e| PromptError::Template(e.to_string()))?;
    tok.encode(&text, false)
        .map_err(|e| PromptError::Tokenize(e.to_string()))
}

/// The ids of a plain prompt: BOS when the model wants one, as `bitnet generate` does.
pub fn text_prompt(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, PromptError> {
    tok.encode(text, tok.add_bos_default())
        .map_err(|e| PromptError::Tokenize(e.to_string()))
}

/// The tokens an [`InferenceState`]'s KV cache holds for a conversation, so the next turn only
/// evaluates what changed: the earlier turns stay cached, and an edited or regenerated turn drops
/// the cache back to the first token that differs.
#[derive(Debug, Default)]
pub struct ConversationCache {
    cached: Vec<u32>,
}

impl ConversationCache {
    /// Forgets everything (`/clear`).
    pub fn clear(&mut self, state: &mut InferenceState) {
        self.cached.clear();
        state.truncate(0);
    }

    /// Keeps the longest prefix of the cache that `ids` starts with (at least the last token of
    /// `ids` is left to evaluate, since its logits are needed), truncates `state` to it, and
    /// returns its length: the caller evaluates `ids[returned..]`.
    pub fn reuse(&mut self, ids: &[u32], state: &mut InferenceState) -> usize {
        let common = self
            .cached
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len().saturating_sub(1));
        state.truncate(common);
        self.cached.truncate(common);
        common
    }

    /// Records that the cache now holds `prompt` then `generated`, up to `state.pos` tokens (the
    /// last generated token is not evaluated yet).
    pub fn record(&mut self, prompt: &[u32], generated: &[u32], state: &InferenceState) {
        self.cached.clear();
        self.cached.extend_from_slice(prompt);
        self.cached.extend_from_slice(generated);
        self.cached.truncate(state.pos);
    }
}
