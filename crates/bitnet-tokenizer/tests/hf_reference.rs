//! `Tokenizer::from_hf_dir` against the Hugging Face reference outputs of the tiny-a fixture.

mod common;

use bitnet_tokenizer::Tokenizer;

fn tok() -> Tokenizer {
    Tokenizer::from_hf_dir(&common::hf_dir()).expect("load hf-bf16 tokenizer")
}

#[test]
fn every_case_matches_hf() {
    let tok = tok();
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
fn prompt_chat_and_long_text_match_hf() {
    let tok = tok();
    let input = common::input();
    assert_eq!(tok.encode(&input.prompt, true).unwrap(), input.prompt_ids);
    assert_eq!(tok.encode(&input.chat_text, false).unwrap(), input.chat_ids);
    assert_eq!(tok.decode(&input.chat_ids).unwrap(), input.chat_text);
    let (text, ids) = common::long_text();
    assert_eq!(tok.encode(&text, true).unwrap(), ids);
    assert_eq!(tok.decode(&ids[1..]).unwrap(), text);
}

#[test]
fn metadata_from_the_config_files() {
    let tok = tok();
    assert_eq!(tok.vocab_size(), 1024);
    assert_eq!(tok.bos_id(), Some(1014));
    assert_eq!(tok.eos_id(), Some(1015));
    assert_eq!(tok.eot_id(), Some(1023));
    assert!(tok.add_bos_default());
    assert_eq!(tok.stop_ids(), &[1015, 1023]);
    assert_eq!(tok.pre_tokenizer_name(), "tokenizer.json");
    assert!(tok.chat_template().unwrap().contains("<|eot_id|>"));
    assert_eq!(tok.token_text(1023).as_deref(), Some("<|eot_id|>"));
    assert_eq!(tok.token_text(220).as_deref(), Some(" "));
    assert_eq!(tok.token_piece(220), Some("Ġ"));
    assert_eq!(tok.token_text(1024), None);
    assert_eq!(tok.token_to_id("<|eot_id|>"), Some(1023));
}

#[test]
fn invalid_ids_are_errors() {
    let tok = tok();
    let err = tok.decode(&[39, 1024]).unwrap_err();
    assert!(err.to_string().contains("1024"), "{err}");
    assert!(tok.decode(&[u32::MAX]).is_err());
}

#[test]
fn missing_folder_is_an_error() {
    let err = Tokenizer::from_hf_dir(&common::fixture_dir().join("no-such-dir")).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}
