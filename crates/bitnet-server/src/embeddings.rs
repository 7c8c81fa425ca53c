//! `POST /v1/embeddings` in OpenAI's shape: `input` as a string, a list of strings, token ids or a
//! list of token-id lists; `encoding_format` `float` (default) or `base64` (little-endian f32);
//! `dimensions` keeps the first N values (Matryoshka truncation) before L2 normalisation; `usage`
//! counts the tokens read. The inputs are evaluated on the batch scheduler's thread
//! ([`bitnet_engine::EmbedJob`]), so embedding and generation requests share one queue (429 when
//! full) and never race each other for the cores.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use bitnet_engine::{EmbedJob, SubmitError};
use bitnet_model::embed::{input_ids, l2_normalize, truncate};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::request::{read_json, typed};
use crate::{AppState, Loaded, ModelUse};

/// Most inputs in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// `input`: every form OpenAI accepts.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Deserialize, Debug, Clone)]
pub struct EmbeddingRequest {
    pub input: EmbeddingInput,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<usize>,
}

/// The token ids of every input; the checks that need no model run first.
fn inputs(eng: &Loaded, input: EmbeddingInput) -> Result<Vec<Vec<u32>>, ApiError> {
    let encode = |t: &str| input_ids(&eng.tok, t).map_err(|e| ApiError::invalid(format!("{e:#}")).param("input"));
    let appended = eng.tok.appended_token();
    let with_end = |mut ids: Vec<u32>| {
        // Token inputs get the token the model pools (EOS) when they lack it, like text inputs.
        if let Some(a) = appended {
            if ids.last() != Some(&a) {
                ids.push(a);
            }
        }
        ids
    };
    let lists: Vec<Vec<u32>> = match input {
        EmbeddingInput::Text(t) => vec![encode(&t)?],
        EmbeddingInput::Texts(ts) => {
            check_count(ts.len())?;
            ts.iter().map(|t| encode(t)).collect::<Result<_, _>>()?
        }
        EmbeddingInput::Tokens(ids) => vec![with_end(ids)],
        EmbeddingInput::TokenLists(ls) => {
            check_count(ls.len())?;
            ls.into_iter().map(with_end).collect()
        }
    };
    let vocab = eng.model.cfg.vocab_size;
    for (i, ids) in lists.iter().enumerate() {
        if ids.is_empty() {
            return Err(ApiError::invalid(format!("input {i} has no tokens")).param("input"));
        }
        if ids.len() > eng.ctx {
            return Err(ApiError::invalid(format!(
                "input {i} has {} tokens, more than the context size {}",
                ids.len(),
                eng.ctx
            ))
            .param("input")
            .code("context_length_exceeded"));
        }
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(ApiError::invalid(format!(
                "input {i}: token id {bad} is outside the vocabulary (size {vocab})"
            ))
            .param("input"));
        }
    }
    Ok(lists)
}

fn check_count(n: usize) -> Result<(), ApiError> {
    if n == 0 || n > MAX_INPUTS {
        return Err(ApiError::invalid(format!("'input' must hold 1 to {MAX_INPUTS} items, got {n}")).param("input"));
    }
    Ok(())
}

pub async fn embeddings(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let r = async {
        let v = read_json(&headers, body, st.cfg.max_body_bytes, st.cfg.limits.body_timeout).await?;
        let req: EmbeddingRequest = typed(&v)?;
        let base64 = match req.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(
                    ApiError::invalid(format!("encoding_format '{other}' is not supported (float or base64)"))
                        .param("encoding_format"),
                )
            }
        };
        let eng = st.served(req.model.as_deref(), ModelUse::Embeddings)?;
        let hidden = eng.model.cfg.hidden_size;
        if let Some(d) = req.dimensions {
            if d == 0 || d > hidden {
                return Err(ApiError::invalid(format!(
                    "dimensions = {d} is out of range (1..={hidden} for this model)"
                ))
                .param("dimensions"));
            }
        }
        // Tokenizing large bodies is CPU work: off the async executor.
        let e2 = Arc::clone(&eng);
        let lists = tokio::task::spawn_blocking(move || inputs(&e2, req.input))
            .await
            .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))??;
        let tokens: usize = lists.iter().map(Vec::len).sum();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pooling = eng.model.cfg.pooling.unwrap_or(bitnet_model::arch::Pooling::Last);
        eng.scheduler
            .submit_embed(EmbedJob {
                inputs: lists,
                pooling,
                reply: tx,
            })
            .map_err(|e| match e {
                SubmitError::QueueFull { .. } => {
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", e.to_string()).code("queue_full")
                }
                SubmitError::ShuttingDown | SubmitError::Failed => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", e.to_string()).code("unavailable")
                }
            })?;
        let vectors = rx
            .await
            .map_err(|_| ApiError::internal("the scheduler stopped before answering"))?
            .map_err(|e| ApiError::invalid(e).param("input"))?;
        let mut data = Vec::with_capacity(vectors.len());
        for (i, mut v) in vectors.into_iter().enumerate() {
            truncate(&mut v, req.dimensions).map_err(|e| ApiError::invalid(format!("{e:#}")).param("dimensions"))?;
            l2_normalize(&mut v);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            data.push(json!({"object": "embedding", "index": i, "embedding": embedding}));
        }
        Ok::<_, ApiError>(Json(json!({
            "object": "list",
            "data": data,
            "model": st.cfg.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })))
    }
    .await;
    r.into_response()
}
