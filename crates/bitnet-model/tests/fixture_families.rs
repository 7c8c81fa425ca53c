//! The model families beyond BitNet b1.58 2B-4T, on every file of their fixtures: the Llama
//! architecture with transformers' BitNet quantization (Falcon3-1.58bit, Falcon-E, Llama3-8B-1.58:
//! `llama-b158-a`) and 1bitLLM's `BitnetForCausalLM` (`bitnet-1bitllm-a`). Each file's logits agree
//! with transformers run on that file's weights (mean KL < 2e-3, same top-1 where the reference's
//! top-1/top-2 gap exceeds 0.3), greedy continuations agree up to the first near-tie, and every
//! file's tokenizer equals Hugging Face's on every reference case.

mod common;
use common::*;

const KL_LIMIT: f64 = 2e-3;
const GAP: f32 = 0.3;

const LLAMA: &str = "llama-b158-a";
const ONEBIT: &str = "bitnet-1bitllm-a";

/// (model, reference logits, reference greedy) of every file.
const LLAMA_FILES: [(&str, &str, &str); 4] = [
    ("hf-packed", "hf_packed_logits.npy", ""),
    (
        "gguf/bitnetcpp-i2_s.gguf",
        "hf_on_bitnetcpp_i2_s_weights_logits.npy",
        "hf_on_bitnetcpp_i2_s_weights_greedy.json",
    ),
    (
        "gguf/llamacpp-tq2_0.gguf",
        "hf_on_llamacpp_tq2_0_weights_logits.npy",
        "hf_on_llamacpp_tq2_0_weights_greedy.json",
    ),
    (
        "gguf/llamacpp-tq1_0.gguf",
        "hf_on_llamacpp_tq2_0_weights_logits.npy",
        "hf_on_llamacpp_tq2_0_weights_greedy.json",
    ),
];

const ONEBIT_FILES: [(&str, &str, &str); 6] = [
    ("hf-fp16", "hf_online_logits.npy", ""),
    (
        "gguf/bitnetcpp-i2_s.gguf",
        "hf_on_bitnetcpp_i2_s_weights_logits.npy",
        "hf_on_bitnetcpp_i2_s_weights_greedy.json",
    ),
    (
        "gguf/llamacpp-f16.gguf",
        "hf_on_bitnetcpp_i2_s_weights_logits.npy",
        "hf_on_bitnetcpp_i2_s_weights_greedy.json",
    ),
    (
        "gguf/llamacpp-tq2_0-direct.gguf",
        "hf_on_bitnetcpp_i2_s_weights_logits.npy",
        "hf_on_bitnetcpp_i2_s_weights_greedy.json",
    ),
    (
        "gguf/llamacpp-tq2_0.gguf",
        "hf_on_llamacpp_tq2_0_weights_logits.npy",
        "hf_on_llamacpp_tq2_0_weights_greedy.json",
    ),
    (
        "gguf/llamacpp-tq1_0.gguf",
        "hf_on_llamacpp_tq2_0_weights_logits.npy",
        "hf_on_llamacpp_tq2_0_weights_greedy.json",
    ),
];

fn check_logits(set: &str, files: &[(&str, &str, &str)]) {
    let ids = ids(&json_in(set, "reference/input.json")["ids"]);
    for (model, reference, _) in files {
        let (m, _) = load_in(set, model);
        let (n, vocab, r) = npy2_in(set, &format!("reference/{reference}"));
        assert_eq!(n, ids.len());
        let ours = all_logits(&m, &ids);
        let a = agreement(&r, &ours, vocab, GAP);
        eprintln!("{set}/{model} vs {reference}: {a:?}");
        assert!(
            a.kl_mean < KL_LIMIT,
            "{set}/{model}: mean KL {} >= {KL_LIMIT}",
            a.kl_mean
        );
        assert!(
            a.decisive_mismatches.is_empty(),
            "{set}/{model}: top-1 differs at decisive positions {:?}",
            a.decisive_mismatches
        );
    }
}

fn check_greedy(set: &str, files: &[(&str, &str, &str)], hf_key: &str) {
    let hf = json_in(set, "reference/hf_greedy.json");
    for (model, _, greedy_ref) in files {
        let r = if greedy_ref.is_empty() {
            hf[hf_key].clone()
        } else {
            json_in(set, &format!("reference/{greedy_ref}"))
        };
        let (m, _) = load_in(set, model);
        for (prefix, new, gaps) in [
            ("prefix", "new_tokens", "top1_top2_gap"),
            ("prompt_prefix", "prompt_new_tokens", "prompt_top1_top2_gap"),
        ] {
            let want = ids(&r[new]);
            let upto = fragile_from(&floats(&r[gaps]), GAP);
            let got = greedy(&m, &ids(&r[prefix]), want.len());
            assert_eq!(
                got[..upto],
                want[..upto],
                "{set}/{model}: greedy from {prefix} differs before the first near-tie (step {upto})"
            );
        }
    }
}

#[test]
fn llama_family_logits_match_transformers_on_every_file() {
    check_logits(LLAMA, &LLAMA_FILES);
}

#[test]
fn onebitllm_logits_match_transformers_on_every_file() {
    check_logits(ONEBIT, &ONEBIT_FILES);
}

#[test]
fn llama_family_greedy_matches_transformers() {
    check_greedy(LLAMA, &LLAMA_FILES, "packed");
}

#[test]
fn onebitllm_greedy_matches_transformers() {
    check_greedy(ONEBIT, &ONEBIT_FILES, "online");
}

/// Every tokenizer case: the Hugging Face folder and every GGUF's own vocabulary.
fn check_tokenizers(set: &str, files: &[(&str, &str, &str)]) {
    let cases = json_in(set, "reference/tokenizer_cases.json");
    let cases = cases["cases"].as_array().expect("cases");
    assert!(cases.len() > 60);
    let input = json_in(set, "reference/input.json");
    for (model, _, _) in files {
        let tok = bitnet_model::load_tokenizer(&fixture_in(set, model)).unwrap_or_else(|e| panic!("{model}: {e:#}"));
        for c in cases {
            let text = c["text"].as_str().expect("text");
            assert_eq!(
                tok.encode(text, false).expect("encode"),
                ids(&c["ids"]),
                "{set}/{model}: {text:?}"
            );
            assert_eq!(
                tok.encode(text, true).expect("encode"),
                ids(&c["ids_with_bos"]),
                "{set}/{model}: {text:?} with BOS"
            );
            assert_eq!(
                tok.decode(&ids(&c["ids"])).expect("decode"),
                c["decoded"].as_str().expect("decoded"),
                "{set}/{model}: decode of {text:?}"
            );
        }
        let prompt = input["prompt"].as_str().expect("prompt");
        assert_eq!(
            tok.encode(prompt, true).expect("encode"),
            ids(&input["prompt_ids"]),
            "{model}: prompt"
        );
        if let Some(chat) = input["chat_text"].as_str() {
            assert_eq!(
                tok.encode(chat, false).expect("encode"),
                ids(&input["chat_ids"]),
                "{model}: chat"
            );
        }
    }
}

#[test]
fn llama_family_tokenizers_equal_hugging_face() {
    check_tokenizers(LLAMA, &LLAMA_FILES);
}

#[test]
fn onebitllm_sentencepiece_tokenizers_equal_hugging_face() {
    check_tokenizers(ONEBIT, &ONEBIT_FILES);
}

#[test]
fn a_folder_with_only_tokenizer_model_tokenizes_like_hugging_face() {
    // 1bitLLM's repositories ship tokenizer.model; some folders have no tokenizer.json at all.
    let dir = std::env::temp_dir().join(format!("bitnet-spm-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for f in ["tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(fixture_in(ONEBIT, &format!("hf-fp16/{f}")), dir.join(f)).expect("copy");
    }
    let tok = bitnet_tokenizer::Tokenizer::from_hf_dir(&dir).expect("tokenizer.model");
    let cases = json_in(ONEBIT, "reference/tokenizer_cases.json");
    let mut checked = 0;
    for c in cases["cases"].as_array().expect("cases") {
        let text = c["text"].as_str().expect("text");
        // sentencepiece itself never parses special-token text; those cases are HF-only.
        if ["<s>", "</s>", "<unk>", "<pad>"].iter().any(|s| text.contains(s)) {
            continue;
        }
        assert_eq!(
            tok.encode(text, false).expect("encode"),
            ids(&c["sentencepiece_ids"]),
            "{text:?}"
        );
        assert_eq!(
            tok.decode(&ids(&c["ids"])).expect("decode"),
            c["decoded"].as_str().expect("decoded")
        );
        checked += 1;
    }
    assert!(checked > 50, "{checked}");
    assert_eq!(tok.bos_id(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bitnetcpp_special_token_texts_are_repaired_and_reported() {
    let tok = bitnet_model::load_tokenizer(&fixture_in(LLAMA, "gguf/bitnetcpp-i2_s.gguf")).expect("tokenizer");
    assert_eq!(tok.token_text(8).as_deref(), Some("<|startoftext|>"));
    assert_eq!(tok.token_text(0).as_deref(), Some(">>TITLE<<"));
    assert!(
        tok.notes().iter().any(|n| n.contains("repaired 14 special tokens")),
        "{:?}",
        tok.notes()
    );
    // mainline's files are intact: nothing to repair.
    let tok = bitnet_model::load_tokenizer(&fixture_in(LLAMA, "gguf/llamacpp-tq2_0.gguf")).expect("tokenizer");
    assert!(tok.notes().is_empty());
}

#[test]
fn families_are_detected_with_their_rope_layout() {
    use bitnet_model::arch::{Family, RopeLayout};
    let (m, _) = load_in(LLAMA, "gguf/bitnetcpp-i2_s.gguf");
    assert_eq!(
        (m.cfg.family, m.cfg.rope_layout),
        (Family::Llama158, RopeLayout::Interleaved)
    );
    assert!(m.layers[0].attn_sub_norm.is_none() && !m.tied_head);
    let (m, _) = load_in(LLAMA, "hf-packed");
    assert_eq!(
        (m.cfg.family, m.cfg.rope_layout),
        (Family::Llama158, RopeLayout::HalfSplit)
    );
    let (m, _) = load_in(ONEBIT, "gguf/llamacpp-tq1_0.gguf");
    assert_eq!(m.cfg.family, Family::OneBitLlm);
    assert!(m.layers[0].ffn_sub_norm.is_some() && m.tied_head);
    let (m, _) = load_in(ONEBIT, "hf-fp16");
    assert_eq!(m.cfg.family, Family::OneBitLlm);
}
