//! `POST /v1/embeddings` on the real server with the BitNet embedding fixture (`embed-qwen3-a`):
//! every input form, batched requests equal to the reference one text at a time, base64, Matryoshka
//! `dimensions`, and clear 400s for the wrong kind of model on each side.

mod common;

use common::fixture;

use base64::Engine as _;
use bitnet_server::ServerConfig;
use serde_json::{json, Value};
use tokio::sync::oneshot;

struct Server {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    client: reqwest::Client,
}

impl Server {
    async fn start(model: &'static str) -> Server {
        let cfg = ServerConfig {
            model_name: "m".into(),
            slots: 2,
            queue: 8,
            ctx: Some(512),
            prefill_chunk: 16,
            ..Default::default()
        };
        let (addr, tx) = common::start(cfg, fixture(model)).await;
        let (base, client) = (format!("http://{addr}"), reqwest::Client::new());
        Server {
            base,
            stop: Some(tx),
            client,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    let n = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn reference() -> (Vec<String>, Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let inputs: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("embed-qwen3-a/reference/inputs.json")).unwrap())
            .unwrap();
    let texts = inputs["texts"].as_array().unwrap();
    let (shape, data) = bitnet_tools::npy::read_f32(&fixture("embed-qwen3-a/reference/hf_embeddings.npy")).unwrap();
    let refs = data.chunks_exact(shape[1]).map(|c| c.to_vec()).collect();
    (
        texts.iter().map(|t| t["text"].as_str().unwrap().to_string()).collect(),
        texts
            .iter()
            .map(|t| {
                t["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect(),
        refs,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_in_every_input_form_match_the_reference() {
    let s = Server::start("embed-qwen3-a/gguf/bitnetcpp-i2_s.gguf").await;
    let (texts, ids, refs) = reference();

    // All texts in one request: each row as the reference computes it one text at a time.
    let (st, r) = s.post("/v1/embeddings", &json!({"model": "m", "input": texts})).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["object"], "list");
    let data = r["data"].as_array().unwrap();
    assert_eq!(data.len(), texts.len());
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        let c = cosine(&floats(&d["embedding"]), &refs[i]);
        assert!(c >= 0.999, "text {i}: cosine {c}");
    }
    let tokens: usize = ids.iter().map(Vec::len).sum();
    assert_eq!(r["usage"]["prompt_tokens"], tokens);

    // One string; token ids (with and without the EOS the tokenizer appends); base64; dimensions.
    let (_, one) = s.post("/v1/embeddings", &json!({"input": texts[1]})).await;
    let v1 = floats(&one["data"][0]["embedding"]);
    assert!(cosine(&v1, &refs[1]) >= 0.999);
    let (_, by_ids) = s.post("/v1/embeddings", &json!({"input": ids[1]})).await;
    assert_eq!(floats(&by_ids["data"][0]["embedding"]), v1);
    let no_eos = &ids[1][..ids[1].len() - 1];
    let (_, lists) = s.post("/v1/embeddings", &json!({"input": [no_eos, ids[2]]})).await;
    assert_eq!(floats(&lists["data"][0]["embedding"]), v1);
    let (_, b64) = s
        .post(
            "/v1/embeddings",
            &json!({"input": texts[1], "encoding_format": "base64"}),
        )
        .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded, v1);
    let (_, short) = s
        .post("/v1/embeddings", &json!({"input": texts[1], "dimensions": 64}))
        .await;
    let v = floats(&short["data"][0]["embedding"]);
    assert_eq!(v.len(), 64);
    assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
    assert!(cosine(&v, &v1[..64]) > 0.9999);

    // Errors: each names its field; the server stays up.
    for (body, param) in [
        (json!({"input": texts[1], "dimensions": 0}), "dimensions"),
        (json!({"input": texts[1], "dimensions": 100000}), "dimensions"),
        (json!({"input": texts[1], "encoding_format": "int8"}), "encoding_format"),
        (json!({"input": [99999]}), "input"),
        (json!({"input": []}), "input"),
        (json!({"input": texts[1], "model": "other"}), "model"),
    ] {
        let (st, r) = s.post("/v1/embeddings", &body).await;
        assert!(st == 400 || st == 404, "{body}: {st} {r}");
        assert_eq!(r["error"]["param"], param, "{body}: {r}");
    }
    let long = "word ".repeat(600);
    let (st, r) = s.post("/v1/embeddings", &json!({"input": long})).await;
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (400, Some("context_length_exceeded")),
        "{r}"
    );
    // An embedding model does not generate.
    let (st, r) = s
        .post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (400, Some("model_not_supported")),
        "{r}"
    );
    let (st, _) = s.post("/v1/embeddings", &json!({"input": "still up"})).await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_embedding_requests_each_get_their_own_vectors() {
    let s = std::sync::Arc::new(Server::start("embed-qwen3-a/hf").await);
    let (texts, _, refs) = reference();
    let mut tasks = Vec::new();
    for t in texts.iter().take(6) {
        let t = t.clone();
        let s = std::sync::Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            s.post("/v1/embeddings", &json!({"input": t})).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (st, r) = t.await.unwrap();
        assert_eq!(st, 200, "{r}");
        let c = cosine(&floats(&r["data"][0]["embedding"]), &refs[i]);
        assert!(c >= 0.999, "request {i}: cosine {c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_language_model_refuses_embeddings_clearly() {
    let s = Server::start("llama-b158-a/gguf/llamacpp-tq1_0.gguf").await;
    let (st, r) = s.post("/v1/embeddings", &json!({"input": "hello"})).await;
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (400, Some("model_not_supported")),
        "{r}"
    );
    let (st, r) = s
        .post("/v1/completions", &json!({"prompt": "hello", "max_tokens": 4}))
        .await;
    assert_eq!(st, 200, "{r}");
}
