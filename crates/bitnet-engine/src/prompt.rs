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
    // Only the template's own text may produce control tokens: a user who writes `<|eot_id|>` in a
    // message must not end their turn and forge the next one (OpenAI's API treats it as text too).
    let spans = content_spans(template, tok, messages, &text)?;
    tok.encode_with_plain_spans(&text, &spans, false)
        .map_err(|e| PromptError::Tokenize(e.to_string()))
}

/// Where each message's content lies in the rendered prompt `text`, found by rendering the template
/// again with a unique marker in place of each content: the marker render gives the template's own
/// pieces, and walking the real render piece by piece places each content (as written, or trimmed, as
/// templates often do) between them. When the walk fails (a template that transforms content) and a
/// message spells a special token, the prompt is refused rather than guessed.
fn content_spans(
    template: &ChatTemplate,
    tok: &Tokenizer,
    messages: &[ChatMessage],
    text: &str,
) -> Result<Vec<std::ops::Range<usize>>, PromptError> {
    let forged: Vec<usize> = (0..messages.len())
        .filter(|&i| tok.has_special_text(&messages[i].content))
        .collect();
    if forged.is_empty() {
        return Ok(Vec::new());
    }
    let marker = |i: usize| format!("\u{E000}bitnet-message-{i}\u{E001}");
    let marked: Vec<ChatMessage> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| ChatMessage::new(m.role.clone(), marker(i)))
        .collect();
    let refuse = || {
        PromptError::Template(format!(
            "message {} spells a special token, and the chat template transforms message content, so it \
             cannot be kept as plain text; remove the special-token text from the message",
            forged[0]
        ))
    };
    let Ok(skeleton) = template.render_for(tok, &marked, true) else {
        return Err(refuse());
    };
    // Split the skeleton into template pieces and the message each marker stands for.
    let mut parts: Vec<(String, Option<usize>)> = Vec::new();
    let mut rest = skeleton.as_str();
    while let Some(a) = rest.find("\u{E000}bitnet-message-") {
        let after = &rest[a + "\u{E000}bitnet-message-".len()..];
        let Some(b) = after.find('\u{E001}') else { break };
        let Ok(i) = after[..b].parse::<usize>() else { break };
        parts.push((rest[..a].to_string(), Some(i)));
        rest = &after[b + '\u{E001}'.len_utf8()..];
    }
    parts.push((rest.to_string(), None));
    let mut spans = Vec::new();
    let mut at = 0usize;
    for (k, (piece, msg)) in parts.iter().enumerate() {
        if !text[at..].starts_with(piece.as_str()) {
            return Err(refuse());
        }
        at += piece.len();
        let Some(i) = *msg else { continue };
        let next = parts.get(k + 1).map_or("", |p| p.0.as_str());
        let c = messages[i].content.as_str();
        let candidates = [c, c.trim(), c.trim_start(), c.trim_end()];
        let Some(found) = candidates
            .iter()
            .find(|cand| text[at..].starts_with(**cand) && text[at + cand.len()..].starts_with(next))
        else {
            return Err(refuse());
        };
        spans.push(at..at + found.len());
        at += found.len();
    }
    if at != text.len() {
        return Err(refuse());
    }
    Ok(spans)
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
