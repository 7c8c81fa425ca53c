//! Soak test for `bitnet serve`: many concurrent clients for minutes, mixing streaming and non-streaming
//! chat and completions, cancellations mid-stream, and malformed, oversized and non-JSON requests, against
//! the server running in-process. Every greedy answer is compared with the same request run alone first
//! (continuous batching must not change a single token), and the server's resident memory is compared
//! after warm-up and at the end.
//!
//! ```sh
//! cargo run --release -p bitnet-server --example soak -- --minutes 10 --clients 16
//! ```
//! Without `-m` it serves the built-in demo model (`models/bitnet-demo-i2_s.gguf`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bitnet_model::LoadOptions;
use bitnet_server::{serve, ServerConfig};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "Concurrent mixed traffic against the server: lost or corrupted answers, memory, latency")]
struct Args {
    /// Model to serve (default: the built-in demo model).
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// How long to run.
    #[arg(long = "minutes", default_value_t = 10.0)]
    minutes: f64,
    /// Concurrent clients.
    #[arg(long = "clients", default_value_t = 16)]
    clients: usize,
    /// Sequences decoded together by the server.
    #[arg(long = "parallel", default_value_t = 8)]
    parallel: usize,
    /// Tokens per answer.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 24)]
    max_tokens: usize,
    #[arg(long = "seed", default_value_t = 1)]
    seed: u64,
}

const PROMPTS: [&str; 6] = [
    "Once upon a time",
    "The little girl",
    "Where does a cow live?",
    "Tom and his dog went to",
    "One day, the sun",
    "What does a bird eat?",
];

/// What one request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Chat,
    ChatStream,
    Text,
    TextStream,
    Cancel,
    Malformed,
    Oversized,
    NotJson,
}

const KINDS: [Kind; 8] = [
    Kind::Chat,
    Kind::ChatStream,
    Kind::Text,
    Kind::TextStream,
    Kind::Cancel,
    Kind::Malformed,
    Kind::Oversized,
    Kind::NotJson,
];

#[derive(Default)]
struct Tally {
    ok: BTreeMap<String, u64>,
    /// Requests that should have succeeded but failed (transport error, unexpected status).
    lost: Vec<String>,
    /// Answers whose text differs from the same request alone.
    corrupted: Vec<String>,
    /// Answer latency histogram in 1 ms buckets (fixed size: the soak's own memory must not grow).
    latency_ms: Vec<u64>,
    errors_by_status: BTreeMap<u16, u64>,
}

fn body(kind: Kind, prompt: &str, n: usize, stream: bool) -> Value {
    match kind {
        Kind::Chat | Kind::ChatStream | Kind::Cancel => {
            json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": n, "temperature": 0, "stream": stream})
        }
        _ => json!({"prompt": prompt, "max_tokens": n, "temperature": 0, "stream": stream}),
    }
}

fn path(kind: Kind) -> &'static str {
    match kind {
        Kind::Chat | Kind::ChatStream | Kind::Cancel | Kind::NotJson => "/v1/chat/completions",
        _ => "/v1/completions",
    }
}

/// The text of a non-streaming answer or of a complete SSE stream.
async fn answer(r: reqwest::Response, stream: bool, chat: bool) -> Result<String> {
    if !stream {
        let v: Value = r.json().await?;
        let t = if chat {
            &v["choices"][0]["message"]["content"]
        } else {
            &v["choices"][0]["text"]
        };
        return Ok(t.as_str().unwrap_or_default().to_string());
    }
    let text = r.text().await?;
    let mut out = String::new();
    let mut done = false;
    for ev in text.split("\n\n") {
        let Some(data) = ev.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data)?;
        let piece = if chat {
            &v["choices"][0]["delta"]["content"]
        } else {
            &v["choices"][0]["text"]
        };
        out.push_str(piece.as_str().unwrap_or_default());
    }
    if !done {
        bail!("stream ended without [DONE]");
    }
    Ok(out)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = Args::parse();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let max_body = 64 << 10;
    let cfg = ServerConfig {
        model_name: "soak".into(),
        slots: a.parallel,
        queue: 4 * a.clients,
        ctx: Some(512),
        max_body_bytes: max_body,
        ..Default::default()
    };
    let model = a
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/bitnet-demo-i2_s.gguf"));
    let server = tokio::spawn(serve(
        listener,
        cfg,
        Box::new(move || bitnet_model::load(&model, &LoadOptions::default())),
        async {
            let _ = rx.await;
        },
    ));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let t_load = Instant::now();
    while client
        .get(format!("{base}/health"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        if t_load.elapsed() > Duration::from_secs(300) {
            bail!("the server did not become healthy");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Reference answers: each request alone, before any concurrency.
    let mut reference = BTreeMap::new();
    for p in PROMPTS {
        for (kind, chat) in [(Kind::Chat, true), (Kind::Text, false)] {
            let r = client
                .post(format!("{base}{}", path(kind)))
                .json(&body(kind, p, a.max_tokens, false))
                .send()
                .await?;
            reference.insert((chat, p), answer(r, false, chat).await?);
        }
    }
    let reference = Arc::new(reference);
    // Memory "after warm-up": a fifth into the run, once every slot's KV cache and buffers exist.
    let warm_at = Duration::from_secs_f64(a.minutes * 60.0 / 5.0);
    let rss_warm_task = tokio::spawn(async move {
        tokio::time::sleep(warm_at).await;
        rss_kib()
    });
    let tally = Arc::new(Mutex::new(Tally {
        latency_ms: vec![0; 60_000],
        ..Tally::default()
    }));
    let deadline = Instant::now() + Duration::from_secs_f64(a.minutes * 60.0);
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let (client, base, reference, tally) =
            (client.clone(), base.clone(), Arc::clone(&reference), Arc::clone(&tally));
        let (n, seed) = (a.max_tokens, a.seed);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (c as u64 + 1));
            while Instant::now() < deadline {
                let kind = KINDS[rng.below(KINDS.len())];
                let p = PROMPTS[rng.below(PROMPTS.len())];
                let t0 = Instant::now();
                let url = format!("{base}{}", path(kind));
                let (stream, chat) = match kind {
                    Kind::ChatStream | Kind::Cancel => (true, true),
                    Kind::TextStream => (true, false),
                    Kind::Chat => (false, true),
                    _ => (false, false),
                };
                let req = match kind {
                    Kind::Malformed => client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body("{\"prompt\": [1, 2"),
                    Kind::Oversized => client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(format!("{{\"prompt\": \"{}\"}}", "a".repeat(max_body + 10))),
                    Kind::NotJson => client.post(&url).header("content-type", "text/plain").body("hello"),
                    _ => client.post(&url).json(&body(kind, p, n, stream)),
                };
                let r = req.send().await;
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        t.lost.push(format!("{kind:?}: {e:?}"));
                        continue;
                    }
                };
                let status = r.status().as_u16();
                let expected = match kind {
                    Kind::Malformed => 400,
                    Kind::Oversized => 413,
                    Kind::NotJson => 415,
                    _ => 200,
                };
                if status != expected {
                    t.lost.push(format!("{kind:?}: HTTP {status}, expected {expected}"));
                    *t.errors_by_status.entry(status).or_default() += 1;
                    continue;
                }
                if expected != 200 {
                    *t.errors_by_status.entry(status).or_default() += 1;
                    *t.ok.entry(format!("{kind:?}")).or_default() += 1;
                    continue;
                }
                drop(t);
                if kind == Kind::Cancel {
                    // Read one chunk, then hang up mid-stream.
                    let mut r = r;
                    let _ = r.chunk().await;
                    drop(r);
                    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                    *t.ok.entry("Cancel".into()).or_default() += 1;
                    continue;
                }
                let got = answer(r, stream, chat).await;
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                match got {
                    Ok(text) if Some(&text) == reference.get(&(chat, p)) => {
                        let b = (ms as usize).min(t.latency_ms.len() - 1);
                        t.latency_ms[b] += 1;
                        *t.ok.entry(format!("{kind:?}")).or_default() += 1;
                    }
                    Ok(text) => t.corrupted.push(format!("{kind:?} {p:?}: {text:?}")),
                    Err(e) => t.lost.push(format!("{kind:?}: {e}")),
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let rss_end = rss_kib();
    let rss_warm = rss_warm_task.await?;
    let metrics = client.get(format!("{base}/metrics")).send().await?.text().await?;
    let _ = tx.send(());
    server.await??;

    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
    let n: u64 = t.latency_ms.iter().sum();
    let pct = |p: f64| -> f64 {
        let want = (n as f64 * p).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (ms, &c) in t.latency_ms.iter().enumerate() {
            acc += c;
            if acc >= want {
                return ms as f64;
            }
        }
        f64::NAN
    };
    let total: u64 = t.ok.values().sum();
    println!("| what | value |\n|---|---|");
    println!(
        "| duration | {:.1} min, {} clients, server --parallel {}, {} tokens per answer |",
        a.minutes, a.clients, a.parallel, a.max_tokens
    );
    println!("| requests completed as expected | {total} |");
    for (k, v) in &t.ok {
        println!("| .. {k} | {v} |");
    }
    println!("| lost (expected success, got none) | {} |", t.lost.len());
    println!(
        "| corrupted (greedy text differs from the request alone) | {} |",
        t.corrupted.len()
    );
    println!("| answer latency p50 / p99 | {:.0} / {:.0} ms |", pct(0.5), pct(0.99));
    println!(
        "| errors by status (deliberate bad requests) | {:?} |",
        t.errors_by_status
    );
    println!(
        "| resident memory a fifth into the run / at the end | {:.1} / {:.1} MiB ({:+.1}%) |",
        rss_warm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        (rss_end as f64 / rss_warm.max(1) as f64 - 1.0) * 100.0
    );
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("bitnet_requests_cancelled_total") || l.starts_with("bitnet_connections_open"))
    {
        println!("| {l} | |");
    }
    for l in t.lost.iter().chain(&t.corrupted).take(10) {
        eprintln!("{l}");
    }
    if !t.lost.is_empty() || !t.corrupted.is_empty() {
        bail!("{} lost, {} corrupted", t.lost.len(), t.corrupted.len());
    }
    Ok(())
}
