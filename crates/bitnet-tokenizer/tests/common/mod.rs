//! Fixture loading shared by the integration tests. Fixtures are found relative to this crate so
//! the tests run on a plain clone of the repository.
#![allow(dead_code)]

use std::path::PathBuf;

use bitnet_tokenizer::GgufVocab;
use serde::Deserialize;
use serde_json::Value;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-a")
}

pub fn hf_dir() -> PathBuf {
    fixture_dir().join("hf-bf16")
}

fn read_json(rel: &str) -> Value {
    let path = fixture_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON {}: {e}", path.display()))
}

/// One entry of reference/tokenizer_cases.json (Hugging Face output).
#[derive(Debug, Deserialize)]
pub struct Case {
    pub text: String,
    pub ids: Vec<u32>,
    pub ids_with_bos: Vec<u32>,
    pub decoded: String,
    pub roundtrip: bool,
}

pub fn cases() -> Vec<Case> {
    let v = read_json("reference/tokenizer_cases.json");
    let cases: Vec<Case> = serde_json::from_value(v["cases"].clone()).expect("cases");
    assert_eq!(cases.len(), 66, "expected the 66 reference cases");
    cases
}

/// reference/input.json: the prompt (encoded with BOS) and the chat text (encoded without).
#[derive(Debug, Deserialize)]
pub struct Input {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub chat_text: String,
    pub chat_ids: Vec<u32>,
    pub ids: Vec<u32>,
}

pub fn input() -> Input {
    serde_json::from_value(read_json("reference/input.json")).expect("input.json")
}

/// reference/text.txt and its Hugging Face ids (with BOS) from reference/perplexity.json.
pub fn long_text() -> (String, Vec<u32>) {
    let path = fixture_dir().join("reference/text.txt");
    let text = std::fs::read_to_string(&path).expect("text.txt");
    let v = read_json("reference/perplexity.json");
    let ids: Vec<u32> = serde_json::from_value(v["hf_token_ids"].clone()).expect("hf_token_ids");
    assert_eq!(Some(ids.len() as u64), v["n_tokens_with_bos"].as_u64());
    (text, ids)
}

/// The GGUF metadata a converter writes for the hf-bf16 tokenizer: tokens ordered by id, merges
/// as "a b" strings, token type 3 for the added special tokens, no `tokenizer.ggml.pre`.
pub fn gguf_vocab_from_tokenizer_json() -> GgufVocab {
    let tj = read_json("hf-bf16/tokenizer.json");
    let mut by_id: Vec<Option<(String, i32)>> = Vec::new();
    let mut put = |id: u64, piece: &str, ty: i32| {
        let id = id as usize;
        if by_id.len() <= id {
            by_id.resize(id + 1, None);
        }
        by_id[id] = Some((piece.to_string(), ty));
    };
    for (piece, id) in tj["model"]["vocab"].as_object().expect("vocab") {
        put(id.as_u64().expect("id"), piece, 1);
    }
    for t in tj["added_tokens"].as_array().expect("added_tokens") {
        let ty = if t["special"].as_bool() == Some(true) { 3 } else { 4 };
        put(
            t["id"].as_u64().expect("id"),
            t["content"].as_str().expect("content"),
            ty,
        );
    }
    let (tokens, types): (Vec<String>, Vec<i32>) =
        by_id.into_iter().map(|e| e.expect("no holes in the id range")).unzip();
    let merges = tj["model"]["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(p) => format!("{} {}", p[0].as_str().expect("a"), p[1].as_str().expect("b")),
            other => panic!("unexpected merge {other}"),
        })
        .collect();
    let id_of = |s: &str| tokens.iter().position(|t| t == s).map(|i| i as u32);
    let cfg = read_json("hf-bf16/tokenizer_config.json");
    GgufVocab {
        model: "gpt2".to_string(),
        bos_id: id_of("<|begin_of_text|>"),
        eos_id: id_of("<|end_of_text|>"),
        eot_id: None,
        add_bos: None,
        pre: None,
        scores: None,
        chat_template: cfg["chat_template"].as_str().map(str::to_string),
        token_types: Some(types),
        merges,
        tokens,
        ..Default::default()
    }
}
