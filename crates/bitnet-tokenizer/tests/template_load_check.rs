//! A chat template is checked when it is loaded (a plain conversation must render): a model's own
//! template that fails is replaced by the built-in one with the reason, a `--chat-template` file that
//! fails is an error, and a tokenizer.json that makes the `tokenizers` crate panic is an error.

use std::path::{Path, PathBuf};

use bitnet_tokenizer::{ChatTemplate, Tokenizer};

fn micro_tokenizer_json() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../bitnet-fuzz/data/tokenizer.json")).unwrap()
}

fn folder(tag: &str, config: &serde_json::Value, tokenizer_json: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-tok-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn a_model_template_that_fails_a_plain_conversation_is_replaced() {
    let config = serde_json::json!({
        "bos_token": "<|begin_of_text|>",
        "chat_template": "{% for m in messages %}{% if m.role == 'assistant' %}{{ raise_exception('assistant turns are not supported') }}{% endif %}{{ m.content }}{% endfor %}",
    });
    let dir = folder("probe", &config, &micro_tokenizer_json());
    let tok = Tokenizer::from_hf_dir(&dir).unwrap();
    // It parses, but the load check finds it cannot render a plain conversation.
    assert!(ChatTemplate::new("model file", tok.chat_template().unwrap()).is_ok());
    let (t, note) = ChatTemplate::resolve(None, &tok).unwrap();
    assert_eq!(t.name(), "bitnet (built-in)");
    let note = note.unwrap();
    assert!(note.contains("assistant turns are not supported"), "{note}");

    // The same template given with --chat-template is refused.
    let file = dir.join("t.jinja");
    std::fs::write(&file, config["chat_template"].as_str().unwrap()).unwrap();
    let e = ChatTemplate::resolve_in(Some(file.to_str().unwrap()), &tok, None).unwrap_err();
    assert!(e.to_string().contains("assistant turns are not supported"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tokenizer_json_that_panics_the_tokenizers_crate_is_an_error() {
    // The `tokenizers` crate `expect`s its decoder to deserialize (tokenizers 0.22): a syntax error
    // inside the decoder object panics instead of failing (found by the tokenizer_json fuzz target).
    let bad = br#"{"version": "1.0", "decoder": {"type": "ByteLevel", "add_prefix_space": false, "u1, "x": 1}}"#;
    let dir = folder("panic", &serde_json::json!({}), bad);
    let e = Tokenizer::from_hf_dir(&dir).unwrap_err();
    assert!(e.to_string().contains("the tokenizers library failed"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
