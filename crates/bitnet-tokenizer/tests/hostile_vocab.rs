//! Malformed GGUF tokenizer metadata gives errors naming the key, never panics.

mod common;

use bitnet_tokenizer::{GgufVocab, Tokenizer};
use proptest::prelude::*;

fn base() -> GgufVocab {
    common::gguf_vocab_from_tokenizer_json()
}

fn err_of(v: GgufVocab) -> String {
    Tokenizer::from_gguf_vocab(v).unwrap_err().to_string()
}

#[test]
fn special_ids_out_of_range_name_the_key() {
    let n = base().tokens.len() as u32;
    let e = err_of(GgufVocab {
        bos_id: Some(n),
        ..base()
    });
    assert!(e.contains("tokenizer.ggml.bos_token_id"), "{e}");
    let e = err_of(GgufVocab {
        eos_id: Some(u32::MAX),
        ..base()
    });
    assert!(e.contains("tokenizer.ggml.eos_token_id"), "{e}");
    let e = err_of(GgufVocab {
        eot_id: Some(n + 7),
        ..base()
    });
    assert!(e.contains("tokenizer.ggml.eot_token_id"), "{e}");
}

#[test]
fn bad_merges_name_their_index() {
    let mut v = base();
    v.merges[5] = "nosuchtoken Ġt".to_string();
    let e = err_of(v);
    assert!(e.contains("tokenizer.ggml.merges[5]"), "{e}");

    let mut v = base();
    v.merges[7] = "abc".to_string();
    let e = err_of(v);
    assert!(e.contains("tokenizer.ggml.merges[7]"), "{e}");

    // Both halves exist but their concatenation is not a token.
    let mut v = base();
    v.merges.push("Ġ Ċ".to_string());
    let last = v.merges.len() - 1;
    let e = err_of(v);
    assert!(e.contains(&format!("tokenizer.ggml.merges[{last}]")), "{e}");
}

#[test]
fn array_length_mismatches() {
    let mut v = base();
    v.token_types.as_mut().unwrap().pop();
    assert!(err_of(v).contains("tokenizer.ggml.token_type"));

    let v = GgufVocab {
        scores: Some(vec![0.0; 3]),
        ..base()
    };
    assert!(err_of(v).contains("tokenizer.ggml.scores"));

    let mut v = base();
    v.token_types.as_mut().unwrap()[9] = 42;
    assert!(err_of(v).contains("tokenizer.ggml.token_type[9]"));

    let v = GgufVocab {
        tokens: Vec::new(),
        merges: Vec::new(),
        token_types: None,
        ..base()
    };
    assert!(err_of(v).contains("tokenizer.ggml.tokens"));
}

#[test]
fn unsupported_models() {
    for model in ["", "bert", "t5", "rwkv"] {
        let e = err_of(GgufVocab {
            model: model.to_string(),
            ..base()
        });
        assert!(e.contains("tokenizer.ggml.model"), "{e}");
    }
}

#[test]
fn vocab_without_some_bytes_refuses_such_text() {
    // Drop the token for 'Q' (and the merges that need it): text with a 'Q' cannot be encoded.
    let mut v = base();
    let q = v.tokens.iter().position(|t| t == "Q").unwrap();
    v.tokens[q] = "<unused-Q>".to_string();
    v.merges.retain(|m| !m.contains('Q'));
    let tok = match Tokenizer::from_gguf_vocab(v) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    assert!(tok.encode("Hello", false).is_ok());
    let e = tok.encode("Quick", false).unwrap_err().to_string();
    assert!(e.contains("0x51"), "{e}");
}

/// One way of damaging the metadata.
#[derive(Debug, Clone)]
enum Mutation {
    RemoveToken(usize),
    SetToken(usize, String),
    DuplicateToken(usize, usize),
    SetMerge(usize, String),
    AddMerge(String),
    SwapMerges(usize, usize),
    TokenTypes(Option<Vec<i32>>),
    SetTokenType(usize, i32),
    Scores(Option<usize>),
    Ids(Option<u32>, Option<u32>, Option<u32>),
    Pre(Option<String>),
    AddBos(Option<bool>),
    Model(String),
    TruncateTokens(usize),
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_string()),
        Just("<|eot_id|>".to_string()),
        Just("Ġ".to_string()),
        Just("a b c".to_string()),
        "\\PC{0,6}",
        "[a-zĠĊ<|>]{1,4}",
    ]
}

fn special_id() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(prop_oneof![
        12 => 0u32..1024,
        1 => 1024u32..1100,
        1 => Just(u32::MAX),
    ])
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::RemoveToken),
        (any::<usize>(), text()).prop_map(|(i, s)| Mutation::SetToken(i, s)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::DuplicateToken(a, b)),
        (any::<usize>(), text()).prop_map(|(i, s)| Mutation::SetMerge(i, s)),
        text().prop_map(Mutation::AddMerge),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapMerges(a, b)),
        proptest::option::of(prop_oneof![
            4 => proptest::collection::vec(0i32..7, 1024),
            1 => proptest::collection::vec(-2i32..9, 0..1100),
        ])
        .prop_map(Mutation::TokenTypes),
        (any::<usize>(), -2i32..9).prop_map(|(i, t)| Mutation::SetTokenType(i, t)),
        proptest::option::of(0usize..1100).prop_map(Mutation::Scores),
        (special_id(), special_id(), special_id()).prop_map(|(a, b, c)| Mutation::Ids(a, b, c)),
        proptest::option::of(prop_oneof![
            Just("default".to_string()),
            Just("gpt2".to_string()),
            Just("llama-bpe".to_string()),
            "\\PC{0,8}",
        ])
        .prop_map(Mutation::Pre),
        proptest::option::of(any::<bool>()).prop_map(Mutation::AddBos),
        prop_oneof![
            8 => Just("gpt2".to_string()),
            1 => Just("llama".to_string()),
            1 => "\\PC{0,5}",
        ]
        .prop_map(Mutation::Model),
        (0usize..1100).prop_map(Mutation::TruncateTokens),
    ]
}

fn apply(v: &mut GgufVocab, m: Mutation) {
    let n = v.tokens.len().max(1);
    let nm = v.merges.len().max(1);
    match m {
        Mutation::RemoveToken(i) => {
            if !v.tokens.is_empty() {
                v.tokens.remove(i % n);
                if let Some(t) = v.token_types.as_mut() {
                    if !t.is_empty() {
                        t.remove(i % t.len());
                    }
                }
            }
        }
        Mutation::SetToken(i, s) => {
            if let Some(t) = v.tokens.get_mut(i % n) {
                *t = s;
            }
        }
        Mutation::DuplicateToken(a, b) => {
            if let Some(src) = v.tokens.get(a % n).cloned() {
                v.tokens[b % n] = src;
            }
        }
        Mutation::SetMerge(i, s) => {
            if let Some(m) = v.merges.get_mut(i % nm) {
                *m = s;
            }
        }
        Mutation::AddMerge(s) => v.merges.push(s),
        Mutation::SwapMerges(a, b) => {
            if !v.merges.is_empty() {
                v.merges.swap(a % nm, b % nm);
            }
        }
        Mutation::TokenTypes(t) => v.token_types = t,
        Mutation::SetTokenType(i, ty) => {
            if let Some(t) = v.token_types.as_mut() {
                if !t.is_empty() {
                    let len = t.len();
                    t[i % len] = ty;
                }
            }
        }
        Mutation::Scores(len) => v.scores = len.map(|l| vec![0.0; l]),
        Mutation::Ids(b, e, t) => {
            v.bos_id = b;
            v.eos_id = e;
            v.eot_id = t;
        }
        Mutation::Pre(p) => v.pre = p,
        Mutation::AddBos(b) => v.add_bos = b,
        Mutation::Model(m) => v.model = m,
        Mutation::TruncateTokens(len) => {
            v.tokens.truncate(len);
            if let Some(t) = v.token_types.as_mut() {
                t.truncate(len);
            }
        }
    }
}

/// Uses a tokenizer built from damaged metadata on text and ids: nothing may panic, and what it
/// returns must be consistent.
fn exercise(tok: &Tokenizer, input: &str, ids: &[u32]) -> Result<(), TestCaseError> {
    for text in [input, "Hello world", "<|eot_id|>日本 🚀 don't"] {
        if let Ok(encoded) = tok.encode(text, tok.add_bos_default()) {
            prop_assert!(encoded.iter().all(|&id| (id as usize) < tok.vocab_size()));
            prop_assert!(tok.decode(&encoded).is_ok());
        }
    }
    let decoded = tok.decode(ids);
    let mut dec = tok.stream_decoder();
    let mut streamed = String::new();
    for &id in ids {
        streamed.extend(dec.push(id));
    }
    streamed.push_str(&dec.flush());
    if let Ok(decoded) = decoded {
        prop_assert_eq!(decoded, streamed);
    }
    for &id in ids {
        prop_assert_eq!(tok.token_text(id).is_some(), (id as usize) < tok.vocab_size());
    }
    prop_assert!(tok.stop_ids().iter().all(|&id| (id as usize) < tok.vocab_size()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn damaged_metadata_never_panics(
        mutations in proptest::collection::vec(mutation(), 1..4),
        input in "\\PC{0,24}",
        ids in proptest::collection::vec(prop_oneof![0u32..1100, any::<u32>()], 0..12),
    ) {
        let mut v = base();
        for m in mutations {
            apply(&mut v, m);
        }
        if let Ok(tok) = Tokenizer::from_gguf_vocab(v) {
            exercise(&tok, &input, &ids)?;
        }
    }

    /// Valid but unusual metadata (any token types, renamed special tokens, any ids and names)
    /// always loads.
    #[test]
    fn consistent_metadata_variants_always_load(
        types in proptest::collection::vec(0i32..7, 1024),
        specials in proptest::collection::vec((1014usize..1024, text()), 0..4),
        (bos, eos, eot) in (special_id(), special_id(), special_id()),
        pre in proptest::option::of("\\PC{0,8}"),
        add_bos in proptest::option::of(any::<bool>()),
        input in "\\PC{0,24}",
        ids in proptest::collection::vec(0u32..1024, 0..12),
    ) {
        let in_range = |id: Option<u32>| id.filter(|&i| i < 1024);
        let mut v = GgufVocab {
            token_types: Some(types),
            bos_id: in_range(bos),
            eos_id: in_range(eos),
            eot_id: in_range(eot),
            pre,
            add_bos,
            ..base()
        };
        for (i, t) in specials {
            v.tokens[i] = t;
        }
        match Tokenizer::from_gguf_vocab(v) {
            Ok(tok) => exercise(&tok, &input, &ids)?,
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}
