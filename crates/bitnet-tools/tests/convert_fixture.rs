//! `convert` against the tiny-a fixture: I2_S output identical to the official-layout file, TQ output
//! with the same codes as llama.cpp's files, exact round trips, hostile inputs, atomic writing.

use std::path::{Path, PathBuf};

use bitnet_gguf::{GgmlType, GgufFile, MetadataValue};
use bitnet_kernels::{i2s, Bytes, TernaryMatrix};
use bitnet_model::{load, InferenceState, LoadOptions, LogitsWanted};
use bitnet_tools::convert::{build, convert, ConvertOptions, HeadType, TernaryType};
use half::f16;

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-a")
        .join(p)
}

fn opts(to: TernaryType) -> ConvertOptions {
    ConvertOptions {
        to,
        ..ConvertOptions::default()
    }
}

fn to_file(input: &Path, o: &ConvertOptions, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    convert(input, &out, o).unwrap_or_else(|e| panic!("converting {}: {e:#}", input.display()));
    out
}

/// Codes and per-block scales of a ternary GGUF tensor.
fn ternary(g: &GgufFile, name: &str) -> (Vec<i8>, Vec<f32>) {
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
    let mut codes = vec![0i8; rows * cols];
    let nb = cols.div_ceil(m.block_size());
    let mut scales = vec![0f32; rows * nb];
    for r in 0..rows {
        m.row_codes(r, &mut codes[r * cols..(r + 1) * cols]);
        m.row_scales(r, &mut scales[r * nb..(r + 1) * nb]);
    }
    (codes, scales)
}

fn projection_names(g: &GgufFile) -> Vec<String> {
    g.tensors()
        .iter()
        .filter(|t| matches!(t.ggml_type, GgmlType::I2_S | GgmlType::TQ2_0 | GgmlType::TQ1_0))
        .map(|t| t.name.clone())
        .collect()
}

fn assert_same_as_official(ours: &GgufFile, label: &str) {
    let official = GgufFile::open(&fixture("gguf/bitnet-b158-i2_s.gguf")).unwrap();
    let names = |g: &GgufFile| {
        g.tensors()
            .iter()
            .map(|t| (t.name.clone(), t.dims.clone(), t.ggml_type))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(ours),
        names(&official),
        "{label}: tensor names, shapes, types or order differ"
    );
    for t in official.tensors() {
        let a = official.tensor_data(t);
        let b = ours.tensor_data(ours.tensor(&t.name).unwrap());
        let n = if t.ggml_type == GgmlType::I2_S {
            (t.n_elements() / 4 + 4) as usize // packed codes + f32 scale; the 28-byte tail is undefined
        } else {
            a.len()
        };
        if t.ggml_type == GgmlType::I2_S && label == "hf-bf16" {
            // Codes identical; the absmean scale is summed in f64 by the engine and in f32 by torch (which
            // made the official file's weight_scale), so the last bits of the f32 may differ.
            let m = n - 4;
            assert_eq!(&a[..m], &b[..m], "{label}: tensor {} codes differ", t.name);
            let f = |x: &[u8]| f32::from_le_bytes([x[m], x[m + 1], x[m + 2], x[m + 3]]);
            let (sa, sb) = (f(a), f(b));
            assert!(
                (sa - sb).abs() <= 4.0 * f32::EPSILON * sa.abs(),
                "{label}: {} scale {sa} vs {sb}",
                t.name
            );
        } else {
            assert_eq!(&a[..n], &b[..n], "{label}: tensor {} differs", t.name);
        }
        assert_eq!(b.len(), a.len(), "{label}: tensor {} size", t.name);
    }
    // Same metadata keys, order and values, except the name and the pre-tokenizer we add.
    let keys = |g: &GgufFile| {
        g.metadata()
            .iter()
            .filter(|(k, _)| k != "general.name" && k != "tokenizer.ggml.pre")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(ours), keys(&official), "{label}: metadata differs");
    assert_eq!(ours.get_str("tokenizer.ggml.pre").unwrap(), "llama-bpe");
}

#[test]
fn hf_folders_to_i2s_match_the_official_layout_file() {
    let dir = tempfile::tempdir().unwrap();
    for src in ["hf-bf16", "hf-packed"] {
        let out = to_file(
            &fixture(src),
            &opts(TernaryType::I2S),
            dir.path(),
            &format!("{src}.gguf"),
        );
        assert_same_as_official(&GgufFile::open(&out).unwrap(), src);
    }
}

#[test]
fn official_file_converts_to_itself_plus_pre() {
    let dir = tempfile::tempdir().unwrap();
    let out = to_file(
        &fixture("gguf/bitnet-b158-i2_s.gguf"),
        &opts(TernaryType::I2S),
        dir.path(),
        "again.gguf",
    );
    let g = GgufFile::open(&out).unwrap();
    assert_same_as_official(&g, "official -> i2_s");
    assert_eq!(
        g.get_str("general.name").unwrap(),
        "bitnet2b",
        "the input's name is kept"
    );
}

fn logits(path: &Path) -> Vec<f32> {
    let ids: Vec<u32> = {
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture("reference/input.json")).unwrap()).unwrap();
        j["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    let (m, _) = load(path, &LoadOptions::default()).unwrap();
    let mut st = InferenceState::new(&m, ids.len());
    m.forward(&ids, &mut st, LogitsWanted::All).unwrap().to_vec()
}

#[test]
fn converted_i2s_gives_the_packed_folders_logits() {
    let dir = tempfile::tempdir().unwrap();
    let b = logits(&fixture("hf-packed"));
    let out = to_file(&fixture("hf-packed"), &opts(TernaryType::I2S), dir.path(), "p.gguf");
    let a = logits(&out);
    let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    // Same codes and scale; only the kernels' summation order over the two in-memory layouts may differ.
    assert!(
        max <= 1e-5 * amax,
        "converted packed folder: logits differ by up to {max}"
    );
    // From the bf16 masters the scale may differ in its last bit (f64 vs torch's f32 mean).
    let out = to_file(&fixture("hf-bf16"), &opts(TernaryType::I2S), dir.path(), "m.gguf");
    let a = logits(&out);
    let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(max <= 1e-5 * amax, "logits differ by up to {max} (max |logit| {amax})");
}

#[test]
fn tq_outputs_have_llama_cpp_codes() {
    let dir = tempfile::tempdir().unwrap();
    let official = GgufFile::open(&fixture("gguf/bitnet-b158-i2_s.gguf")).unwrap();
    for (to, theirs) in [
        (TernaryType::TQ2_0, "gguf/llamacpp-tq2_0.gguf"),
        (TernaryType::TQ1_0, "gguf/llamacpp-tq1_0.gguf"),
    ] {
        let out = to_file(&fixture("hf-bf16"), &opts(to), dir.path(), &format!("{to:?}.gguf"));
        let ours = GgufFile::open(&out).unwrap();
        let lc = GgufFile::open(&fixture(theirs)).unwrap();
        assert_eq!(ours.get_str("general.architecture").unwrap(), "bitnet");
        assert_eq!(ours.get_str("bitnet.hidden_activation").unwrap(), "relu2");
        assert_eq!(ours.get_str("tokenizer.ggml.pre").unwrap(), "llama-bpe");
        assert_eq!(
            ours.get_u32("general.file_type").unwrap(),
            lc.get_u32("general.file_type").unwrap()
        );
        for key in [
            "bitnet.block_count",
            "bitnet.context_length",
            "bitnet.embedding_length",
            "bitnet.feed_forward_length",
            "bitnet.attention.head_count",
            "bitnet.attention.head_count_kv",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
        ] {
            assert_eq!(ours.get_u64(key).unwrap(), lc.get_u64(key).unwrap(), "{key}");
        }
        for key in ["bitnet.rope.freq_base", "bitnet.attention.layer_norm_rms_epsilon"] {
            assert_eq!(ours.get_f32(key).unwrap(), lc.get_f32(key).unwrap(), "{key}");
        }
        for key in [
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.token_type",
            "tokenizer.chat_template",
        ] {
            assert_eq!(ours.get(key), lc.get(key), "{key}");
        }
        let names = projection_names(&lc);
        assert_eq!(names.len(), 21);
        let mut max_scale_rel = 0f32;
        for n in &names {
            let (c_ours, s_ours) = ternary(&ours, n);
            let (c_lc, s_lc) = ternary(&lc, n);
            assert_eq!(c_ours, c_lc, "{to:?} {n}: codes differ from llama.cpp's");
            // Our block scales: the exact f32 absmean scale rounded once to f16 (the official file's scale).
            let (_, s_off) = ternary(&official, n);
            let want = f16::from_f32(s_off[0]).to_f32();
            assert!(s_ours.iter().all(|&s| s == want), "{n}: our scale is not f16(absmean)");
            for (a, b) in s_ours.iter().zip(&s_lc) {
                if *b != 0.0 {
                    max_scale_rel = max_scale_rel.max((a - b).abs() / b);
                }
            }
        }
        // llama.cpp's scales went through bf16 first: within bf16's rounding (2^-8) of ours.
        assert!(max_scale_rel < 1.0 / 256.0, "{to:?}: scales differ by {max_scale_rel}");
        // Our engine loads it, with squared ReLU from the key.
        let (m, _) = load(&out, &LoadOptions::default()).unwrap();
        assert_eq!(m.cfg.ffn_act, bitnet_model::FfnActivation::Relu2);
    }
}

#[test]
fn round_trips_between_ternary_types_keep_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let i2 = to_file(&fixture("hf-packed"), &opts(TernaryType::I2S), d, "a.gguf");
    let tq2 = to_file(&i2, &opts(TernaryType::TQ2_0), d, "b.gguf");
    let tq1 = to_file(&tq2, &opts(TernaryType::TQ1_0), d, "c.gguf");
    let tq2b = to_file(&tq1, &opts(TernaryType::TQ2_0), d, "d.gguf");
    let i2b = to_file(&tq2b, &opts(TernaryType::I2S), d, "e.gguf");
    let files: Vec<GgufFile> = [&i2, &tq2, &tq1, &tq2b, &i2b]
        .iter()
        .map(|p| GgufFile::open(p).unwrap())
        .collect();
    for n in projection_names(&files[0]) {
        let all: Vec<(Vec<i8>, Vec<f32>)> = files.iter().map(|g| ternary(g, &n)).collect();
        for (k, (c, _)) in all.iter().enumerate() {
            assert_eq!(c, &all[0].0, "{n}: codes changed at step {k}");
        }
        assert_eq!(all[1].1, all[2].1, "{n}: TQ2_0 -> TQ1_0 changed scales");
        assert_eq!(all[1].1, all[3].1, "{n}: TQ1_0 -> TQ2_0 changed scales");
        assert_eq!(
            all[4].1[0],
            f16::from_f32(all[0].1[0]).to_f32(),
            "{n}: I2_S scale after TQ is the f16 one"
        );
    }
    // TQ2_0 -> TQ2_0 is byte-identical.
    let again = to_file(&tq2b, &opts(TernaryType::TQ2_0), d, "f.gguf");
    let (x, y) = (GgufFile::open(&again).unwrap(), GgufFile::open(&tq2b).unwrap());
    for t in y.tensors() {
        assert_eq!(
            x.tensor_data(x.tensor(&t.name).unwrap()),
            y.tensor_data(t),
            "{}",
            t.name
        );
    }
}

#[test]
fn llama_cpp_file_needs_the_activation_for_i2s() {
    let src = fixture("gguf/llamacpp-tq2_0.gguf");
    let e = format!("{:#}", build(&src, &opts(TernaryType::I2S)).err().unwrap());
    assert!(e.contains("--ffn-act relu2"), "{e}");
    let o = ConvertOptions {
        ffn_act: Some(bitnet_model::FfnActivation::Relu2),
        head_type: HeadType::F16,
        ..opts(TernaryType::I2S)
    };
    let (w, s) = build(&src, &o).unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let g = GgufFile::from_bytes(w.to_bytes().unwrap(), "x").unwrap();
    let official = GgufFile::open(&fixture("gguf/bitnet-b158-i2_s.gguf")).unwrap();
    for n in projection_names(&official) {
        assert_eq!(ternary(&g, &n).0, ternary(&official, &n).0, "{n}");
    }
    // Keeping the Q6_K embedding as it is.
    let o = ConvertOptions {
        head_type: HeadType::Source,
        ..o
    };
    let (w, _) = build(&src, &o).unwrap();
    let g = GgufFile::from_bytes(w.to_bytes().unwrap(), "x").unwrap();
    assert_eq!(g.tensor("token_embd.weight").unwrap().ggml_type, GgmlType::Q6_K);
}

#[test]
fn head_types() {
    for (h, ty) in [
        (HeadType::F32, GgmlType::F32),
        (HeadType::BF16, GgmlType::BF16),
        (HeadType::Q8_0, GgmlType::Q8_0),
    ] {
        let o = ConvertOptions {
            head_type: h,
            ..opts(TernaryType::TQ2_0)
        };
        let (w, _) = build(&fixture("hf-bf16"), &o).unwrap();
        let g = GgufFile::from_bytes(w.to_bytes().unwrap(), "x").unwrap();
        assert_eq!(g.tensor("token_embd.weight").unwrap().ggml_type, ty);
        bitnet_model::load_gguf::from_gguf(&g, None).unwrap();
    }
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// Rewrites `model.safetensors` of a copied folder with one tensor changed.
fn rewrite(dir: &Path, victim: &str, dtype: safetensors::Dtype, shape: Vec<usize>, data: Vec<u8>) {
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for t in owned.iter_mut().filter(|t| t.0 == victim) {
        *t = (victim.to_string(), dtype, shape.clone(), data.clone());
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &p).unwrap();
}

#[test]
fn hostile_inputs_give_clear_errors_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("hf-bf16");
    let case = |name: &str, f: &dyn Fn(&Path)| -> String {
        let d = dir.path().join(name);
        copy_dir(&src, &d);
        f(&d);
        let out = dir.path().join(format!("{name}.gguf"));
        let e = format!("{:#}", convert(&d, &out, &opts(TernaryType::I2S)).unwrap_err());
        assert!(!out.exists(), "{name}: output written despite the error");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: temporary file left behind");
        e
    };
    let e = case("truncated", &|d| {
        let p = d.join("model.safetensors");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 1000]).unwrap();
    });
    assert!(e.contains("model.safetensors"), "{e}");
    let e = case("header-past-end", &|d| {
        let p = d.join("model.safetensors");
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len() as u64 * 2;
        b[..8].copy_from_slice(&n.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
    });
    assert!(e.contains("model.safetensors") && e.contains("header"), "{e}");
    let name = "model.layers.2.mlp.down_proj.weight";
    let e = case("shape", &|d| {
        rewrite(
            d,
            name,
            safetensors::Dtype::BF16,
            vec![768, 256],
            vec![0u8; 768 * 256 * 2],
        )
    });
    assert!(e.contains(name) && e.contains("shape"), "{e}");
    let e = case("dtype", &|d| {
        rewrite(
            d,
            name,
            safetensors::Dtype::I32,
            vec![256, 768],
            vec![0u8; 256 * 768 * 4],
        )
    });
    assert!(e.contains(name) && e.contains("I32"), "{e}");
}

#[test]
fn refuses_to_overwrite_without_force_and_keeps_old_output_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    std::fs::write(&out, b"old").unwrap();
    let e = convert(&fixture("hf-packed"), &out, &opts(TernaryType::I2S))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    // A failing conversion with --force leaves the old file alone (rows of 256 fit TQ; a Q8_0 head too,
    // so make it fail through the FFN activation instead).
    let forced = ConvertOptions {
        force: true,
        ..opts(TernaryType::I2S)
    };
    assert!(convert(&fixture("gguf/llamacpp-tq2_0.gguf"), &out, &forced).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    convert(&fixture("hf-packed"), &out, &forced).unwrap();
    assert!(GgufFile::open(&out).is_ok());
    let _ = i2s::BLOCK;
    let _ = MetadataValue::U32(0);
}

#[test]
fn chat_template_override_replaces_the_files_template() {
    let src = fixture("gguf/bitnet-b158-i2_s.gguf");
    let (w, _) = build(&src, &opts(TernaryType::I2S)).unwrap();
    let kept = GgufFile::from_bytes(w.to_bytes().unwrap(), "x").unwrap();
    let original = GgufFile::open(&src).unwrap();
    assert_eq!(
        kept.get_str("tokenizer.chat_template").ok(),
        original.get_str("tokenizer.chat_template").ok()
    );
    let new = bitnet_tokenizer::ChatTemplate::source_of_spec("chatml").unwrap();
    let o = ConvertOptions {
        chat_template: Some(new.clone()),
        ..opts(TernaryType::I2S)
    };
    let (w, _) = build(&src, &o).unwrap();
    let g = GgufFile::from_bytes(w.to_bytes().unwrap(), "x").unwrap();
    assert_eq!(g.get_str("tokenizer.chat_template").unwrap(), new);
    assert!(bitnet_tokenizer::ChatTemplate::source_of_spec("no-such-template-file").is_err());
}
