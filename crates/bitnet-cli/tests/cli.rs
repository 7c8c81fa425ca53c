//! The `bitnet` binary end to end: what users type, checked against the fixture references.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-a")
        .join(rel)
}

fn bitnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args(args)
        .output()
        .expect("running bitnet")
}

fn ok(args: &[&str]) -> (String, String) {
    let o = bitnet(args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "bitnet {args:?} failed:\n{err}");
    (out, err)
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("bitnet-cli-{}-{name}", std::process::id()))
}

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(rel)).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// Reads a float32 .npy written by `bitnet logits` (header parsed minimally: it is our own writer's).
fn read_npy(p: &PathBuf) -> (String, Vec<f32>) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = String::from_utf8(b[10..10 + hl].to_vec()).unwrap();
    let data = b[10 + hl..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (header, data)
}

fn read_ref(rel: &str) -> Vec<f32> {
    read_npy(&fixture(rel)).1
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
            let (a, b) = (
                ls(&reference[p * vocab..(p + 1) * vocab]),
                ls(&ours[p * vocab..(p + 1) * vocab]),
            );
            a.iter().zip(&b).map(|(x, y)| x.exp() * (x - y)).sum::<f64>()
        })
        .sum::<f64>()
        / n as f64
}

#[test]
fn logits_command_writes_npy_that_matches_the_reference() {
    let input = json("reference/input.json");
    let list: Vec<String> = ids(&input["ids"]).iter().map(|i| i.to_string()).collect();
    let tokens = list.join(",");
    for (model, extra, reference) in [
        ("gguf/bitnet-b158-i2_s.gguf", None, "reference/hf_packed_logits.npy"),
        ("hf-bf16", None, "reference/hf_online_logits.npy"),
        (
            "gguf/llamacpp-tq1_0.gguf",
            Some("relu2"),
            "reference/hf_on_llamacpp_tq2_0_weights_logits.npy",
        ),
    ] {
        let out = temp("logits.npy");
        let m = fixture(model);
        let mut args = vec![
            "logits",
            "-m",
            m.to_str().unwrap(),
            "--tokens",
            &tokens,
            "-o",
            out.to_str().unwrap(),
            "-t",
            "2",
        ];
        if let Some(a) = extra {
            args.extend(["--ffn-act", a]);
        }
        ok(&args);
        let (header, ours) = read_npy(&out);
        assert!(
            header.contains("'descr': '<f4'") && header.contains("(32, 1024)"),
            "{header}"
        );
        let kl = mean_kl(&read_ref(reference), &ours, 1024);
        assert!(kl < 2e-3, "{model}: mean KL {kl}");
        let _ = std::fs::remove_file(out);
    }
}

#[test]
fn tokenize_prints_hugging_face_ids_as_json() {
    let input = json("reference/input.json");
    let m = fixture("gguf/bitnet-b158-i2_s.gguf");
    let (out, _) = ok(&["tokenize", "-m", m.to_str().unwrap(), input["prompt"].as_str().unwrap()]);
    let got: Vec<u64> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(got, ids(&input["prompt_ids"]));
    assert_eq!(out.trim().lines().count(), 1);
    let (out, _) = ok(&["tokenize", "-m", m.to_str().unwrap(), "--no-bos", "hi<|eot_id|>"]);
    let got: Vec<u64> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(got.last(), Some(&1023), "special-token text maps to its id: {got:?}");
    assert_ne!(got.first(), Some(&1014));
}

#[test]
fn inspect_reports_architecture_activation_and_tensors() {
    let m = fixture("gguf/llamacpp-tq2_0.gguf");
    let (out, _) = ok(&["inspect", m.to_str().unwrap()]);
    assert!(out.contains("architecture:   bitnet"), "{out}");
    assert!(
        out.contains("FFN activation: silu") && out.contains("bitnet.hidden_activation"),
        "{out}"
    );
    assert!(
        out.contains("blk.0.attn_q.weight") && out.contains("TQ2_0") && out.contains("Q6_K"),
        "{out}"
    );
    let (out, _) = ok(&["inspect", m.to_str().unwrap(), "--ffn-act", "relu2"]);
    assert!(out.contains("FFN activation: relu2 (--ffn-act relu2"), "{out}");
    let (out, _) = ok(&["inspect", fixture("hf-packed").to_str().unwrap()]);
    assert!(
        out.contains("U8") && out.contains("model.layers.2.mlp.down_proj.weight_scale"),
        "{out}"
    );
    assert!(out.contains("FFN activation: relu2"), "{out}");
}

#[test]
fn greedy_generate_is_deterministic_and_prints_the_engines_greedy_text() {
    // What the text must be: the engine's own greedy continuation, decoded. (Agreement of that
    // continuation with transformers, step by step up to the first near-tie, is the model crate's
    // fixture_logits test; here the CLI must print it faithfully.)
    let input = json("reference/input.json");
    let prompt = input["prompt"].as_str().unwrap();
    let m = fixture("gguf/bitnet-b158-i2_s.gguf");
    let (model, tok) = bitnet_model::load(&m, &bitnet_model::LoadOptions::default()).unwrap();
    let mut st = bitnet_model::InferenceState::new(&model, 128);
    let prompt_ids = tok.encode(prompt, true).unwrap();
    let mut logits = model
        .forward(&prompt_ids, &mut st, bitnet_model::LogitsWanted::Last)
        .unwrap()
        .to_vec();
    let mut new = Vec::new();
    for _ in 0..32 {
        let t = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b }) as u32;
        new.push(t);
        logits = model
            .forward(&[t], &mut st, bitnet_model::LogitsWanted::Last)
            .unwrap()
            .to_vec();
    }
    let want = tok.decode(&new).unwrap();
    // The first steps of the transformers reference are decisive (top-1/top-2 logit gap 2.3): the
    // continuation starts like the reference's.
    let reference = ids(&json("reference/hf_greedy.json")["packed"]["prompt_new_tokens"]);
    assert_eq!(
        u64::from(new[0]),
        reference[0],
        "first token {} vs the reference's {}",
        new[0],
        reference[0]
    );
    let args = [
        "generate",
        "-m",
        m.to_str().unwrap(),
        "-p",
        prompt,
        "-n",
        "32",
        "--temp",
        "0",
        "--ignore-eos",
        "-t",
        "1",
    ];
    let (out, err) = ok(&args);
    assert_eq!(out.trim_end_matches('\n'), format!("{prompt}{want}"), "stderr: {err}");
    assert!(err.contains("t/s"), "{err}");
    let (again, _) = ok(&args);
    assert_eq!(out, again);
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let args = ["generate", "-p", "Hello", "-n", "20", "--seed", "42", "--temp", "1.0"];
    let (a, _) = ok(&args);
    let (b, _) = ok(&args);
    assert_eq!(a, b);
}

#[test]
fn f16_kv_cache_flag() {
    // The demo model answers the same short greedy continuation with either cache (its top-1 gaps
    // are far larger than f16 rounding), and an unknown type is refused by name.
    let args = |ct: &'static str| {
        [
            "generate",
            "-p",
            "Tom had a",
            "-n",
            "8",
            "--temp",
            "0",
            "--cache-type",
            ct,
        ]
    };
    let (a, _) = ok(&args("f32"));
    let (b, _) = ok(&args("f16"));
    assert_eq!(a, b);
    let o = bitnet(&args("q4_0"));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("q4_0"));
}

#[test]
fn bad_input_gives_clear_errors() {
    let o = bitnet(&["generate", "-m", "/nonexistent/model.gguf", "-p", "x"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
    let bad = temp("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let o = bitnet(&["inspect", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error:") && err.contains("bad.gguf"), "{err}");
    let _ = std::fs::remove_file(bad);
    let m = fixture("gguf/bitnet-b158-i2_s.gguf");
    let o = bitnet(&[
        "logits",
        "-m",
        m.to_str().unwrap(),
        "--tokens",
        "1,99999",
        "-o",
        "/tmp/x.npy",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("99999"));
    // A context no machine can hold: an error naming it, not an allocation abort.
    let o = bitnet(&["generate", "-m", m.to_str().unwrap(), "-c", "1000000000000", "-n", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("KV cache") && err.contains("1000000000000"), "{err}");
}

#[test]
fn synth_writes_a_model_that_loads() {
    let out = temp("synth.gguf");
    ok(&["synth", "--shape", "tiny", "-o", out.to_str().unwrap()]);
    let (report, _) = ok(&["inspect", out.to_str().unwrap()]);
    assert!(report.contains("bitnet-b1.58") && report.contains("I2_S"), "{report}");
    let (text, _) = ok(&[
        "generate",
        "-m",
        out.to_str().unwrap(),
        "-p",
        "abc",
        "-n",
        "8",
        "--temp",
        "0",
    ]);
    assert!(text.starts_with("abc"));
    let _ = std::fs::remove_file(out);
}

#[test]
fn bench_reports_every_test_in_json_and_markdown() {
    let args = [
        "bench",
        "-m",
        "synth:tiny",
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "2",
        "-d",
        "16",
        "-b",
        "2",
        "-t",
        "1",
    ];
    let (out, _) = ok(&[&args[..], &["-o", "json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&out).expect("bench -o json prints JSON");
    let tests = v["tests"].as_array().expect("tests");
    let names: Vec<&str> = tests.iter().filter_map(|t| t["test"].as_str()).collect();
    assert_eq!(names, ["pp8", "tg4", "tg4 @ d16", "tg4 x b2"], "{out}");
    for t in tests {
        assert_eq!(t["samples_ts"].as_array().map(Vec::len), Some(2), "{t}");
        assert!(t["avg_ts"].as_f64().is_some_and(|x| x > 0.0), "{t}");
    }
    // The long-context figure is also given as a ratio of paired repetitions.
    let ratio = v["depth_ratio"]["mean"].as_f64().expect("depth_ratio");
    assert!(ratio > 0.0 && ratio.is_finite(), "{out}");
    let (md, _) = ok(&args);
    assert!(
        md.contains("| model | size | params | backend | threads | test | t/s |"),
        "{md}"
    );
    assert!(
        md.contains("tg4 @ d16 / tg4:") && md.contains("(paired repetitions)"),
        "{md}"
    );
    let bad = bitnet(&["bench", "-m", "synth:tiny", "-r", "0"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("repetitions"));
    let huge = bitnet(&[
        "bench",
        "-m",
        "synth:tiny",
        "-p",
        "0",
        "-n",
        "4",
        "-d",
        &usize::MAX.to_string(),
        "-r",
        "1",
    ]);
    assert!(!huge.status.success() && String::from_utf8_lossy(&huge.stderr).contains("too large"));
}
