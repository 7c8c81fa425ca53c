//! Chat templates (from a model's GGUF metadata or `tokenizer_config.json`): parsing, and rendering
//! a conversation under the engine's limits.
//!
//! Rendering runs in this process here, where libFuzzer's `-malloc_limit_mb` turns a runaway
//! allocation into a finding; `bitnet chat` and `bitnet serve` render in a memory-capped worker
//! process as well (see `bitnet_tokenizer::chat_template::sandbox`).

use bitnet_tokenizer::chat_template::RenderLimits;
use bitnet_tokenizer::{ChatMessage, ChatTemplate};

/// Input: the template's source (invalid UTF-8 is replaced, as a loader would refuse it anyway).
pub fn run(data: &[u8]) {
    let src = String::from_utf8_lossy(data);
    let Ok(t) = ChatTemplate::new("fuzz", &src) else {
        return;
    };
    let t = t.with_limits(RenderLimits {
        fuel: 50_000,
        max_output_bytes: 64 << 10,
    });
    let conversation = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi <|eot_id|> there"),
        ChatMessage::new("assistant", "Hello!"),
        ChatMessage::new("user", "{{ 7*7 }} {% raw %}"),
    ];
    for n in [0, 1, conversation.len()] {
        let _ = t.render(&conversation[..n], true, "<s>", "</s>");
    }
}
