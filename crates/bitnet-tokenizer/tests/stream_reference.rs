//! `StreamDecoder` over the reference ids: the pieces it yields concatenate to Hugging Face's
//! decoded text, and it never yields half a character.

mod common;

use bitnet_tokenizer::{GgufVocab, StreamDecoder, Tokenizer};

fn tokenizers() -> Vec<Tokenizer> {
    vec![
        Tokenizer::from_hf_dir(&common::hf_dir()).unwrap(),
        Tokenizer::from_gguf_vocab(GgufVocab {
            ..common::gguf_vocab_from_tokenizer_json()
        })
        .unwrap(),
    ]
}

/// Streams `ids`, checking every chunk; returns the chunks (the flush last).
fn stream(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    let mut dec = tok.stream_decoder();
    let mut chunks = Vec::new();
    for &id in ids {
        if let Some(text) = dec.push(id) {
            assert!(!text.is_empty(), "push yields Some only with text");
            chunks.push(text);
        }
    }
    chunks.push(dec.flush());
    assert!(!dec.has_pending());
    chunks
}

#[test]
fn every_case_streams_to_the_decoded_text() {
    for tok in tokenizers() {
        for c in common::cases() {
            for ids in [&c.ids, &c.ids_with_bos] {
                let chunks = stream(&tok, ids);
                for chunk in &chunks {
                    assert!(
                        !chunk.contains('\u{FFFD}'),
                        "U+FFFD in {chunk:?} while streaming {:?}",
                        c.text
                    );
                }
                assert_eq!(chunks.concat(), tok.decode(ids).unwrap());
            }
            assert_eq!(stream(&tok, &c.ids).concat(), c.decoded, "{:?}", c.text);
            assert_eq!(stream(&tok, &c.ids).last().map(String::as_str), Some(""));
        }
    }
}

#[test]
fn prompt_chat_and_long_text_stream() {
    for tok in tokenizers() {
        let input = common::input();
        let (text, ids) = common::long_text();
        assert_eq!(stream(&tok, &input.chat_ids).concat(), input.chat_text);
        assert_eq!(stream(&tok, &ids[1..]).concat(), text);
        assert_eq!(stream(&tok, &input.prompt_ids[1..]).concat(), input.prompt);
        // Arbitrary ids (random byte pieces): same as decode, U+FFFD included.
        assert_eq!(stream(&tok, &input.ids).concat(), tok.decode(&input.ids).unwrap());
    }
}

#[test]
fn multi_token_characters_are_held_back() {
    for tok in tokenizers() {
        for text in ["🚀", "日本", "👨\u{200d}👩\u{200d}👧", "a🙂b"] {
            let ids = tok.encode(text, false).unwrap();
            let mut dec = StreamDecoder::new(&tok);
            let mut out = String::new();
            let mut held = false;
            for &id in &ids {
                match dec.push(id) {
                    Some(chunk) => out.push_str(&chunk),
                    None => held = true,
                }
            }
            assert!(held, "{text:?} should need more than one token per character");
            assert_eq!(out, text);
            assert_eq!(dec.flush(), "");
        }
    }
}

#[test]
fn truncated_character_is_flushed_as_replacement() {
    let tok = &tokenizers()[0];
    let ids = tok.encode("🚀", false).unwrap();
    assert!(ids.len() > 1);
    let mut dec = tok.stream_decoder();
    let mut out = String::new();
    for &id in &ids[..ids.len() - 1] {
        out.extend(dec.push(id));
    }
    assert!(dec.has_pending());
    out.push_str(&dec.flush());
    assert_eq!(out, tok.decode(&ids[..ids.len() - 1]).unwrap());
    assert_eq!(out, "\u{FFFD}");
    // A special token right after an incomplete character ends it.
    let mut dec = tok.stream_decoder();
    assert_eq!(dec.push(ids[0]), None);
    assert_eq!(dec.push(1023).as_deref(), Some("\u{FFFD}<|eot_id|>"));
}

#[test]
fn invalid_ids() {
    let tok = &tokenizers()[0];
    let mut dec = tok.stream_decoder();
    assert!(dec.try_push(5000).is_err());
    assert_eq!(dec.push(5000).as_deref(), Some("\u{FFFD}"));
    assert_eq!(dec.try_push(39).unwrap().as_deref(), Some("H"));
}
