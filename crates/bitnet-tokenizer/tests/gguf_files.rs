//! The tokenizer metadata of the real tiny-a GGUF fixture files (bitnet.cpp's converter writes no
//! `tokenizer.ggml.pre`, llama.cpp's writes `llama-bpe`): every file tokenizes like Hugging Face.

mod common;

use bitnet_tokenizer::Tokenizer;
use common::gguf_meta::vocab_of;

const FILES: [&str; 6] = [
    "bitnet-b158-i2_s.gguf",
    "bitnetcpp-i2_s.gguf",
    "llamacpp-f16.gguf",
    "llamacpp-tq1_0.gguf",
    "llamacpp-tq2_0-f16emb.gguf",
    "llamacpp-tq2_0.gguf",
];

#[test]
fn every_fixture_file_matches_hf() {
    let input = common::input();
    let (text, text_ids) = common::long_text();
    for file in FILES {
        let v = vocab_of(&common::fixture_dir().join("gguf").join(file));
        let bitnetcpp = file.starts_with("bitnet");
        assert_eq!(v.pre.is_none(), bitnetcpp, "{file}");
        let tok = Tokenizer::from_gguf_vocab(v).unwrap_or_else(|e| panic!("{file}: {e}"));
        let expected_pre = if bitnetcpp {
            "llama3 (default: tokenizer.ggml.pre missing)"
        } else {
            "llama3 (tokenizer.ggml.pre = llama-bpe)"
        };
        assert_eq!(tok.pre_tokenizer_name(), expected_pre, "{file}");
        assert_eq!(tok.vocab_size(), 1024);
        assert_eq!(tok.bos_id(), Some(1014));
        assert!(tok.add_bos_default());
        assert_eq!(tok.stop_ids(), &[1015, 1023], "{file}");
        assert!(tok.chat_template().is_some(), "{file}");
        for c in common::cases() {
            assert_eq!(tok.encode(&c.text, false).unwrap(), c.ids, "{file}: {:?}", c.text);
            assert_eq!(tok.encode(&c.text, true).unwrap(), c.ids_with_bos, "{file}");
            assert_eq!(tok.decode(&c.ids).unwrap(), c.decoded, "{file}");
        }
        assert_eq!(tok.encode(&input.prompt, true).unwrap(), input.prompt_ids, "{file}");
        assert_eq!(tok.encode(&input.chat_text, false).unwrap(), input.chat_ids, "{file}");
        assert_eq!(tok.encode(&text, true).unwrap(), text_ids, "{file}");
    }
}
