//! Every file of every fuzz corpus (`fuzz/corpus/<target>/`) and every crash the fuzzers found
//! (`fuzz/regressions/<target>/`) goes through its target's entry point: none may panic. This is how
//! a plain `cargo test` (and CI, on stable Rust) keeps fixed what fuzzing found.

use std::path::{Path, PathBuf};

use bitnet_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn replay(kind: &str, min_files: usize) {
    let mut failed = Vec::new();
    for t in TARGETS {
        let dir = fuzz_dir().join(kind).join(t.name);
        let inputs = files(&dir);
        assert!(
            inputs.len() >= min_files,
            "{}: {} files, expected at least {min_files}",
            dir.display(),
            inputs.len()
        );
        for p in inputs {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            if std::panic::catch_unwind(|| (t.run)(&data)).is_err() {
                failed.push(p.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "inputs that panic:\n{}", failed.join("\n"));
}

#[test]
fn every_corpus_file_is_handled_without_panicking() {
    replay("corpus", 1);
}

#[test]
fn every_regression_case_is_handled_without_panicking() {
    replay("regressions", 0);
}

#[test]
fn every_target_has_a_libfuzzer_binary() {
    for t in TARGETS {
        let p = fuzz_dir().join("fuzz_targets").join(format!("{}.rs", t.name));
        let src = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            src.contains(&format!("{}(", entry_of(t.name))),
            "{} calls another entry point",
            p.display()
        );
    }
}

fn entry_of(target: &str) -> &'static str {
    match target {
        "gguf" => "bitnet_fuzz::gguf::run",
        "gguf_tokenizer" => "bitnet_fuzz::gguf::run_tokenizer",
        "hf_folder" => "bitnet_fuzz::hf_folder::run",
        "tokenizer_json" => "bitnet_fuzz::tokenizer::run",
        "chat_template" => "bitnet_fuzz::chat_template::run",
        "request_json" => "bitnet_fuzz::request::run",
        other => panic!("unknown target {other}"),
    }
}

/// The seeds are real inputs: each loads all the way (a target whose seeds all fail at the first
/// check would fuzz only that check).
#[test]
fn seeds_load_all_the_way() {
    use bitnet_fuzz::{split2, ScratchDir, MICRO_TOKENIZER_CONFIG, MICRO_TOKENIZER_JSON};
    let corpus = fuzz_dir().join("corpus");
    let read = |p: &str| std::fs::read(corpus.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));

    let g = bitnet_gguf::GgufFile::from_bytes(read("gguf/seed-micro-i2_s.gguf"), "seed").expect("gguf");
    let (model, tok) = bitnet_model::load_gguf::from_gguf(&g, None).expect("gguf model");
    assert_eq!((model.cfg.hidden_size, tok.vocab_size()), (128, 320));

    let g = bitnet_gguf::GgufFile::from_bytes(read("gguf_tokenizer/seed-micro-vocab.gguf"), "seed").expect("vocab");
    assert_eq!(
        bitnet_model::load_gguf::tokenizer_from_gguf(&g)
            .expect("tokenizer")
            .vocab_size(),
        320
    );

    let hf = read("hf_folder/seed-micro-bf16");
    let (config, weights) = split2(&hf);
    let dir = ScratchDir::new("seed-check").expect("scratch");
    dir.write("config.json", config).expect("write");
    dir.write("model.safetensors", weights).expect("write");
    dir.write("tokenizer.json", MICRO_TOKENIZER_JSON).expect("write");
    dir.write("tokenizer_config.json", MICRO_TOKENIZER_CONFIG.as_bytes())
        .expect("write");
    let (model, _) = bitnet_model::load_hf::load(dir.path(), None).expect("hf model");
    assert_eq!(model.cfg.num_layers, 1);

    let tok = read("tokenizer_json/seed-micro");
    let (config, json) = split2(&tok);
    let dir = ScratchDir::new("seed-check").expect("scratch");
    dir.write("tokenizer.json", json).expect("write");
    dir.write("tokenizer_config.json", config).expect("write");
    let tok = bitnet_tokenizer::Tokenizer::from_hf_dir(dir.path()).expect("tokenizer");
    assert!(tok.encode("Hello", false).expect("encode").len() < 5);

    let req = bitnet_server::request::parse_json_body(&read("request_json/seed-0")).expect("request");
    bitnet_server::request::typed::<bitnet_server::request::ChatRequest>(&req).expect("chat request");
}
