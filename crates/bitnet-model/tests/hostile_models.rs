//! Corrupt and hostile model files, generated from the fixtures: every one must give a clear error
//! (naming the key, tensor or limit) and never panic or allocate absurd amounts of memory.

mod common;
use common::*;

use bitnet_gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue};
use bitnet_model::load_gguf::from_gguf;
use bitnet_model::{load, InferenceState, LoadOptions, LogitsWanted};

fn load_bytes(bytes: Vec<u8>) -> anyhow::Result<()> {
    let g = GgufFile::from_bytes(bytes, "hostile.gguf")?;
    from_gguf(&g, None)?;
    Ok(())
}

fn writer_from(src: &str, skip_key: Option<&str>, skip_tensor: Option<&str>) -> GgufWriter {
    let g = GgufFile::open(&fixture(src)).expect("fixture");
    let mut w = GgufWriter::new();
    for (k, v) in g.metadata() {
        if Some(k.as_str()) != skip_key && k != "general.alignment" {
            w.add_metadata(k.clone(), v.clone()).expect("metadata");
        }
    }
    for t in g.tensors() {
        if Some(t.name.as_str()) != skip_tensor {
            w.add_tensor(t.name.clone(), &t.dims, t.ggml_type, g.tensor_data(t).to_vec())
                .expect("tensor");
        }
    }
    w
}

fn err_of(w: &GgufWriter) -> String {
    match load_bytes(w.to_bytes().expect("bytes")) {
        Ok(()) => panic!("a hostile file loaded without error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn truncated_models_fail_cleanly() {
    for f in [
        "gguf/bitnet-b158-i2_s.gguf",
        "gguf/llamacpp-tq1_0.gguf",
        "gguf/llamacpp-tq2_0.gguf",
    ] {
        let bytes = std::fs::read(fixture(f)).expect("fixture");
        let mut cut = 0usize;
        while cut < bytes.len() {
            let r = load_bytes(bytes[..cut].to_vec());
            assert!(r.is_err(), "{f} truncated at {cut} loaded");
            cut += if cut < 60_000 { 1_111 } else { 37_813 };
        }
    }
}

#[test]
fn missing_required_keys_are_named() {
    let arch_keys = [
        "bitnet-b1.58.embedding_length",
        "bitnet-b1.58.block_count",
        "bitnet-b1.58.feed_forward_length",
        "bitnet-b1.58.attention.head_count",
        "bitnet-b1.58.context_length",
        "bitnet-b1.58.attention.layer_norm_rms_epsilon",
        "general.architecture",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.model",
    ];
    for key in arch_keys {
        let e = err_of(&writer_from("gguf/bitnet-b158-i2_s.gguf", Some(key), None));
        assert!(e.contains(key), "removing '{key}' gave: {e}");
    }
}

#[test]
fn missing_tensors_are_named() {
    for t in [
        "token_embd.weight",
        "output_norm.weight",
        "blk.2.ffn_down.weight",
        "blk.0.attn_sub_norm.weight",
    ] {
        let e = err_of(&writer_from("gguf/bitnet-b158-i2_s.gguf", None, Some(t)));
        assert!(e.contains(t), "removing '{t}' gave: {e}");
    }
}

#[test]
fn wrong_shapes_and_types_are_named() {
    // A norm of the wrong length.
    let mut w = writer_from("gguf/bitnet-b158-i2_s.gguf", None, Some("blk.1.attn_norm.weight"));
    w.add_tensor("blk.1.attn_norm.weight", &[128], GgmlType::F32, vec![0u8; 512])
        .unwrap();
    let e = err_of(&w);
    assert!(e.contains("blk.1.attn_norm.weight") && e.contains("shape"), "{e}");
    // A projection with transposed dims.
    let g = GgufFile::open(&fixture("gguf/bitnet-b158-i2_s.gguf")).unwrap();
    let t = g.tensor("blk.0.ffn_up.weight").unwrap().clone();
    let mut w = writer_from("gguf/bitnet-b158-i2_s.gguf", None, Some("blk.0.ffn_up.weight"));
    w.add_tensor(
        t.name.clone(),
        &[t.dims[1], t.dims[0]],
        t.ggml_type,
        g.tensor_data(&t).to_vec(),
    )
    .unwrap();
    let e = err_of(&w);
    assert!(e.contains("blk.0.ffn_up.weight"), "{e}");
    // An embedding stored as a ternary type.
    let n = 256 * 1024;
    let mut w = writer_from("gguf/bitnet-b158-i2_s.gguf", None, Some("token_embd.weight"));
    w.add_tensor("token_embd.weight", &[256, 1024], GgmlType::I2_S, vec![0u8; n / 4 + 32])
        .unwrap();
    let e = err_of(&w);
    assert!(e.contains("token_embd.weight") && e.contains("I2_S"), "{e}");
}

#[test]
fn absurd_hyperparameters_are_rejected_before_allocating() {
    for (key, v) in [
        ("bitnet-b1.58.block_count", MetadataValue::U32(1_000_000_000)),
        ("bitnet-b1.58.embedding_length", MetadataValue::U64(u64::MAX)),
        ("bitnet-b1.58.attention.head_count", MetadataValue::U32(0)),
        ("bitnet-b1.58.attention.head_count", MetadataValue::U32(3)),
        ("bitnet-b1.58.attention.head_count_kv", MetadataValue::U32(3)),
        ("bitnet-b1.58.feed_forward_length", MetadataValue::U32(0)),
        ("bitnet-b1.58.vocab_size", MetadataValue::U32(u32::MAX)),
        ("bitnet-b1.58.rope.freq_base", MetadataValue::F32(f32::NAN)),
        (
            "bitnet-b1.58.attention.layer_norm_rms_epsilon",
            MetadataValue::String("tiny".into()),
        ),
        ("general.architecture", MetadataValue::String("llama".into())),
        ("tokenizer.ggml.bos_token_id", MetadataValue::U32(5000)),
    ] {
        let mut w = writer_from("gguf/bitnet-b158-i2_s.gguf", None, None);
        w.set_metadata(key, v.clone()).unwrap();
        let e = err_of(&w);
        eprintln!("{key} = {v:?}: {e}");
        assert!(!e.is_empty());
    }
}

#[test]
fn out_of_range_tokens_and_full_context_are_errors() {
    let (m, _) = load_fixture("gguf/bitnet-b158-i2_s.gguf", None);
    let mut st = InferenceState::new(&m, 4);
    let e = m.forward(&[1, 5000], &mut st, LogitsWanted::Last).unwrap_err();
    assert!(format!("{e}").contains("5000"), "{e}");
    assert!(m.forward(&[1, 2, 3], &mut st, LogitsWanted::Last).is_ok());
    let e = m.forward(&[1, 2], &mut st, LogitsWanted::Last).unwrap_err();
    assert!(format!("{e}").contains("context"), "{e}");
}

fn hf_copy(tag: &str) -> std::path::PathBuf {
    let src = fixture("hf-packed");
    let d = std::env::temp_dir().join(format!("bitnet-hostile-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    d
}

fn hf_err(dir: &std::path::Path) -> String {
    match load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("hostile folder {} loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn hostile_hugging_face_folders_fail_cleanly() {
    let d = hf_copy("st");
    let st = d.join("model.safetensors");
    let good = std::fs::read(&st).unwrap();
    // Truncated anywhere.
    for cut in [0, 4, 8, 100, good.len() / 2, good.len() - 1] {
        std::fs::write(&st, &good[..cut]).unwrap();
        let e = hf_err(&d);
        assert!(e.contains("model.safetensors"), "cut {cut}: {e}");
    }
    // Header length pointing past the end.
    let mut b = good.clone();
    b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&st, &b).unwrap();
    hf_err(&d);
    // A dtype / shape mismatch: retype a packed projection as F32 with the same bytes.
    let hdr_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&good[8..8 + hdr_len]).unwrap();
    let mut j: serde_json::Value = serde_json::from_str(header).unwrap();
    let name = "model.layers.0.self_attn.q_proj.weight";
    let shape = j[name]["shape"].clone();
    j[name]["dtype"] = "BF16".into();
    j[name]["shape"] = serde_json::json!([shape[0].as_u64().unwrap() / 2, shape[1]]);
    let mut h = serde_json::to_string(&j).unwrap().into_bytes();
    while h.len() < hdr_len {
        h.push(b' ');
    }
    if h.len() == hdr_len {
        let mut b = good[..8].to_vec();
        b.extend_from_slice(&h);
        b.extend_from_slice(&good[8 + hdr_len..]);
        std::fs::write(&st, &b).unwrap();
        let e = hf_err(&d);
        assert!(e.contains(name), "{e}");
    }
    std::fs::write(&st, &good).unwrap();
    // Broken config.json.
    let cfg = d.join("config.json");
    let good_cfg = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, "{ not json").unwrap();
    assert!(hf_err(&d).contains("config.json"));
    std::fs::write(&cfg, good_cfg.replace("\"hidden_size\"", "\"hidden_sizes\"")).unwrap();
    assert!(hf_err(&d).contains("hidden_size"));
    std::fs::write(
        &cfg,
        good_cfg.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": -4"),
    )
    .unwrap();
    assert!(hf_err(&d).contains("num_attention_heads"));
    let _ = std::fs::remove_dir_all(&d);
}

/// A copy of fixture `src` with the bytes of tensor `name` changed by `edit`.
fn with_tensor_bytes(src: &str, name: &str, edit: impl Fn(&mut Vec<u8>)) -> GgufWriter {
    let g = GgufFile::open(&fixture(src)).expect("fixture");
    let mut w = GgufWriter::new();
    for (k, v) in g.metadata() {
        if k != "general.alignment" {
            w.add_metadata(k.clone(), v.clone()).expect("metadata");
        }
    }
    for t in g.tensors() {
        let mut data = g.tensor_data(t).to_vec();
        if t.name == name {
            edit(&mut data);
        }
        w.add_tensor(t.name.clone(), &t.dims, t.ggml_type, data)
            .expect("tensor");
    }
    w
}

#[test]
fn non_finite_weight_scales_are_rejected() {
    let name = "blk.0.attn_q.weight";
    // I2_S: the f32 scale after the packed codes.
    let g = GgufFile::open(&fixture("gguf/bitnet-b158-i2_s.gguf")).unwrap();
    let n = g.tensor(name).unwrap().n_elements() as usize;
    for bad in [f32::NAN, f32::INFINITY] {
        let e = err_of(&with_tensor_bytes("gguf/bitnet-b158-i2_s.gguf", name, |d| {
            d[n / 4..n / 4 + 4].copy_from_slice(&bad.to_le_bytes())
        }));
        assert!(e.contains(name) && e.contains("finite"), "{e}");
    }
    // TQ2_0 and TQ1_0: an f16 infinity (0x7c00) as a block scale (TQ2_0: bytes 64..66 of a 66-byte
    // block; TQ1_0: bytes 52..54 of a 54-byte block), in the second block.
    for (file, bs, at) in [
        ("gguf/llamacpp-tq2_0.gguf", 66, 64),
        ("gguf/llamacpp-tq1_0.gguf", 54, 52),
    ] {
        let e = err_of(&with_tensor_bytes(file, name, |d| {
            d[bs + at..bs + at + 2].copy_from_slice(&[0x00, 0x7c])
        }));
        assert!(
            e.contains(name) && e.contains("block 1") && e.contains("finite"),
            "{file}: {e}"
        );
    }
}

#[test]
fn hostile_checkpoint_layouts_are_named() {
    // An untied model without its head.
    let d = hf_copy("untied");
    let cfg = d.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false"),
    )
    .unwrap();
    let e = hf_err(&d);
    assert!(e.contains("lm_head.weight") && e.contains("tie_word_embeddings"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
    // Shards: one tensor in two shards, and names that are not plain file names.
    let d = hf_copy("shards");
    let st = d.join("model.safetensors");
    std::fs::copy(&st, d.join("a.safetensors")).unwrap();
    std::fs::rename(&st, d.join("b.safetensors")).unwrap();
    let index = d.join("model.safetensors.index.json");
    let map = |a: &str, b: &str| {
        format!(r#"{{"weight_map": {{"model.norm.weight": "{a}", "model.embed_tokens.weight": "{b}"}}}}"#)
    };
    std::fs::write(&index, map("a.safetensors", "b.safetensors")).unwrap();
    let e = hf_err(&d);
    assert!(
        e.contains("two shards") && e.contains("a.safetensors") && e.contains("b.safetensors"),
        "{e}"
    );
    for bad in ["", "../b.safetensors", "/etc/passwd", ".hidden"] {
        std::fs::write(&index, map("a.safetensors", bad)).unwrap();
        let e = hf_err(&d);
        assert!(e.contains("plain file name"), "{bad:?}: {e}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn inspect_escapes_what_the_file_says() {
    let mut w = writer_from("gguf/bitnet-b158-i2_s.gguf", None, None);
    w.add_metadata("general.description", "\u{1b}[2J\u{7}clear\rscreen")
        .unwrap();
    let p = std::env::temp_dir().join(format!("bitnet-inspect-escape-{}.gguf", std::process::id()));
    std::fs::write(&p, w.to_bytes().unwrap()).unwrap();
    let report = bitnet_model::inspect::inspect(&p, &LoadOptions::default())
        .unwrap()
        .to_string();
    let _ = std::fs::remove_file(&p);
    assert!(report.contains("general.description"), "{report}");
    assert!(
        !report.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in the report"
    );
    assert!(report.contains("\\u{1b}[2J\\u{7}clear\\rscreen"), "{report}");
}

#[test]
fn a_tokenizer_larger_than_the_embedding_table_is_refused_at_load() {
    let g = GgufFile::open(&fixture("gguf/bitnet-b158-i2_s.gguf")).expect("fixture");
    let mut w = writer_from("gguf/bitnet-b158-i2_s.gguf", None, None);
    let MetadataValue::Array(tokens) = g.get("tokenizer.ggml.tokens").expect("tokens").clone() else {
        panic!("tokens");
    };
    let n = tokens.len();
    let mut tokens = tokens;
    tokens.extend((0..50).map(|i| MetadataValue::String(format!("<extra_{i}>"))));
    w.set_metadata("tokenizer.ggml.tokens", MetadataValue::Array(tokens))
        .unwrap();
    for key in ["tokenizer.ggml.token_type", "tokenizer.ggml.scores"] {
        if let Some(MetadataValue::Array(v)) = g.get(key) {
            let mut v = v.clone();
            let fill = v[0].clone();
            v.extend(std::iter::repeat_n(fill, 50));
            w.set_metadata(key, MetadataValue::Array(v)).unwrap();
        }
    }
    let e = err_of(&w);
    assert!(
        e.contains(&format!("{} token ids", n + 50)) && e.contains(&format!("{n} rows")),
        "{e}"
    );
}
