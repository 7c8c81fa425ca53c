//! The `bitnet` binary on the other model families: `embed` on the BitNet embedding fixture (JSON
//! lines and .npy, prefixes, pooling override), `inspect` naming the family, scale convention and RoPE
//! layout, and commands refusing the wrong kind of model with a message that says what to run.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

fn bitnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args(args)
        .output()
        .expect("running bitnet")
}

fn ok(args: &[&str]) -> String {
    let o = bitnet(args);
    assert!(
        o.status.success(),
        "bitnet {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let o = bitnet(args);
    assert!(!o.status.success(), "bitnet {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn path(rel: &str) -> String {
    fixture(rel).display().to_string()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    let n = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn embed_prints_json_lines_and_writes_npy_that_match_the_reference() {
    let m = path("embed-qwen3-a/gguf/bitnetcpp-i2_s.gguf");
    let inputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("embed-qwen3-a/reference/inputs.json")).unwrap())
            .unwrap();
    let texts: Vec<String> = inputs["texts"].as_array().unwrap()[..4]
        .iter()
        .map(|t| t["text"].as_str().unwrap().to_string())
        .collect();
    let (shape, refs) = bitnet_tools::npy::read_f32(&fixture("embed-qwen3-a/reference/hf_embeddings.npy")).unwrap();
    let h = shape[1];
    let mut args = vec!["embed", "-m", m.as_str()];
    args.extend(texts.iter().map(String::as_str));
    let out = ok(&args);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"], i);
        let v: Vec<f32> = l["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert!(cosine(&v, &refs[i * h..(i + 1) * h]) >= 0.999, "text {i}");
    }
    // From a file, to .npy; a query prefix changes the vector; --pooling mean gives the mean reference.
    let dir = std::env::temp_dir().join(format!("bitnet-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("texts.txt");
    std::fs::write(&list, texts[1..3].join("\n")).unwrap();
    let npy = dir.join("e.npy");
    ok(&[
        "embed",
        "-m",
        &m,
        "-f",
        &list.display().to_string(),
        "-o",
        &npy.display().to_string(),
        "--pooling",
        "mean",
    ]);
    let (s, got) = bitnet_tools::npy::read_f32(&npy).unwrap();
    assert_eq!(s, [2, h]);
    let (_, mean) = bitnet_tools::npy::read_f32(&fixture("embed-qwen3-a/reference/hf_embeddings_mean.npy")).unwrap();
    assert!(cosine(&got[..h], &mean[h..2 * h]) >= 0.999);
    let plain = ok(&["embed", "-m", &m, "query: What is BitNet?"]);
    let prefixed = ok(&["embed", "-m", &m, "--query-prefix", "query: ", "What is BitNet?"]);
    assert_eq!(plain, prefixed);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn commands_refuse_the_wrong_kind_of_model() {
    let e = path("embed-qwen3-a/hf");
    let text = fixture("embed-qwen3-a/README.md").display().to_string();
    for args in [
        vec!["generate", "-p", "hi"],
        vec!["bench"],
        vec!["perplexity", "-f", &text],
        vec!["chat"],
    ] {
        let cmd = args[0];
        let mut a = args.clone();
        a.extend(["-m", &e]);
        let err = fails(&a);
        assert!(
            err.contains("is an embedding model") && err.contains("bitnet embed"),
            "{cmd}: {err}"
        );
    }
    let err = fails(&["embed", "-m", &path("llama-b158-a/gguf/llamacpp-tq1_0.gguf"), "hi"]);
    assert!(err.contains("not an embedding model"), "{err}");
}

#[test]
fn inspect_names_family_scale_convention_and_rope_layout() {
    let out = ok(&["inspect", &path("llama-b158-a/gguf/bitnetcpp-i2_s.gguf")]);
    assert!(out.contains("family:         Llama 1.58-bit"), "{out}");
    assert!(out.contains("RoPE layout:    interleaved"), "{out}");
    assert!(out.contains("repaired 14 special tokens"), "{out}");
    let out = ok(&["inspect", &path("llama-b158-a/hf-packed")]);
    assert!(out.contains("weight_scale divided"), "{out}");
    let out = ok(&["inspect", &path("bitnet-1bitllm-a/gguf/llamacpp-tq2_0.gguf")]);
    assert!(out.contains("1bitLLM") && out.contains("sentencepiece"), "{out}");
    let out = ok(&["inspect", &path("embed-qwen3-a/gguf/bitnetcpp-i2_s-meanpool.gguf")]);
    assert!(out.contains("embedding:      mean pooling"), "{out}");
}

#[test]
fn generate_runs_every_causal_family() {
    for m in [
        "llama-b158-a/gguf/bitnetcpp-i2_s.gguf",
        "bitnet-1bitllm-a/gguf/llamacpp-tq1_0.gguf",
        "bitnet-1bitllm-a/hf-fp16",
    ] {
        let out = ok(&["generate", "-m", &path(m), "-p", "The café", "-n", "4", "--temp", "0"]);
        assert!(out.starts_with("The café"), "{m}: {out}");
    }
}

#[test]
fn perplexity_is_within_one_percent_of_transformers() {
    for (set, model, key) in [
        ("llama-b158-a", "hf-packed", "packed"),
        ("bitnet-1bitllm-a", "hf-fp16", "online"),
    ] {
        let p: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(&format!("{set}/reference/perplexity.json"))).unwrap(),
        )
        .unwrap();
        let want = p["hf"][key]["ppl"].as_f64().unwrap();
        let o = bitnet(&[
            "perplexity",
            "-m",
            &path(&format!("{set}/{model}")),
            "-f",
            &path(&format!("{set}/reference/text.txt")),
            "-c",
            "64",
            "-b",
            "64",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let got: f64 = all
            .split("PPL = ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no PPL in {all}"));
        assert!(
            (got / want - 1.0).abs() < 0.01,
            "{set}: PPL {got} vs transformers {want}"
        );
    }
}
