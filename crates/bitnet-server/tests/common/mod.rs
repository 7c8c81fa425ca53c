//! Starting the real server for a test: loopback, an ephemeral port, the model loaded in the
//! background, returned once `/health` answers 200.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bitnet_model::LoadOptions;
use std::sync::{Arc, OnceLock};

use bitnet_server::{metrics::Metrics, prepare, router, serve, AppState, Loaded, ServerConfig};
use tokio::sync::oneshot;

/// A model of the repository's fixtures (`tiny-a/gguf/bitnet-b158-i2_s.gguf`, ...).
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

/// The small model most server tests serve.
pub fn tiny_a() -> PathBuf {
    fixture("tiny-a/gguf/bitnet-b158-i2_s.gguf")
}

/// `GET /health` over a fresh connection: the status and how long it took.
pub fn get_health(addr: &str) -> Option<(u16, Duration)> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    s.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, t0.elapsed()))
}

/// Serves `model` with `cfg` on 127.0.0.1; returns the address (`127.0.0.1:PORT`) and the sender that
/// stops the server.
pub async fn start(cfg: ServerConfig, model: PathBuf) -> (String, oneshot::Sender<()>) {
    let (addr, tx, _task) = start_task(cfg, model).await;
    (addr, tx)
}

/// [`start`], also returning the serve task (its result is what `bitnet serve` exits with).
pub async fn start_task(
    cfg: ServerConfig,
    model: PathBuf,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(serve(
        listener,
        cfg,
        Box::new(move || bitnet_model::load(&model, &LoadOptions::default())),
        async {
            let _ = rx.await;
        },
    ));
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while get_health(&a).map(|(s, _)| s) != Some(200) {
            assert!(Instant::now() < deadline, "server did not become healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    (addr, tx, task)
}

/// The routes over an already loaded `model` (no listener): requests go through `tower::oneshot`.
pub fn loaded_app(cfg: ServerConfig, model: PathBuf) -> (Arc<AppState>, Arc<Loaded>, axum::Router) {
    let (m, t) = bitnet_model::load(&model, &LoadOptions::default()).unwrap();
    let loaded = Arc::new(prepare(&cfg, m, t).unwrap());
    let state = Arc::new(AppState {
        cfg,
        loaded: OnceLock::new(),
        metrics: Metrics::default(),
        conns: Default::default(),
        draining: Default::default(),
    });
    let _ = state.loaded.set(Arc::clone(&loaded));
    let app = router(Arc::clone(&state));
    (state, loaded, app)
}
