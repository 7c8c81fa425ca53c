//! Writes the seed inputs of the fuzz targets: a micro model (hidden 128, one layer, 320-token
//! byte-level BPE vocabulary) as an I2_S GGUF and as an HF bf16 folder, its tokenizer, the built-in
//! and fixture chat templates, and request bodies of every route.
//!
//! ```text
//! cargo run -p bitnet-fuzz --example make_seeds
//! ```
//!
//! Writes `crates/bitnet-fuzz/data/tokenizer.json` and `fuzz/corpus/<target>/seed-*`. The fuzzers
//! grow the corpora from these; `cargo fuzz cmin` keeps them small.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bitnet_fuzz::join2;
use bitnet_gguf::GgufWriter;
use bitnet_tokenizer::ChatTemplate;
use bitnet_train::checkpoint::save_weights;
use bitnet_train::export::gguf_writer;
use bitnet_train::model::{param_shapes, ModelDims, Rng};
use bitnet_train::tokenizer::train_bpe;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn seed(target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = root().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir)?;
    let p = dir.join(format!("seed-{name}"));
    std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))
}

fn main() -> Result<()> {
    let dims = ModelDims {
        hidden: 128,
        intermediate: 256,
        layers: 1,
        heads: 2,
        kv_heads: 1,
        vocab: 320,
        context: 64,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
    };
    let work = std::env::temp_dir().join(format!("bitnet-fuzz-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    // The micro tokenizer: byte-level BPE trained on a little English until it has 320 entries.
    let text = "The quick brown fox jumps over the lazy dog. A ternary model stores each weight as -1, 0 or +1 \
                times a scale, and its activations as eight-bit integers per token. Hello, world! "
        .repeat(40);
    let texts: Vec<String> = text.split(". ").map(str::to_string).collect();
    train_bpe(&texts, dims.vocab, &work)?;
    let tok_json = std::fs::read(work.join("tokenizer.json"))?;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("tokenizer.json"), &tok_json)?;
    let tok_config = std::fs::read(work.join("tokenizer_config.json"))?;
    seed("tokenizer_json", "micro", &join2(&tok_config, &tok_json))?;
    seed("tokenizer_json", "micro-no-config", &join2(b"", &tok_json))?;

    // Random weights of the micro shape.
    let mut rng = Rng(7);
    let values: Vec<(String, Vec<usize>, Vec<f32>)> = param_shapes(&dims)
        .into_iter()
        .map(|(n, s)| {
            let len = s.iter().product();
            let v = (0..len).map(|_| rng.normal() * 0.05).collect();
            (n, s, v)
        })
        .collect();

    // GGUF (I2_S projections, F16 embedding), and its metadata alone for the tokenizer target.
    let w = gguf_writer(&dims, &values, &work.join("tokenizer.json"), "micro")?;
    seed("gguf", "micro-i2_s.gguf", &w.to_bytes()?)?;
    let mut meta = GgufWriter::new();
    for (k, v) in w.metadata() {
        meta.add_metadata(k.clone(), v.clone())?;
    }
    seed("gguf_tokenizer", "micro-vocab.gguf", &meta.to_bytes()?)?;

    // HF folder (bf16 masters, online quantization).
    let hf = work.join("hf");
    save_weights(&hf, &dims, &values, 0, 1)?;
    let config = std::fs::read(hf.join("config.json"))?;
    let st = std::fs::read(hf.join("model.safetensors"))?;
    seed("hf_folder", "micro-bf16", &join2(&config, &st))?;

    // Chat templates: the built-in ones and those of the fixture models.
    for name in bitnet_tokenizer::chat_template::BUILTIN_NAMES {
        if let Some(src) = ChatTemplate::builtin_source(name) {
            seed("chat_template", name, src.as_bytes())?;
        }
    }
    for fixture in ["llama-b158-a/hf-packed", "bitnet-1bitllm-a/hf-fp16", "embed-qwen3-a/hf"] {
        let p = root()
            .join("tests/fixtures")
            .join(fixture)
            .join("tokenizer_config.json");
        let Ok(bytes) = std::fs::read(&p) else { continue };
        let json: serde_json::Value = serde_json::from_slice(&bytes)?;
        if let Some(src) = json.get("chat_template").and_then(|v| v.as_str()) {
            seed("chat_template", &fixture.replace('/', "-"), src.as_bytes())?;
        }
    }
    seed(
        "chat_template",
        "pycompat",
        b"{% set ns = namespace(s='') %}{% for m in messages %}{% if m.role == 'system' %}\
          {% set ns.s = m.content.strip() %}{% endif %}{{ '%s: %s'|format(m.role, m.content) }}\
          {{ m.content|tojson }}{{ m.content.split(' ')|join('|') }}{% endfor %}{{ ns.s|upper }}\
          {{ raise_exception('x') if messages|length > 9 }}",
    )?;

    // Request bodies of every JSON route.
    let requests = [
        r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"max_tokens":8,"temperature":0.7,"top_p":0.9,"stop":["\n"],"stream":true,"stream_options":{"include_usage":true}}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"<|eot_id|>"}]}],"seed":1,"n":1}"#,
        r#"{"prompt":"Once upon a time","max_tokens":16,"parse_special":false,"repeat_penalty":1.1,"presence_penalty":0.5}"#,
        r#"{"prompt":[1,2,3],"max_completion_tokens":4,"ignore_eos":true,"top_k":40,"min_p":0.05}"#,
        r#"{"content":"hello","add_special":true}"#,
        r#"{"tokens":[0,1,2,319]}"#,
        r#"{"input":["a","b"],"encoding_format":"base64","dimensions":64}"#,
        r#"{"input":[[1,2],[3]]}"#,
    ];
    for (i, r) in requests.iter().enumerate() {
        seed("request_json", &i.to_string(), r.as_bytes())?;
    }
    std::fs::remove_dir_all(&work)?;
    println!("seeds written under {}", root().join("fuzz/corpus").display());
    Ok(())
}
