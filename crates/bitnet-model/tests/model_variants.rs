//! Variants of the fixture files that real users have: sharded safetensors checkpoints, the
//! `rope_parameters` config form, llama.cpp's per-projection `.scale` tensors.

mod common;
use common::*;

use bitnet_gguf::{GgmlType, GgufFile, GgufWriter};
use bitnet_model::load_gguf::from_gguf;

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bitnet-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Copies a fixture GGUF into a writer, letting `edit` change each tensor (or drop it with None).
pub fn rewrite(
    src: &str,
    mut edit: impl FnMut(&str, Vec<u64>, GgmlType, Vec<u8>) -> Option<(Vec<u64>, GgmlType, Vec<u8>)>,
) -> GgufWriter {
    let g = GgufFile::open(&fixture(src)).expect("fixture");
    let mut w = GgufWriter::new();
    for (k, v) in g.metadata() {
        if k != "general.alignment" {
            w.add_metadata(k.clone(), v.clone()).expect("metadata");
        }
    }
    for t in g.tensors() {
        if let Some((dims, ty, data)) = edit(&t.name, t.dims.clone(), t.ggml_type, g.tensor_data(t).to_vec()) {
            w.add_tensor(t.name.clone(), &dims, ty, data).expect("tensor");
        }
    }
    w
}

#[test]
fn projection_scale_tensors_multiply_the_projection_output() {
    let ids = ids(&json("reference/input.json")["ids"]);
    let base = rewrite("gguf/llamacpp-tq2_0.gguf", |_, d, t, b| Some((d, t, b)));
    let base = GgufFile::from_bytes(base.to_bytes().expect("bytes"), "base").expect("parse");
    let (m0, _) = from_gguf(&base, None).expect("load");
    let reference = all_logits(&m0, &ids);

    // Scales of 1.0 on every projection change nothing.
    let mut w = rewrite("gguf/llamacpp-tq2_0.gguf", |_, d, t, b| Some((d, t, b)));
    for i in 0..3 {
        for p in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            w.add_tensor(
                format!("blk.{i}.{p}.scale"),
                &[1],
                GgmlType::F32,
                1.0f32.to_le_bytes().to_vec(),
            )
            .expect("scale");
        }
    }
    let g = GgufFile::from_bytes(w.to_bytes().expect("bytes"), "ones").expect("parse");
    let (m1, _) = from_gguf(&g, None).expect("load");
    assert_eq!(m1.layers[0].wq.out_scale, Some(1.0));
    assert_eq!(all_logits(&m1, &ids), reference);

    // A scale of 2 on v_proj doubles its output.
    let mut w = rewrite("gguf/llamacpp-tq2_0.gguf", |_, d, t, b| Some((d, t, b)));
    w.add_tensor("blk.0.attn_v.scale", &[1], GgmlType::F32, 2.0f32.to_le_bytes().to_vec())
        .expect("scale");
    let g = GgufFile::from_bytes(w.to_bytes().expect("bytes"), "two").expect("parse");
    let (m2, _) = from_gguf(&g, None).expect("load");
    let x: Vec<f32> = (0..256).map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0).collect();
    let (mut y0, mut y2) = (vec![0.0; 64], vec![0.0; 64]);
    let mut s = bitnet_model::QuantScratch::default();
    m0.layers[0].wv.forward(&x, 1, &mut s, &mut y0);
    m2.layers[0].wv.forward(&x, 1, &mut s, &mut y2);
    for (a, b) in y0.iter().zip(&y2) {
        assert_eq!(a * 2.0, *b);
    }
    assert_ne!(all_logits(&m2, &ids), reference);
}

#[test]
fn sharded_checkpoint_and_rope_parameters_config_load_like_the_single_file() {
    use safetensors::tensor::TensorView;
    let src = fixture("hf-packed");
    let dir = temp_dir("sharded");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    // config.json with the newer `rope_parameters` form instead of `rope_theta`.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let theta = cfg["rope_theta"].clone();
    cfg.as_object_mut().unwrap().remove("rope_theta");
    cfg["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": theta});
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    // Split the tensors over two shards with an index.
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for (si, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", si + 1);
        let views: Vec<(String, TensorView)> = part.iter().map(|n| (n.clone(), st.tensor(n).unwrap())).collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for n in part {
            map.insert(n.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let ids = ids(&json("reference/input.json")["ids"]);
    let (single, _) = load_fixture("hf-packed", None);
    let (sharded, _) = bitnet_model::load(&dir, &Default::default()).expect("sharded load");
    assert_eq!(sharded.cfg.rope_theta, single.cfg.rope_theta);
    assert_eq!(all_logits(&sharded, &ids), all_logits(&single, &ids));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `linear_class: bitlinear` checkpoints store the inverse scale and divide by it; with the scales
/// inverted accordingly the model must compute the same thing as the `autobitlinear` original.
#[test]
fn bitlinear_checkpoints_divide_by_weight_scale() {
    use safetensors::tensor::TensorView;
    let src = fixture("hf-packed");
    let dir = temp_dir("bitlinear");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    assert!(text.contains("\"autobitlinear\""));
    std::fs::write(
        dir.join("config.json"),
        text.replace("\"autobitlinear\"", "\"bitlinear\""),
    )
    .unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut inverted: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = Vec::new();
    for name in st.names() {
        let t = st.tensor(name).unwrap();
        let mut data = t.data().to_vec();
        if name.ends_with("weight_scale") {
            assert_eq!(t.dtype(), safetensors::Dtype::F32);
            let v = f32::from_le_bytes(data[..4].try_into().unwrap());
            data = (1.0 / v).to_le_bytes().to_vec();
        }
        inverted.push((name.to_string(), data, t.shape().to_vec(), t.dtype()));
    }
    let views: Vec<(String, TensorView)> = inverted
        .iter()
        .map(|(n, d, s, dt)| (n.clone(), TensorView::new(*dt, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let ids = ids(&json("reference/input.json")["ids"]);
    let (orig, _) = load_fixture("hf-packed", None);
    let (div, _) = bitnet_model::load(&dir, &Default::default()).expect("bitlinear load");
    let (a, b) = (all_logits(&orig, &ids), all_logits(&div, &ids));
    let d = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    // 1/(1/s) differs from s by at most an ulp, which can flip an int8 rounding tie: compare like the
    // reference tests do.
    let agree = agreement(&a, &b, orig.cfg.vocab_size, 0.3);
    assert!(
        agree.kl_mean < 1e-3 && agree.decisive_mismatches.is_empty(),
        "max diff {d}: {agree:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
