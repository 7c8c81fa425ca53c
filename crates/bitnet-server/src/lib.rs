//! OpenAI-compatible HTTP server for bitnet-rs (`bitnet serve`).
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions` (streaming SSE or one JSON body, with
//! `usage`), `POST /v1/embeddings` (embedding models), `GET /v1/models`, `GET /health` (503 while the model loads), `POST /tokenize`,
//! `POST /detokenize`, `GET /metrics` (Prometheus). Generation runs on the engine's continuous-batching
//! [`Scheduler`]: bounded slots, bounded queue (429 when full), cancellation when a client disconnects.
//! With an API key every route but `/health` needs `Authorization: Bearer <key>`.
//!
//! Errors are OpenAI-shaped (`{"error": {"message", "type", "param", "code"}}`):
//! 400 bad JSON / wrong types / out-of-range values / `max_tokens` beyond the context, 401 bad key,
//! 404 unknown model or route, 413 body over the limit, 429 queue full, 503 loading or shutting down.
// Parsers and the server face input from outside: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod embeddings;
pub mod error;
pub mod generation;
pub mod guard;
pub mod listener;
pub mod metrics;
pub mod request;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use axum::routing::{get, post};
use axum::Router;
use bitnet_engine::{Scheduler, SchedulerConfig};
use bitnet_model::BitNetModel;
use bitnet_tokenizer::chat_template::sandbox::Sandbox;
use bitnet_tokenizer::ChatTemplate;
use bitnet_tokenizer::Tokenizer;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The name clients use in `model` (`/v1/models` lists it); requests naming another model get 404.
    pub model_name: String,
    /// When set, every route but `/health` needs `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// Sequences decoded together.
    pub slots: usize,
    /// Requests that may wait for a slot; more get 429.
    pub queue: usize,
    /// Context per slot; None: the model's, at most 4096.
    pub ctx: Option<usize>,
    /// Most prompt tokens evaluated per scheduler step (chunked prefill, shared with decoding).
    pub prefill_chunk: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// `--chat-template FILE|NAME`; None: the model's (or the built-in BitNet one).
    pub chat_template: Option<String>,
    /// The worker process chat templates render in (see `bitnet_tokenizer::chat_template::sandbox`);
    /// None: in this process (a template can then exhaust its memory).
    pub template_sandbox: Option<Arc<Sandbox>>,
    /// Which browsers and hosts may call the server (see [`guard`]).
    pub guard: guard::Guard,
    /// Header and body read timeouts and the connection cap (see [`listener`]).
    pub limits: listener::ConnLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model_name: "bitnet".into(),
            api_key: None,
            slots: 8,
            queue: 64,
            ctx: None,
            prefill_chunk: SchedulerConfig::DEFAULT_PREFILL_CHUNK,
            max_body_bytes: 1 << 20,
            chat_template: None,
            template_sandbox: None,
            guard: guard::Guard::default(),
            limits: listener::ConnLimits::default(),
        }
    }
}

/// The model, ready to serve.
pub struct Loaded {
    pub model: Arc<BitNetModel>,
    pub tok: Arc<Tokenizer>,
    pub template: ChatTemplate,
    pub scheduler: Scheduler,
    pub ctx: usize,
}

/// Shared by every handler.
pub struct AppState {
    pub cfg: ServerConfig,
    /// Set once the model has loaded (until then generation routes and `/health` answer 503).
    pub loaded: OnceLock<Arc<Loaded>>,
    pub metrics: metrics::Metrics,
    /// Open, evicted and refused connections.
    pub conns: Arc<listener::ConnStats>,
    /// Set on SIGTERM: `/health` answers 503 and new requests on open connections get 503
    /// `shutting_down` (never started, so a client or load balancer may send them elsewhere) while
    /// the running ones finish.
    pub draining: std::sync::atomic::AtomicBool,
}

/// What a route needs the served model to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelUse {
    Generation,
    Embeddings,
}

impl AppState {
    /// The loaded model for a request naming `model` (404 for another name, 503 while loading, 400
    /// `model_not_supported` when the model is of the wrong kind for the route).
    pub fn served(&self, model: Option<&str>, usage: ModelUse) -> Result<Arc<Loaded>, error::ApiError> {
        if let Some(m) = model {
            if m != self.cfg.model_name {
                return Err(error::ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    format!(
                        "the model '{m}' does not exist; this server serves '{}'",
                        self.cfg.model_name
                    ),
                )
                .param("model")
                .code("model_not_found"));
            }
        }
        if self.draining.load(std::sync::atomic::Ordering::Acquire) {
            return Err(error::ApiError::shutting_down());
        }
        let eng = self.loaded.get().cloned().ok_or_else(error::ApiError::loading)?;
        let c = &eng.model.cfg;
        let wrong = match (usage, c.family.is_embedding()) {
            (ModelUse::Generation, true) => Some(format!(
                "'{}' is an embedding model ({}): it does not generate text; use POST /v1/embeddings",
                self.cfg.model_name,
                c.family.describe()
            )),
            (ModelUse::Embeddings, false) => Some(format!(
                "'{}' is a language model ({}), not an embedding model: serve a BitNet embedding model for \
                 /v1/embeddings",
                self.cfg.model_name,
                c.family.describe()
            )),
            _ => None,
        };
        match wrong {
            Some(msg) => Err(error::ApiError::invalid(msg).param("model").code("model_not_supported")),
            None => Ok(eng),
        }
    }
}

/// Loads the model and tokenizer (runs on a blocking thread while the server already answers).
pub type Loader = Box<dyn FnOnce() -> Result<(BitNetModel, Tokenizer)> + Send>;

/// The routes, over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/chat/completions", post(generation::chat_completions))
        .route("/v1/completions", post(generation::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(routes::models))
        .route("/tokenize", post(routes::tokenize))
        .route("/detokenize", post(routes::detokenize))
        .route("/metrics", get(routes::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            routes::require_key,
        ));
    Router::new()
        .route("/health", get(routes::health))
        .merge(protected)
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), guard::guard))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            routes::count_requests,
        ))
        .with_state(state)
}

/// Builds the engine from a loaded model.
pub fn prepare(cfg: &ServerConfig, model: BitNetModel, tok: Tokenizer) -> Result<Loaded> {
    let (template, note) = ChatTemplate::resolve_in(cfg.chat_template.as_deref(), &tok, cfg.template_sandbox.clone())?;
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    let ctx = cfg.ctx.unwrap_or(model.cfg.context_length.min(4096)).max(2);
    let model = Arc::new(model);
    let tok = Arc::new(tok);
    let scheduler = Scheduler::start(
        Arc::clone(&model),
        Arc::clone(&tok),
        SchedulerConfig {
            slots: cfg.slots,
            queue: cfg.queue,
            ctx,
            prefill_chunk: cfg.prefill_chunk,
        },
    );
    Ok(Loaded {
        model,
        tok,
        template,
        scheduler,
        ctx,
    })
}

/// Serves on `listener` until `shutdown` resolves, loading the model with `loader` in the background
/// (`/health` answers 503 meanwhile). On shutdown, stops accepting, lets in-flight requests finish, then
/// stops the scheduler. Fails if loading fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: ServerConfig,
    loader: Loader,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut cfg = cfg;
    // DNS rebinding only matters for a server that believes it is private: check Host when bound to
    // loopback.
    cfg.guard.loopback = listener.local_addr().map(|a| a.ip().is_loopback()).unwrap_or(true);
    let state = Arc::new(AppState {
        cfg,
        loaded: OnceLock::new(),
        metrics: metrics::Metrics::default(),
        conns: Arc::new(listener::ConnStats::default()),
        draining: Default::default(),
    });
    let (fail_tx, mut fail_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let st = Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        let r = loader().and_then(|(m, t)| prepare(&st.cfg, m, t));
        match r {
            Ok(l) => {
                let _ = st.loaded.set(Arc::new(l));
                eprintln!("model loaded: serving '{}'", st.cfg.model_name);
            }
            Err(e) => {
                let _ = fail_tx.send(e);
            }
        }
    });
    let app = router(Arc::clone(&state));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut load_error = None;
    let mut load_done = false;
    let server = listener::serve_connections(listener, app, state.cfg.limits, Arc::clone(&state.conns), async move {
        let _ = stop_rx.await;
    });
    let mut server = std::pin::pin!(server);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stop_tx = Some(stop_tx);
    loop {
        tokio::select! {
            r = &mut server => {
                r.context("HTTP server")?;
                break;
            }
            _ = &mut shutdown, if stop_tx.is_some() => {
                state.draining.store(true, std::sync::atomic::Ordering::Release);
                eprintln!(
                    "shutting down: finishing in-flight requests (at most {} s)",
                    state.cfg.limits.drain_timeout.as_secs_f64()
                );
                if let Some(t) = stop_tx.take() { let _ = t.send(()); }
            }
            e = &mut fail_rx, if !load_done => {
                load_done = true;
                if let Ok(e) = e {
                    load_error = Some(e);
                    if let Some(t) = stop_tx.take() { let _ = t.send(()); }
                }
            }
        }
    }
    if let Some(l) = state.loaded.get().cloned() {
        tokio::task::spawn_blocking(move || l.scheduler.shutdown()).await.ok();
    }
    match load_error {
        Some(e) => Err(e.context("loading the model")),
        None => Ok(()),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Binds `addr`, prints where it listens, and serves until SIGINT/SIGTERM (the `bitnet serve` command).
pub fn run_blocking(addr: &str, cfg: ServerConfig, loader: Loader) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local: SocketAddr = listener.local_addr()?;
        eprintln!("listening on http://{local}");
        serve(listener, cfg, loader, shutdown_signal()).await
    })
}
