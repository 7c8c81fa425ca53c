//! Request bodies of the server's JSON routes: parsing, typing each route's request, validating
//! the sampling fields, and turning a chat request into prompt ids through the built-in template.

use std::sync::OnceLock;

use bitnet_engine::prompt::chat_prompt;
use bitnet_server::embeddings::EmbeddingRequest;
use bitnet_server::request::{
    parse_json_body, typed, ChatRequest, CompletionRequest, DetokenizeRequest, SamplingFields, TokenizeRequest,
};
use bitnet_tokenizer::{ChatMessage, ChatTemplate, Tokenizer};

use crate::{ScratchDir, MICRO_TOKENIZER_CONFIG, MICRO_TOKENIZER_JSON};

fn micro() -> Option<&'static (Tokenizer, ChatTemplate)> {
    static MICRO: OnceLock<Option<(Tokenizer, ChatTemplate)>> = OnceLock::new();
    MICRO
        .get_or_init(|| {
            let dir = ScratchDir::new("req").ok()?;
            dir.write("tokenizer.json", MICRO_TOKENIZER_JSON).ok()?;
            dir.write("tokenizer_config.json", MICRO_TOKENIZER_CONFIG.as_bytes())
                .ok()?;
            let tok = Tokenizer::from_hf_dir(dir.path()).ok()?;
            Some((tok, ChatTemplate::builtin("llama3")?))
        })
        .as_ref()
}

/// Input: a request body, as it arrives on any JSON route.
pub fn run(data: &[u8]) {
    let Ok(v) = parse_json_body(data) else { return };
    if let Ok(s) = typed::<SamplingFields>(&v) {
        for (prompt, ctx) in [(0, 1), (10, 4096), (4095, 4096), (usize::MAX - 1, usize::MAX)] {
            let _ = s.to_options(prompt, ctx);
        }
    }
    if let Ok(req) = typed::<ChatRequest>(&v) {
        let messages: Vec<ChatMessage> = req
            .messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some(ChatMessage::new(m.role.clone(), m.text(i).ok()?)))
            .collect();
        if let Some((tok, template)) = micro() {
            let _ = chat_prompt(tok, template, &messages);
        }
    }
    let _ = typed::<CompletionRequest>(&v);
    let _ = typed::<TokenizeRequest>(&v);
    let _ = typed::<DetokenizeRequest>(&v);
    let _ = typed::<EmbeddingRequest>(&v);
}
