//! quant-report on the tiny-a bf16 masters, checked against independent data: the official-layout GGUF's
//! codes/scales and transformers' per-module trace.

use std::path::{Path, PathBuf};

use bitnet_gguf::GgufFile;
use bitnet_kernels::i2s;
use bitnet_tools::npy;
use bitnet_tools::quant_report::{calib, plot, table, tensor_report, Report};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-a")
        .join(p)
}

#[test]
fn tensor_stats_agree_with_the_official_file() {
    let stats = tensor_report(&fixture("hf-bf16"), true).unwrap();
    assert_eq!(stats.len(), 21);
    let g = GgufFile::open(&fixture("gguf/bitnet-b158-i2_s.gguf")).unwrap();
    let gg = |p: &str| match p {
        "q" => "attn_q",
        "k" => "attn_k",
        "v" => "attn_v",
        "o" => "attn_output",
        "gate" => "ffn_gate",
        "up" => "ffn_up",
        _ => "ffn_down",
    };
    for s in &stats {
        let t = g.tensor(&format!("blk.{}.{}.weight", s.layer, gg(&s.proj))).unwrap();
        let mut codes = vec![0i8; t.n_elements() as usize];
        let scale = i2s::decode(g.tensor_data(t), &mut codes).unwrap();
        let zeros = codes.iter().filter(|&&c| c == 0).count() as f64 / codes.len() as f64;
        assert!(
            (s.scale - scale).abs() <= 4.0 * f32::EPSILON * scale,
            "{}: scale {} vs {scale}",
            s.name,
            s.scale
        );
        assert_eq!(s.zero_fraction, zeros, "{}", s.name);
        assert!(
            s.sqnr_db > 0.0 && s.sqnr_db < 30.0 && s.cosine > 0.5 && s.cosine < 1.0,
            "{s:?}"
        );
    }
    let e = format!("{:#}", tensor_report(&fixture("hf-packed"), true).unwrap_err());
    assert!(e.contains("master weights"), "{e}");
}

#[test]
fn engine_layer_matches_transformers_trace_and_report_renders() {
    let (model, _) = bitnet_model::load(&fixture("hf-bf16"), &Default::default()).unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference/input.json")).unwrap()).unwrap();
    let ids: Vec<u32> = j["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let h = model.cfg.hidden_size;
    let mut x = vec![0f32; ids.len() * h];
    for (t, &id) in ids.iter().enumerate() {
        model.embed.dequantize_row(id as usize, &mut x[t * h..(t + 1) * h]);
    }
    let b = calib::engine_branch(&model, 0, &x, ids.len());
    let (_, want) = npy::read_f32(&fixture("reference/trace/model.layers.0.npy")).unwrap();
    let got: Vec<f32> = x.iter().zip(&b).map(|(a, b)| a + b).collect();
    let amax = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(
        max <= 1e-4 * amax,
        "layer 0 differs from transformers by {max} (max {amax})"
    );

    let layers = calib::layer_errors(&fixture("hf-bf16"), &ids, true).unwrap();
    assert_eq!(layers.len(), 3);
    for l in &layers {
        assert!(
            l.sqnr_acts_db > l.sqnr_total_db - 0.5 && l.sqnr_weights_db.is_finite(),
            "{l:?}"
        );
    }
    let r = Report {
        model: "tiny-a".into(),
        tensors: tensor_report(&fixture("hf-bf16"), true).unwrap(),
        calibration_tokens: ids.len(),
        layers,
    };
    assert_eq!(table::to_csv(&r).lines().count(), 22);
    assert!(table::to_table(&r).contains("blk") || table::to_table(&r).contains("model.layers.2.mlp.down_proj"));
    let v: serde_json::Value = serde_json::from_str(&table::to_json(&r).unwrap()).unwrap();
    assert_eq!(v["tensors"].as_array().unwrap().len(), 21);
    let dir = tempfile::tempdir().unwrap();
    let out = std::env::var("BITNET_TOOLS_PLOT_DIR")
        .map(PathBuf::from)
        .unwrap_or(dir.path().to_path_buf());
    for name in ["report.svg", "report.png"] {
        plot::plot(&r, &out.join(name)).unwrap();
        assert!(std::fs::metadata(out.join(name)).unwrap().len() > 1000);
    }
    assert!(plot::plot(&r, &out.join("report.txt")).is_err());
}
