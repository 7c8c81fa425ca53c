//! Load benchmark for `bitnet serve`: starts the server in-process on a loopback port, then for each
//! concurrency level runs that many streaming clients at once (each sending `--requests` completions one
//! after another, `ignore_eos` so every answer has exactly `--max-tokens` tokens) and reports aggregate
//! generated tokens/s and p50/p95 time to first token.
//!
//! ```sh
//! bitnet synth --shape 2b4t -o /tmp/2b4t.gguf
//! cargo run --release -p bitnet-server --example load_bench -- -m /tmp/2b4t.gguf
//! ```
//! `--url http://HOST:PORT` measures an already running server instead (or a load balancer in front
//! of several: `scripts/replicas.sh`).
//!
//! Every request is accounted for: an answer with all its tokens and `[DONE]` is complete; one that
//! started streaming and stopped early is truncated; one refused before it started (connection
//! refused, 502/503 before any token: a replica shutting down) is retried, up to 5 times, and counted
//! as failed only if every try is refused. Each client sends `X-Session-Id: client-N`, the key a
//! load balancer can hash on to keep a conversation on one replica.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bitnet_model::LoadOptions;
use bitnet_server::{serve, ServerConfig};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "Aggregate tokens/s and time to first token of the server under concurrent streams")]
struct Args {
    /// Model to serve in-process (.gguf or Hugging Face folder).
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Measure this running server instead (e.g. http://127.0.0.1:8080).
    #[arg(long = "url")]
    url: Option<String>,
    /// Concurrency levels, comma separated.
    #[arg(long = "concurrency", default_value = "1,4,8", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Requests each client sends, one after another.
    #[arg(long = "requests", default_value_t = 2)]
    requests: usize,
    /// Tokens generated per request.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 32)]
    max_tokens: usize,
    /// Worker threads of the in-process server (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Context per slot of the in-process server.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
}

const PROMPT: &str = "Write a short story about a lighthouse keeper who finds a message in a bottle. \
The story should be calm, a little sad, and end with hope.";

#[derive(Default)]
struct Sample {
    ttft: Duration,
    tokens: usize,
    /// Refusals before the request started (each retried).
    retries: usize,
    /// Streaming stopped before `[DONE]` or before every token.
    truncated: bool,
    /// Refused every time, or failed in a way that is not a refusal.
    failed: Option<String>,
}

/// Why a try did not produce an answer.
enum TryError {
    /// Not started (connection refused, 502/503 before any byte): safe to send again.
    Refused(String),
    Other(String),
}

async fn one_request(client: &reqwest::Client, base: &str, max_tokens: usize, session: &str) -> Sample {
    let mut retries = 0;
    loop {
        match one_try(client, base, max_tokens, session).await {
            Ok(mut s) => {
                s.retries = retries;
                return s;
            }
            Err(TryError::Refused(_)) if retries < 5 => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(TryError::Refused(why) | TryError::Other(why)) => {
                return Sample {
                    retries,
                    failed: Some(why),
                    ..Default::default()
                }
            }
        }
    }
}

async fn one_try(client: &reqwest::Client, base: &str, max_tokens: usize, session: &str) -> Result<Sample, TryError> {
    let body = json!({"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true,
                      "stream": true, "stream_options": {"include_usage": true}});
    let t0 = Instant::now();
    let mut r = client
        .post(format!("{base}/v1/completions"))
        .header("X-Session-Id", session)
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                TryError::Refused(e.to_string())
            } else {
                TryError::Other(e.to_string())
            }
        })?;
    let status = r.status().as_u16();
    if status != 200 {
        let text = r.text().await.unwrap_or_default();
        let why = format!("HTTP {status}: {text}");
        return Err(if status == 502 || status == 503 {
            TryError::Refused(why)
        } else {
            TryError::Other(why)
        });
    }
    let mut ttft = None;
    let mut buf = String::new();
    let mut tokens = 0;
    let mut done = false;
    loop {
        let chunk = match r.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(_) => break,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let ev: String = buf.drain(..end + 2).collect();
            let Some(data) = ev.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                return Err(TryError::Other(format!("bad SSE chunk: {data}")));
            };
            if ttft.is_none() && v["choices"][0]["text"].as_str().is_some_and(|t| !t.is_empty()) {
                ttft = Some(t0.elapsed());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = n as usize;
            }
        }
    }
    Ok(Sample {
        ttft: ttft.unwrap_or_else(|| t0.elapsed()),
        tokens,
        truncated: !done || tokens != max_tokens,
        ..Default::default()
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn wait_healthy(client: &reqwest::Client, base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            if r.status() == 200 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the server at {base} did not become healthy");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = Args::parse();
    let max_c = a.concurrency.iter().copied().max().unwrap_or(1).max(1);
    let mut stop = None;
    let base = match (&a.url, &a.model) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(m)) => {
            if let Some(t) = a.threads {
                // The engine's worker pool (what `bitnet serve -t` sets).
                bitnet_kernels::pool::set_num_threads(t.max(1));
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("http://{}", listener.local_addr()?);
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let cfg = ServerConfig {
                model_name: "bench".into(),
                slots: max_c,
                queue: 4 * max_c,
                ctx: Some(a.ctx),
                ..Default::default()
            };
            let m = m.clone();
            let task = tokio::spawn(serve(
                listener,
                cfg,
                Box::new(move || bitnet_model::load(&m, &LoadOptions::default())),
                async {
                    let _ = rx.await;
                },
            ));
            stop = Some((tx, task));
            base
        }
        (None, None) => bail!("give -m MODEL (served in-process) or --url URL"),
    };
    let client = reqwest::Client::new();
    let t_load = Instant::now();
    wait_healthy(&client, &base).await?;
    eprintln!("server ready at {base} ({:.1} s)", t_load.elapsed().as_secs_f64());
    // Warm-up: page in the weights, size the buffers.
    if let Some(e) = one_request(&client, &base, 4, "warm-up").await.failed {
        bail!("the warm-up request failed: {e}");
    }

    println!(
        "| streams | requests | tokens | wall s | aggregate tok/s | per-stream tok/s | TTFT p50 ms | TTFT p95 ms | failed | truncated | retried |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut bad = 0;
    let mut single = None;
    for &c in &a.concurrency {
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        let client = Arc::new(client.clone());
        for i in 0..c {
            let (client, base, n, reqs) = (Arc::clone(&client), base.clone(), a.max_tokens, a.requests);
            tasks.push(tokio::spawn(async move {
                let mut v = Vec::new();
                let session = format!("client-{i}");
                for _ in 0..reqs {
                    v.push(one_request(&client, &base, n, &session).await);
                }
                v
            }));
        }
        let mut samples = Vec::new();
        for t in tasks {
            samples.extend(t.await?);
        }
        let wall = t0.elapsed().as_secs_f64();
        let failed: Vec<&Sample> = samples.iter().filter(|s| s.failed.is_some()).collect();
        let truncated = samples.iter().filter(|s| s.failed.is_none() && s.truncated).count();
        let retried: usize = samples.iter().map(|s| s.retries).sum();
        for s in failed.iter().take(3) {
            eprintln!("failed: {}", s.failed.as_deref().unwrap_or(""));
        }
        bad += failed.len() + truncated;
        let ok: Vec<&Sample> = samples.iter().filter(|s| s.failed.is_none()).collect();
        let tokens: usize = ok.iter().map(|s| s.tokens).sum();
        let mut ttft: Vec<f64> = ok.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect();
        ttft.sort_by(f64::total_cmp);
        let agg = tokens as f64 / wall;
        if c == 1 {
            single = Some(agg);
        }
        println!(
            "| {c} | {} | {tokens} | {wall:.2} | {agg:.1} | {:.1} | {:.0} | {:.0} | {} | {truncated} | {retried} |",
            samples.len(),
            agg / c as f64,
            percentile(&ttft, 0.5),
            percentile(&ttft, 0.95),
            failed.len()
        );
    }
    if let Some(s) = single {
        eprintln!("(aggregate tok/s relative to 1 stream: divide by {s:.1})");
    }
    if let Some((tx, task)) = stop {
        let _ = tx.send(());
        task.await??;
    }
    if bad > 0 {
        bail!("{bad} requests failed or were truncated");
    }
    Ok(())
}
