//! The real GGUF files of the tiny-a fixture (bitnet.cpp, our Python writer, llama.cpp), checked
//! against the facts recorded in the fixture's reference/gguf_checks.json and README.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use bitnet_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, MetadataValue};
use common::{f16_to_f32, fixture_bytes, open_fixture, FIXTURES};

/// Count of tensors per type.
fn type_counts(f: &GgufFile) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for t in f.tensors() {
        *m.entry(t.ggml_type.name()).or_insert(0) += 1;
    }
    m
}

fn counts(pairs: &[(&'static str, usize)]) -> BTreeMap<&'static str, usize> {
    pairs.iter().copied().collect()
}

#[test]
fn every_fixture_opens_with_consistent_tensors() {
    for name in FIXTURES {
        let f = open_fixture(name);
        assert_eq!(f.version(), 3, "{name}");
        assert_eq!(f.alignment(), 32, "{name}");
        assert_eq!(f.data_offset() % 32, 0, "{name}");
        assert_eq!(f.tensors().len(), 35, "{name}");
        let source = f.source();
        let whole: &[u8] = (*source).as_ref();
        for t in f.tensors() {
            let n = t.n_elements();
            assert_eq!(
                Some(t.n_bytes),
                t.ggml_type.tensor_bytes(t.dims[0], n),
                "{name} {}",
                t.name
            );
            let data = f.tensor_data(t);
            assert_eq!(data.len() as u64, t.n_bytes, "{name} {}", t.name);
            let range = f.tensor_range(t);
            assert_eq!(&whole[range], data);
            assert!(std::ptr::eq(f.tensor(&t.name).unwrap(), t));
        }
        // Every tensor of the model is present, tied embeddings (no output.weight).
        assert!(f.tensor("token_embd.weight").is_some(), "{name}");
        assert!(f.tensor("output_norm.weight").is_some(), "{name}");
        assert!(f.tensor("output.weight").is_none(), "{name}");
        for layer in 0..3 {
            for part in [
                "attn_norm",
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_sub_norm",
                "attn_output",
                "ffn_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_sub_norm",
                "ffn_down",
            ] {
                let tname = format!("blk.{layer}.{part}.weight");
                assert!(f.tensor(&tname).is_some(), "{name}: {tname}");
            }
        }
        let emb = f.tensor("token_embd.weight").unwrap();
        assert_eq!(emb.dims, vec![256, 1024], "{name}");
        assert_eq!(f.tensor("blk.0.ffn_down.weight").unwrap().dims, vec![768, 256]);
        assert_eq!(f.tensor("blk.0.ffn_up.weight").unwrap().dims, vec![256, 768]);
        assert_eq!(f.tensor("blk.1.attn_k.weight").unwrap().dims, vec![256, 64]);
        assert_eq!(f.tensor("output_norm.weight").unwrap().dims, vec![256]);

        // Common tokenizer facts.
        assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
        let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
        assert_eq!(tokens.len(), 1024, "{name}");
        assert_eq!(&tokens[..4], &["!", "\"", "#", "$"]);
        let merges = f.get_str_array("tokenizer.ggml.merges").unwrap();
        assert_eq!(merges.len(), 758, "{name}");
        assert_eq!(&merges[..4], &["h e", "Ġ t", "i n", "r e"]);
        let types = f.get_i32_array("tokenizer.ggml.token_type").unwrap();
        assert_eq!(types.len(), 1024);
        assert_eq!(&types[..4], &[1, 1, 1, 1]);
        assert_eq!(types[1014], 3, "{name}: special tokens are CONTROL");
        assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1014);
        assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 1015);
        assert_eq!(f.get_u32("general.quantization_version").unwrap(), 2);
        assert!(f
            .get_str("tokenizer.chat_template")
            .unwrap()
            .contains("for message in messages"));
    }
}

#[test]
fn bitnet_b158_i2s_metadata_and_types() {
    let f = open_fixture("bitnet-b158-i2_s.gguf");
    assert_eq!(f.get_str("general.architecture").unwrap(), "bitnet-b1.58");
    assert_eq!(f.get_str("general.name").unwrap(), "bitnet2b");
    assert_eq!(f.metadata().len(), 23);
    assert_eq!(f.metadata()[0].0, "general.architecture");
    let u = |k: &str| f.get_u64(&format!("bitnet-b1.58.{k}")).unwrap();
    assert_eq!(u("vocab_size"), 1024);
    assert_eq!(u("context_length"), 4096);
    assert_eq!(u("embedding_length"), 256);
    assert_eq!(u("block_count"), 3);
    assert_eq!(u("feed_forward_length"), 768);
    assert_eq!(u("rope.dimension_count"), 64);
    assert_eq!(u("attention.head_count"), 4);
    assert_eq!(u("attention.head_count_kv"), 1);
    assert_eq!(
        f.get_f32("bitnet-b1.58.attention.layer_norm_rms_epsilon").unwrap(),
        9.999_999_747_378_752e-6_f64 as f32
    );
    assert_eq!(f.get_f32("bitnet-b1.58.rope.freq_base").unwrap(), 500000.0);
    assert!(f.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(f.get_u32("general.file_type").unwrap(), 40);
    assert_eq!(f.get_i64("general.file_type").unwrap(), 40);
    let scores = f.get_f32_array("tokenizer.ggml.scores").unwrap();
    assert_eq!(scores.len(), 1024);
    assert_eq!(&scores[..4], &[0.0; 4]);
    assert_eq!(scores[1014], -1000.0, "bitnet.cpp scores special tokens -1000");
    assert!(f.get("tokenizer.ggml.pre").is_none());

    assert_eq!(type_counts(&f), counts(&[("F16", 1), ("F32", 13), ("I2_S", 21)]));
    assert_eq!(f.tensor("token_embd.weight").unwrap().ggml_type, GgmlType::F16);

    // I2_S: n/4 packed bytes, then the f32 per-tensor scale (= HF weight_scale).
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ggml_type, GgmlType::I2_S);
    assert_eq!(q.dims, vec![256, 256]);
    assert_eq!(q.n_bytes, 256 * 256 / 4 + 32);
    let data = f.tensor_data(q);
    let n4 = 256 * 256 / 4;
    let scale = f32::from_le_bytes(data[n4..n4 + 4].try_into().unwrap());
    assert_eq!(scale, 0.042_479_574_680_328_37_f64 as f32);
    let down = f.tensor("blk.0.ffn_down.weight").unwrap();
    let data = f.tensor_data(down);
    let n4 = 768 * 256 / 4;
    let scale = f32::from_le_bytes(data[n4..n4 + 4].try_into().unwrap());
    assert_eq!(scale, 0.242_767_393_589_019_78_f64 as f32);
}

#[test]
fn bitnetcpp_i2s_is_arch_bitnet25_with_the_same_tensors_as_b158() {
    let cpp = open_fixture("bitnetcpp-i2_s.gguf");
    let b158 = open_fixture("bitnet-b158-i2_s.gguf");
    assert_eq!(cpp.get_str("general.architecture").unwrap(), "bitnet-25");
    assert_eq!(cpp.get_str("general.name").unwrap(), "bitnet2b_2501");
    assert_eq!(cpp.get_u64("bitnet-25.embedding_length").unwrap(), 256);
    assert_eq!(cpp.get_u64("bitnet-25.vocab_size").unwrap(), 1024);
    assert_eq!(cpp.get_u32("general.file_type").unwrap(), 40);
    assert!(cpp
        .get_str("tokenizer.chat_template")
        .unwrap()
        .contains("BITNETAssistant"));
    assert_eq!(type_counts(&cpp), counts(&[("F16", 1), ("F32", 13), ("I2_S", 21)]));
    // Tensor order differs, but every tensor is byte-identical except the I2_S trailer's
    // 28 uninitialised bytes after the scale.
    assert_ne!(cpp.tensors()[0].name, b158.tensors()[0].name);
    for t in b158.tensors() {
        let u = cpp.tensor(&t.name).expect("same tensor names");
        assert_eq!((&u.dims, u.ggml_type, u.n_bytes), (&t.dims, t.ggml_type, t.n_bytes));
        let (a, b) = (b158.tensor_data(t), cpp.tensor_data(u));
        let compared = match t.ggml_type {
            GgmlType::I2_S => (t.n_elements() / 4 + 4) as usize,
            _ => a.len(),
        };
        assert_eq!(&a[..compared], &b[..compared], "{}", t.name);
    }
}

#[test]
fn llamacpp_files_metadata_and_types() {
    let cases = [
        ("llamacpp-f16.gguf", 1, counts(&[("F16", 22), ("F32", 13)])),
        (
            "llamacpp-tq1_0.gguf",
            36,
            counts(&[("F32", 13), ("Q6_K", 1), ("TQ1_0", 21)]),
        ),
        (
            "llamacpp-tq2_0.gguf",
            37,
            counts(&[("F32", 13), ("Q6_K", 1), ("TQ2_0", 21)]),
        ),
        (
            "llamacpp-tq2_0-f16emb.gguf",
            37,
            counts(&[("F16", 1), ("F32", 13), ("TQ2_0", 21)]),
        ),
    ];
    for (name, file_type, types) in cases {
        let f = open_fixture(name);
        assert_eq!(f.get_str("general.architecture").unwrap(), "bitnet");
        assert_eq!(f.get_str("general.name").unwrap(), "Hf Bf16");
        assert_eq!(f.get_str("general.size_label").unwrap(), "2.5M");
        assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "llama-bpe");
        assert_eq!(f.get_str("bitnet.rope.scaling.type").unwrap(), "linear");
        assert_eq!(f.get_f32("bitnet.rope.scaling.factor").unwrap(), 1.0);
        assert_eq!(f.get_u32("general.file_type").unwrap(), file_type, "{name}");
        assert_eq!(f.get_u64("bitnet.block_count").unwrap(), 3);
        assert_eq!(f.get_u64("bitnet.attention.head_count_kv").unwrap(), 1);
        assert_eq!(f.metadata().len(), 24);
        assert!(f.get("bitnet.vocab_size").is_none());
        assert!(f.get("tokenizer.ggml.scores").is_none());
        assert!(f.get("tokenizer.ggml.add_bos_token").is_none());
        assert_eq!(type_counts(&f), types, "{name}");
    }

    // TQ2_0: 64 bytes of 2-bit codes then the f16 block scale, here the bf16-rounded
    // weight scale of layer 0's attn_q.
    let f = open_fixture("llamacpp-tq2_0.gguf");
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ggml_type, GgmlType::TQ2_0);
    assert_eq!(q.n_bytes, 256 * 66);
    let data = f.tensor_data(q);
    let d = f16_to_f32(u16::from_le_bytes([data[64], data[65]]));
    assert_eq!(d, 0.042_480_468_75_f64 as f32);
    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!((emb.ggml_type, emb.n_bytes), (GgmlType::Q6_K, 1024 * 210));

    let f = open_fixture("llamacpp-tq1_0.gguf");
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.n_bytes, 256 * 54);
    let data = f.tensor_data(q);
    assert_eq!(
        f16_to_f32(u16::from_le_bytes([data[52], data[53]])),
        0.042_480_468_75_f64 as f32
    );
}

#[test]
fn typed_getters_name_the_key_and_the_types() {
    let f = open_fixture("bitnet-b158-i2_s.gguf");
    let e = f.get_u32("bitnet-b1.58.no_such_key").unwrap_err();
    assert!(matches!(&e, GgufError::MissingKey { key, .. } if key == "bitnet-b1.58.no_such_key"));
    let msg = e.to_string();
    assert!(msg.contains("bitnet-b1.58.no_such_key") && msg.contains("bitnet-b158-i2_s.gguf"));

    let e = f.get_u64("general.architecture").unwrap_err();
    assert!(matches!(&e, GgufError::WrongType { key, found, .. }
        if key == "general.architecture" && found == "string"));
    assert_eq!(
        f.get_str("general.file_type").unwrap_err().to_string(),
        format!(
            "{}: metadata key 'general.file_type' has type u32, expected string",
            f.name()
        )
    );
    let e = f.get_str_array("tokenizer.ggml.scores").unwrap_err();
    assert!(e.to_string().contains("array of f32"), "{e}");
    assert!(f.get_f32_array("tokenizer.ggml.tokens").is_err());
    assert!(f.get_i32_array("tokenizer.ggml.scores").is_err());
    assert!(f.get_bool("general.name").is_err());
    assert!(f.get_f32("general.file_type").is_err());
    assert!(matches!(
        f.tensor_data_by_name("output.weight"),
        Err(GgufError::MissingTensor { .. })
    ));
    assert_eq!(
        f.get("general.architecture"),
        Some(&MetadataValue::String("bitnet-b1.58".into()))
    );
}

#[test]
fn open_reports_missing_files_with_the_path() {
    let path = common::fixture_path("does-not-exist.gguf");
    let e = GgufFile::open(&path).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }));
    assert!(e.to_string().contains("does-not-exist.gguf"), "{e}");
}

/// Rewriting a fixture with our writer reproduces its metadata and tensor bytes, and in fact
/// the whole file byte for byte.
#[test]
fn fixtures_round_trip_through_the_writer() {
    for name in FIXTURES {
        let f = open_fixture(name);
        let mut w = GgufWriter::new();
        for (k, v) in f.metadata() {
            w.add_metadata(k.clone(), v.clone()).unwrap();
        }
        // Write tensors in data order so that the layout matches the original's.
        let mut tensors: Vec<_> = f.tensors().iter().collect();
        tensors.sort_by_key(|t| t.offset);
        for t in &tensors {
            w.add_tensor(t.name.clone(), &t.dims, t.ggml_type, f.tensor_data(t))
                .unwrap();
        }
        let bytes = w.to_bytes().unwrap();
        let g = GgufFile::from_bytes(bytes.clone(), "rewritten").unwrap();
        assert_eq!(g.metadata(), f.metadata(), "{name}");
        for t in f.tensors() {
            let u = g.tensor(&t.name).unwrap();
            assert_eq!((&u.dims, u.ggml_type), (&t.dims, t.ggml_type));
            assert_eq!(g.tensor_data(u), f.tensor_data(t), "{name} {}", t.name);
        }
        // All six writers (bitnet.cpp, gguf-py, llama-quantize) list tensor entries in data
        // order with the canonical padding, so the rewrite is byte-identical.
        assert!(f.tensors().windows(2).all(|w| w[0].offset < w[1].offset));
        let original = fixture_bytes(name);
        assert_eq!(bytes.len(), original.len(), "{name}");
        assert!(bytes == original, "{name}: rewrite is not byte-identical");
    }
}

#[test]
fn open_reads_only_the_header_of_a_large_sparse_file() {
    // A 2 GiB F32 tensor in a sparse file: opening must not touch the data.
    let dir = std::env::temp_dir().join(format!("bitnet-gguf-sparse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.gguf");
    let mut raw = common::Raw::header(1, 1);
    raw.kv_str("general.architecture", "test")
        .tensor("big", &[1 << 14, 1 << 15], 0, 0)
        .pad(32);
    let header = raw.build();
    let total = header.len() as u64 + (1u64 << 31);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&header).unwrap();
        file.set_len(total).unwrap();
    }
    let start = Instant::now();
    let f = GgufFile::open(&path).unwrap();
    let elapsed = start.elapsed();
    let t = f.tensor("big").unwrap();
    assert_eq!(t.n_bytes, 1 << 31);
    assert_eq!(f.tensor_range(t).end as u64, total);
    assert!(elapsed.as_secs_f64() < 1.0, "open took {elapsed:?}");
    drop(f);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `release` drops pages of a mapped file from the process but never changes what it reads: every
/// tensor reads the same bytes after its own (and a bogus, out-of-file) range is released.
#[test]
fn released_ranges_read_the_same_bytes() {
    for name in FIXTURES {
        let f = open_fixture(name);
        let before: Vec<Vec<u8>> = f.tensors().iter().map(|t| f.tensor_data(t).to_vec()).collect();
        for t in f.tensors() {
            f.release(f.tensor_range(t));
        }
        f.release(0..usize::MAX);
        f.release(usize::MAX - 1..usize::MAX);
        for (t, want) in f.tensors().iter().zip(&before) {
            assert_eq!(f.tensor_data(t), &want[..], "{name} {}", t.name);
        }
    }
}
