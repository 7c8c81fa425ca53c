//! `Tokenizer::from_gguf_vocab` (the path GGUF files take), with the vocabulary and merges of the
//! tiny-a tokenizer.json laid out as a converter writes them, against the Hugging Face reference.

mod common;

use bitnet_tokenizer::{GgufVocab, Tokenizer};

fn tok_with_pre(pre: Option<&str>) -> Tokenizer {
    let v = GgufVocab {
        pre: pre.map(str::to_string),
        ..common::gguf_vocab_from_tokenizer_json()
    };
    Tokenizer::from_gguf_vocab(v).expect("build tokenizer from GGUF vocab")
}

#[test]
fn every_case_matches_hf_when_pre_is_missing() {
    let tok = tok_with_pre(None);
    assert_eq!(tok.pre_tokenizer_name(), "llama3 (default: tokenizer.ggml.pre missing)");
    for c in common::cases() {
        assert_eq!(tok.encode(&c.text, false).unwrap(), c.ids, "ids of {:?}", c.text);
        assert_eq!(
            tok.encode(&c.text, true).unwrap(),
            c.ids_with_bos,
            "ids_with_bos of {:?}",
            c.text
        );
        assert_eq!(tok.decode(&c.ids).unwrap(), c.decoded, "decode of {:?}", c.text);
        if c.roundtrip {
            assert_eq!(tok.decode(&c.ids).unwrap(), c.text, "round trip of {:?}", c.text);
        }
    }
}

#[test]
fn llama_pre_names_match_hf() {
    for pre in ["llama-bpe", "llama3", "llama-v3", "some-future-name"] {
        let tok = tok_with_pre(Some(pre));
        assert!(tok.pre_tokenizer_name().starts_with("llama3"), "{pre}");
        for c in common::cases() {
            assert_eq!(tok.encode(&c.text, false).unwrap(), c.ids, "{pre}: {:?}", c.text);
        }
    }
    assert!(tok_with_pre(Some("some-future-name"))
        .pre_tokenizer_name()
        .contains("unknown"));
}

/// The texts whose ids under `pre` differ from Hugging Face's; everything must still round-trip.
fn differing_cases(pre: &str) -> Vec<String> {
    let tok = tok_with_pre(Some(pre));
    let mut differing = Vec::new();
    for c in common::cases() {
        let ids = tok.encode(&c.text, false).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), c.text, "{pre}: round trip of {:?}", c.text);
        if ids != c.ids {
            differing.push(c.text);
        }
    }
    println!("{pre}: {} of 66 cases differ from HF: {differing:?}", differing.len());
    differing
}

#[test]
fn llamacpp_default_pre_tokenizer_differs_like_llamacpp() {
    assert_eq!(
        tok_with_pre(Some("default")).pre_tokenizer_name(),
        "llama.cpp default (tokenizer.ggml.pre = default)"
    );
    let differing = differing_cases("default");
    // The fixture README measured llama.cpp's 'default' pre-tokenizer: 15 of the 66 cases differ
    // (contractions, punctuation runs, code, signs).
    assert_eq!(differing.len(), 15, "{differing:?}");
    assert!(differing.iter().any(|t| t == "don't"));
    // ... and so do the prompt and the chat text.
    let tok = tok_with_pre(Some("default"));
    let input = common::input();
    assert_ne!(tok.encode(&input.prompt, true).unwrap(), input.prompt_ids);
    assert_ne!(tok.encode(&input.chat_text, false).unwrap(), input.chat_ids);
}

#[test]
fn gpt2_pre_tokenizer_differs() {
    for pre in ["gpt2", "gpt-2"] {
        assert_eq!(
            tok_with_pre(Some(pre)).pre_tokenizer_name(),
            format!("gpt2 (tokenizer.ggml.pre = {pre})")
        );
        assert!(!differing_cases(pre).is_empty(), "the regex must matter");
    }
}

#[test]
fn prompt_chat_and_long_text_match_hf() {
    let tok = tok_with_pre(None);
    let input = common::input();
    assert_eq!(tok.encode(&input.prompt, true).unwrap(), input.prompt_ids);
    assert_eq!(tok.encode(&input.chat_text, false).unwrap(), input.chat_ids);
    assert_eq!(tok.decode(&input.chat_ids).unwrap(), input.chat_text);
    let (text, ids) = common::long_text();
    assert_eq!(tok.encode(&text, true).unwrap(), ids);
    assert_eq!(tok.decode(&ids[1..]).unwrap(), text);
}

#[test]
fn same_as_hf_dir_on_metadata_and_decoding() {
    let gguf = tok_with_pre(None);
    let hf = Tokenizer::from_hf_dir(&common::hf_dir()).unwrap();
    assert_eq!(gguf.vocab_size(), hf.vocab_size());
    assert_eq!(gguf.bos_id(), hf.bos_id());
    assert_eq!(gguf.eos_id(), hf.eos_id());
    assert_eq!(gguf.eot_id(), hf.eot_id());
    assert_eq!(gguf.add_bos_default(), hf.add_bos_default());
    assert_eq!(gguf.stop_ids(), hf.stop_ids());
    assert_eq!(gguf.chat_template(), hf.chat_template());
    let all: Vec<u32> = (0..gguf.vocab_size() as u32).collect();
    for id in &all {
        assert_eq!(gguf.token_text(*id), hf.token_text(*id), "token {id}");
    }
    assert_eq!(gguf.decode(&all).unwrap(), hf.decode(&all).unwrap());
    assert_eq!(
        gguf.decode(&common::input().ids).unwrap(),
        hf.decode(&common::input().ids).unwrap()
    );
}

#[test]
fn add_bos_and_eot_from_metadata() {
    let base = common::gguf_vocab_from_tokenizer_json();
    let tok = Tokenizer::from_gguf_vocab(GgufVocab {
        add_bos: Some(false),
        eot_id: Some(1021),
        ..base.clone()
    })
    .unwrap();
    assert!(!tok.add_bos_default());
    assert_eq!(tok.eot_id(), Some(1021));
    assert_eq!(tok.stop_ids(), &[1015, 1021]);
    // Asking for BOS still adds it exactly once.
    assert_eq!(tok.encode("Hi", true).unwrap()[0], 1014);

    let no_bos = Tokenizer::from_gguf_vocab(GgufVocab {
        bos_id: None,
        ..base.clone()
    })
    .unwrap();
    assert!(!no_bos.add_bos_default());
    assert!(no_bos.encode("Hi", true).is_err());
    assert_eq!(no_bos.encode("Hi", false).unwrap().len(), 1);
}

#[test]
fn special_tokens_without_token_types() {
    let v = GgufVocab {
        token_types: None,
        ..common::gguf_vocab_from_tokenizer_json()
    };
    let tok = Tokenizer::from_gguf_vocab(v).unwrap();
    let hi = tok.encode("Hi", false).unwrap();
    assert_eq!(
        tok.encode("Hi<|eot_id|>", false).unwrap(),
        [hi.as_slice(), &[1023]].concat()
    );
    for c in common::cases() {
        assert_eq!(tok.encode(&c.text, false).unwrap(), c.ids, "{:?}", c.text);
    }
}

#[test]
fn sentencepiece_without_scores_and_unknown_models_are_refused_clearly() {
    let v = GgufVocab {
        model: "llama".to_string(),
        scores: None,
        ..common::gguf_vocab_from_tokenizer_json()
    };
    let err = Tokenizer::from_gguf_vocab(v).unwrap_err();
    assert!(err.to_string().contains("tokenizer.ggml.scores is missing"), "{err}");
    let v = GgufVocab {
        model: "rwkv".to_string(),
        ..common::gguf_vocab_from_tokenizer_json()
    };
    let err = Tokenizer::from_gguf_vocab(v).unwrap_err();
    assert!(err.to_string().contains("tokenizer.ggml.model = \"rwkv\""), "{err}");
}
