//! Falcon3's chat template (the Llama-architecture fixture's tokenizer_config.json, copied into every
//! GGUF by the converters) renders and tokenizes exactly like transformers' `apply_chat_template`, from
//! every file: the text, and ids without a BOS the template does not write.

use std::path::PathBuf;

use bitnet_tokenizer::{ChatMessage, ChatTemplate};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/llama-b158-a")
        .join(rel)
}

#[test]
fn falcon3_chat_template_renders_like_transformers_from_every_file() {
    let input: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference/input.json")).expect("input")).expect("json");
    let msgs: Vec<ChatMessage> = input["chat_messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            ChatMessage::new(
                m["role"].as_str().expect("role"),
                m["content"].as_str().expect("content"),
            )
        })
        .collect();
    let want: Vec<u32> = input["chat_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect();
    for model in ["hf-packed", "gguf/bitnetcpp-i2_s.gguf", "gguf/llamacpp-tq2_0.gguf"] {
        let tok = bitnet_model::load_tokenizer(&fixture(model)).expect("tokenizer");
        let (tpl, _) = ChatTemplate::resolve(None, &tok).expect("template");
        let text = tpl.render_for(&tok, &msgs, true).expect("render");
        assert_eq!(text, input["chat_text"].as_str().expect("chat text"), "{model}");
        let ids = bitnet_engine::chat_prompt(&tok, &tpl, &msgs).expect("prompt");
        assert_eq!(ids, want, "{model}");
    }
}
