//! Hugging Face tokenizer folders: `tokenizer.json` (the `tokenizers` crate and our checks around
//! it) with `tokenizer_config.json` (special tokens, chat template), then encoding and decoding.

use bitnet_tokenizer::{ChatTemplate, Tokenizer};

use crate::{split2, ScratchDir};

/// Input: `tokenizer_config.json` and `tokenizer.json` joined by [`crate::join2`].
pub fn run(data: &[u8]) {
    let (config, json) = split2(data);
    let Ok(dir) = ScratchDir::new("tok") else { return };
    if dir.write("tokenizer.json", json).is_err() || dir.write("tokenizer_config.json", config).is_err() {
        return;
    }
    if let Ok(tok) = Tokenizer::from_hf_dir(dir.path()) {
        exercise(&tok);
    }
}

/// What the engine does with a tokenizer it loaded: encode text with and without special tokens,
/// decode (whole and streamed), look pieces up, and parse its chat template.
pub fn exercise(tok: &Tokenizer) {
    const TEXTS: [&str; 6] = [
        "",
        "Hello, world! 12345",
        " leading space and trailing  ",
        "<|begin_of_text|>User: hi<|eot_id|>Assistant:",
        "日本語 émigré \u{1F600} \u{0}\u{FFFD}",
        "\n\n\t  \r\n",
    ];
    let vocab = tok.vocab_size() as u32;
    for text in TEXTS {
        for add_bos in [false, true] {
            if let Ok(ids) = tok.encode(text, add_bos) {
                let _ = tok.decode(&ids);
            }
            if let Ok(ids) = tok.encode_plain(text, add_bos) {
                let mut stream = tok.stream_decoder();
                for &id in &ids {
                    let _ = stream.try_push(id);
                }
                let _ = stream.flush();
            }
        }
        let _ = tok.has_special_text(text);
        let half = std::ops::Range {
            start: 0,
            end: text.len() / 2,
        };
        let _ = tok.encode_with_plain_spans(text, std::slice::from_ref(&half), false);
    }
    let some: Vec<u32> = (0..vocab.min(300))
        .chain([vocab, vocab.saturating_add(7), u32::MAX])
        .collect();
    let _ = tok.decode(&some);
    for &id in &some {
        let _ = tok.token_text(id);
        let _ = tok.token_piece(id);
    }
    let _ = (
        tok.bos_id(),
        tok.eos_id(),
        tok.eot_id(),
        tok.stop_ids(),
        tok.appended_token(),
    );
    let _ = ChatTemplate::resolve(None, tok);
}
