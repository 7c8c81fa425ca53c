//! The small routes (`/health`, `/v1/models`, `/tokenize`, `/detokenize`, `/metrics`) and the middleware
//! (API key, request counting).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::ApiError;
use crate::request::{read_json, typed, DetokenizeRequest, TokenizeRequest};
use crate::AppState;

pub async fn health(State(st): State<Arc<AppState>>) -> Response {
    if st.draining.load(std::sync::atomic::Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))).into_response();
    }
    if let Some(l) = st.loaded.get() {
        if l.scheduler.is_healthy() {
            Json(json!({"status": "ok"})).into_response()
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "error", "error": "the scheduler stopped after an internal error"})),
            )
                .into_response()
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading model"})),
        )
            .into_response()
    }
}

pub async fn models(State(st): State<Arc<AppState>>) -> Response {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Json(
        json!({"object": "list", "data": [{"id": st.cfg.model_name, "object": "model", "created": created,
                 "owned_by": "bitnet-rs"}]}),
    )
    .into_response()
}

pub async fn tokenize(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let r = async {
        let v = read_json(&headers, body, st.cfg.max_body_bytes, st.cfg.limits.body_timeout).await?;
        let req: TokenizeRequest = typed(&v)?;
        let eng = st.loaded.get().ok_or_else(ApiError::loading)?;
        let add_bos = req.add_special && eng.tok.bos_id().is_some();
        let ids = eng
            .tok
            .encode(&req.content, add_bos)
            .map_err(|e| ApiError::invalid(e.to_string()).param("content"))?;
        Ok::<_, ApiError>(Json(json!({ "tokens": ids })))
    }
    .await;
    r.into_response()
}

pub async fn detokenize(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let r = async {
        let v = read_json(&headers, body, st.cfg.max_body_bytes, st.cfg.limits.body_timeout).await?;
        let req: DetokenizeRequest = typed(&v)?;
        let eng = st.loaded.get().ok_or_else(ApiError::loading)?;
        let content = eng
            .tok
            .decode(&req.tokens)
            .map_err(|e| ApiError::invalid(e.to_string()).param("tokens"))?;
        Ok::<_, ApiError>(Json(json!({ "content": content })))
    }
    .await;
    r.into_response()
}

pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let loaded = st.loaded.get();
    let sched = loaded.map(|l| (l.scheduler.stats(), l.scheduler.config().slots, l.ctx));
    let mut text = st.metrics.render(sched, loaded.is_some());
    let c = &st.conns;
    for (name, help, kind, v) in [
        ("bitnet_connections_open", "Open client connections.", "gauge", &c.open),
        (
            "bitnet_connections_accepted_total",
            "Connections accepted.",
            "counter",
            &c.accepted_total,
        ),
        (
            "bitnet_connections_evicted_total",
            "Connections closed at the cap before sending a request.",
            "counter",
            &c.evicted_total,
        ),
        (
            "bitnet_connections_refused_total",
            "Connections refused at the cap (all busy).",
            "counter",
            &c.refused_total,
        ),
    ] {
        let v = v.load(std::sync::atomic::Ordering::Relaxed);
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

pub async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
    .code("unknown_url")
}

/// Compares without an early exit, so response time does not reveal how much of a key matched.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn require_key(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.cfg.api_key {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same_secret(given.trim().as_bytes(), key.as_bytes()));
        if !ok {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

pub async fn count_requests(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".to_string());
    let r = next.run(req).await;
    st.metrics.record_request(&route, r.status().as_u16());
    r
}
