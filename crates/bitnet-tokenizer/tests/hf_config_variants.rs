//! `from_hf_dir` with the optional config files changed or missing: tokenizer.json alone, other
//! shapes of the same settings, and broken files.

mod common;

use std::path::{Path, PathBuf};

use bitnet_tokenizer::Tokenizer;

/// A scratch copy of the hf-bf16 tokenizer.json, with the given extra files.
fn scratch(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-tokenizer-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(common::hf_dir().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn load(dir: &Path) -> Tokenizer {
    let tok = Tokenizer::from_hf_dir(dir).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    tok
}

#[test]
fn tokenizer_json_alone() {
    let tok = load(&scratch("alone", &[]));
    // Nothing names a BOS token, so there is none (it is not guessed from the post-processor);
    // the stop ids fall back to the Llama-3 end tokens.
    assert_eq!(tok.bos_id(), None);
    assert!(!tok.add_bos_default());
    assert_eq!(tok.eos_id(), None);
    assert_eq!(tok.stop_ids(), &[1023, 1015]);
    assert_eq!(tok.chat_template(), None);
    for c in common::cases() {
        assert_eq!(tok.encode(&c.text, false).unwrap(), c.ids);
    }
}

#[test]
fn bos_from_generation_config_and_post_processor() {
    let tok = load(&scratch(
        "genbos",
        &[(
            "generation_config.json",
            r#"{"bos_token_id": 1014, "eos_token_id": 1015}"#,
        )],
    ));
    assert_eq!(tok.bos_id(), Some(1014));
    assert!(tok.add_bos_default(), "the post-processor adds BOS");
    assert_eq!(tok.stop_ids(), &[1015, 1023]);
}

#[test]
fn other_config_shapes() {
    let cfg = r#"{
        "bos_token": {"content": "<|begin_of_text|>", "lstrip": false},
        "eos_token": "<|eot_id|>",
        "add_bos_token": false,
        "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    }"#;
    let tok = load(&scratch("shapes", &[("tokenizer_config.json", cfg)]));
    assert_eq!(tok.bos_id(), Some(1014));
    assert!(!tok.add_bos_default());
    assert_eq!(tok.eos_id(), Some(1023));
    assert_eq!(tok.stop_ids(), &[1023, 1015]);
    assert_eq!(tok.chat_template(), Some("D"));
    assert_eq!(tok.encode("Hi", true).unwrap()[0], 1014);
}

#[test]
fn chat_template_jinja_file() {
    let tok = load(&scratch(
        "jinja",
        &[
            ("tokenizer_config.json", r#"{"bos_token": "<|begin_of_text|>"}"#),
            ("chat_template.jinja", "{{ messages }}"),
        ],
    ));
    assert_eq!(tok.chat_template(), Some("{{ messages }}"));
}

#[test]
fn broken_files_are_errors_naming_them() {
    for (file, text, needle) in [
        ("tokenizer_config.json", "{not json", "tokenizer_config.json"),
        ("tokenizer_config.json", r#"{"bos_token": "<nope>"}"#, "bos_token"),
        (
            "generation_config.json",
            r#"{"eos_token_id": [1015, 4096]}"#,
            "eos_token_id",
        ),
        ("generation_config.json", r#"{"eos_token_id": -1}"#, "eos_token_id"),
        ("generation_config.json", r#"{"eos_token_id": "x"}"#, "eos_token_id"),
        ("tokenizer.json", "{}", "tokenizer.json"),
    ] {
        let dir = scratch("broken", &[(file, text)]);
        let err = Tokenizer::from_hf_dir(&dir).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.contains(needle), "{file} {text}: {err}");
    }
}
