//! Tokenizers built from GGUF metadata tokenize exactly like Hugging Face on every reference case —
//! including the official-style files that lack `tokenizer.ggml.pre`, where we deliberately use the
//! Llama-3 pre-tokenizer (bitnet.cpp falls back to a different regex there).

mod common;
use common::*;

use bitnet_model::load_tokenizer;

const MODELS: [&str; 8] = [
    "hf-bf16",
    "hf-packed",
    "gguf/bitnet-b158-i2_s.gguf",
    "gguf/bitnetcpp-i2_s.gguf",
    "gguf/llamacpp-f16.gguf",
    "gguf/llamacpp-tq2_0.gguf",
    "gguf/llamacpp-tq1_0.gguf",
    "gguf/llamacpp-tq2_0-f16emb.gguf",
];

#[test]
fn every_model_file_tokenizes_like_hugging_face() {
    let cases = json("reference/tokenizer_cases.json");
    let cases = cases["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 66);
    let input = json("reference/input.json");
    for m in MODELS {
        let tok = load_tokenizer(&fixture(m)).unwrap_or_else(|e| panic!("{m}: {e:#}"));
        for c in cases {
            let text = c["text"].as_str().expect("text");
            assert_eq!(
                tok.encode(text, false).expect("encode"),
                ids(&c["ids"]),
                "{m}: {text:?}"
            );
            assert_eq!(
                tok.encode(text, true).expect("encode"),
                ids(&c["ids_with_bos"]),
                "{m}: {text:?} with BOS"
            );
            let decoded = tok.decode(&ids(&c["ids"])).expect("decode");
            assert_eq!(
                decoded,
                c["decoded"].as_str().expect("decoded"),
                "{m}: decode of {text:?}"
            );
        }
        let prompt = input["prompt"].as_str().expect("prompt");
        assert_eq!(
            tok.encode(prompt, true).expect("encode"),
            ids(&input["prompt_ids"]),
            "{m}: prompt"
        );
        let chat = input["chat_text"].as_str().expect("chat");
        assert_eq!(
            tok.encode(chat, false).expect("encode"),
            ids(&input["chat_ids"]),
            "{m}: chat text"
        );
        assert!(tok.stop_ids().contains(&1023), "{m}: <|eot_id|> must stop generation");
        assert!(
            tok.stop_ids().contains(&1015),
            "{m}: <|end_of_text|> must stop generation"
        );
        assert_eq!(tok.bos_id(), Some(1014), "{m}");
    }
}
