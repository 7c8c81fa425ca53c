//! `convert` for the other families: each Hugging Face fixture folder converted to I2_S, TQ2_0 and
//! TQ1_0 gives the architecture, tensor names and codes the peers' converters write (q/k rows permuted
//! for `llama`, per-projection input norms and pooling for `qwen3`, a SentencePiece vocabulary for
//! 1bitLLM), and the converted file computes what transformers computes.

use std::path::{Path, PathBuf};

use bitnet_gguf::{GgmlType, GgufFile};
use bitnet_kernels::{Bytes, TernaryMatrix};
use bitnet_model::embed::{input_ids, l2_normalize};
use bitnet_model::{load, load_tokenizer, InferenceState, LoadOptions, LogitsWanted};
use bitnet_tools::convert::{convert, ConvertOptions, TernaryType};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(p)
}

fn json(p: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(p)).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn converted(input: &str, to: TernaryType, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-convfam-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{tag}-{}.gguf", to.ggml().name()));
    let o = ConvertOptions {
        to,
        ..ConvertOptions::default()
    };
    convert(&fixture(input), &out, &o).unwrap_or_else(|e| panic!("converting {input}: {e:#}"));
    out
}

fn codes(g: &GgufFile, name: &str) -> Vec<i8> {
    let t = g.tensor(name).unwrap();
    let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
    let data = Bytes::from_vec(g.tensor_data(t).to_vec());
    let m = match t.ggml_type {
        GgmlType::I2_S => TernaryMatrix::from_i2s(rows, cols, data),
        GgmlType::TQ2_0 => TernaryMatrix::from_tq2_0(rows, cols, data),
        GgmlType::TQ1_0 => TernaryMatrix::from_tq1_0(rows, cols, data),
        other => panic!("{name} has type {other:?}"),
    }
    .unwrap();
    let mut c = vec![0i8; rows * cols];
    for r in 0..rows {
        m.row_codes(r, &mut c[r * cols..(r + 1) * cols]);
    }
    c
}

/// Every ternary tensor of `peer` has the same codes in `ours` (same names, same row order).
fn same_codes_as(ours: &Path, peer: &str) {
    let (a, b) = (GgufFile::open(ours).unwrap(), GgufFile::open(&fixture(peer)).unwrap());
    let mut n = 0;
    for t in b.tensors().iter().filter(|t| t.ggml_type == GgmlType::I2_S) {
        assert_eq!(codes(&a, &t.name), codes(&b, &t.name), "{}: {}", ours.display(), t.name);
        n += 1;
    }
    assert!(n >= 7, "{peer}: {n} ternary tensors");
    let names =
        |g: &GgufFile| -> std::collections::BTreeSet<String> { g.tensors().iter().map(|t| t.name.clone()).collect() };
    assert_eq!(names(&a), names(&b), "tensor names of {} vs {peer}", ours.display());
}

fn mean_kl(reference: &[f32], ours: &[f32], vocab: usize) -> f64 {
    let ls = |x: &[f32]| {
        let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
        x.iter().map(|&v| v as f64 - lse).collect::<Vec<_>>()
    };
    let n = reference.len() / vocab;
    (0..n)
        .map(|p| {
            let (r, o) = (
                ls(&reference[p * vocab..(p + 1) * vocab]),
                ls(&ours[p * vocab..(p + 1) * vocab]),
            );
            r.iter().zip(&o).map(|(a, b)| a.exp() * (a - b)).sum::<f64>()
        })
        .sum::<f64>()
        / n as f64
}

fn check_logits(file: &Path, set: &str, reference: &str, limit: f64) {
    let (m, _) = load(file, &LoadOptions::default()).unwrap();
    let input = json(&format!("{set}/reference/input.json"));
    let ids = ids(&input["ids"]);
    let mut st = InferenceState::new(&m, ids.len());
    let ours = m.forward(&ids, &mut st, LogitsWanted::All).unwrap().to_vec();
    let (shape, r) = bitnet_tools::npy::read_f32(&fixture(&format!("{set}/reference/{reference}"))).unwrap();
    let kl = mean_kl(&r, &ours, shape[1]);
    assert!(kl < limit, "{}: mean KL {kl} vs {reference}", file.display());
}

fn check_tokenizer(file: &Path, set: &str) {
    let tok = load_tokenizer(file).unwrap();
    let cases = json(&format!("{set}/reference/tokenizer_cases.json"));
    for c in cases["cases"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids(&c["ids"]),
            "{}: {text:?}",
            file.display()
        );
    }
}

#[test]
fn llama_folder_converts_like_bitnet_cpp_and_llama_cpp() {
    for to in [TernaryType::I2S, TernaryType::TQ2_0, TernaryType::TQ1_0] {
        let f = converted("llama-b158-a/hf-packed", to, "llama");
        let g = GgufFile::open(&f).unwrap();
        assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
        assert!(g.tensor("output.weight").is_some() && g.tensor("blk.0.attn_sub_norm.weight").is_none());
        if to == TernaryType::I2S {
            // bitnet.cpp's converter: same codes in every tensor, q/k rows permuted the same way.
            same_codes_as(&f, "llama-b158-a/gguf/bitnetcpp-i2_s.gguf");
        }
        check_logits(&f, "llama-b158-a", "hf_packed_logits.npy", 2e-3);
        check_tokenizer(&f, "llama-b158-a");
    }
}

#[test]
fn onebitllm_folder_converts_with_a_sentencepiece_vocabulary() {
    for to in [TernaryType::I2S, TernaryType::TQ2_0, TernaryType::TQ1_0] {
        let f = converted("bitnet-1bitllm-a/hf-fp16", to, "onebit");
        let g = GgufFile::open(&f).unwrap();
        assert_eq!(g.get_str("general.architecture").unwrap(), "bitnet");
        assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "llama");
        if to == TernaryType::I2S {
            let peer = GgufFile::open(&fixture("bitnet-1bitllm-a/gguf/bitnetcpp-i2_s.gguf")).unwrap();
            assert_eq!(
                codes(&g, "blk.1.ffn_down.weight"),
                codes(&peer, "blk.1.ffn_down.weight")
            );
        }
        // I2_S keeps the f32 scale (transformers' own weights); TQ blocks round it to f16, as the
        // peers' files do (their weights are transformers on those f16-rounded scales).
        let reference = match to {
            TernaryType::I2S => "hf_online_logits.npy",
            _ => "hf_on_bitnetcpp_i2_s_weights_logits.npy",
        };
        check_logits(&f, "bitnet-1bitllm-a", reference, 2e-3);
        check_tokenizer(&f, "bitnet-1bitllm-a");
    }
}

#[test]
fn embedding_folder_converts_like_bitnet_cpps_embedding_converter() {
    let f = converted("embed-qwen3-a/hf", TernaryType::I2S, "embed");
    same_codes_as(&f, "embed-qwen3-a/gguf/bitnetcpp-i2_s.gguf");
    let g = GgufFile::open(&f).unwrap();
    assert_eq!(g.get_str("general.architecture").unwrap(), "qwen3");
    assert_eq!(g.get_u64("qwen3.pooling_type").unwrap(), 3);
    assert_eq!(g.get_u64("qwen3.attention.key_length").unwrap(), 128);
    let (m, tok) = load(&f, &LoadOptions::default()).unwrap();
    let inputs = json("embed-qwen3-a/reference/inputs.json");
    let (shape, refs) = bitnet_tools::npy::read_f32(&fixture("embed-qwen3-a/reference/hf_embeddings.npy")).unwrap();
    let mut st = InferenceState::new(&m, 512);
    for (i, t) in inputs["texts"].as_array().unwrap().iter().enumerate() {
        let ids = input_ids(&tok, t["text"].as_str().unwrap()).unwrap();
        assert_eq!(ids, self::ids(&t["ids"]), "text {i}");
        let mut e = m.embed_ids(&ids, &mut st, m.cfg.pooling.unwrap(), 512).unwrap();
        l2_normalize(&mut e);
        let r = &refs[i * shape[1]..(i + 1) * shape[1]];
        let cos: f32 = e.iter().zip(r).map(|(a, b)| a * b).sum();
        assert!(cos >= 0.999, "text {i}: cosine {cos}");
    }
}
