//! `POST /v1/chat/completions` and `POST /v1/completions`: validate, queue on the batch scheduler, then
//! answer with one JSON body or an SSE stream of OpenAI-shaped chunks ending in `data: [DONE]`.
//!
//! Each request gets its own event channel. The receiving half lives in the handler (non-streaming) or in
//! the response stream (streaming); when the client disconnects, hyper drops it, the scheduler sees the
//! closed channel at its next step, cancels the sequence and frees the slot.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bitnet_engine::{chat_prompt, text_prompt, Event, Finished, Job, SubmitError};
use bitnet_tokenizer::ChatMessage;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::error::ApiError;
use crate::request::{read_json, typed, ChatRequest, CompletionRequest, PromptField, SamplingFields};
use crate::{AppState, Loaded, ModelUse};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Chat or plain completion: decides the response shapes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// Common fields of every response of one request.
#[derive(Clone)]
struct Meta {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Meta {
    fn new(kind: Kind, model: &str, include_usage: bool) -> Self {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
        Meta {
            kind,
            id: format!("{prefix}-{:x}{n:06x}", unix_now()),
            created: unix_now(),
            model: model.to_string(),
            include_usage,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    /// One streamed chunk carrying `text` (or the final one with `finish_reason`).
    fn chunk(&self, text: Option<&str>, role: bool, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Text => json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}),
        };
        json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model,
               "choices": [choice]})
    }

    fn usage(f: &Finished) -> Value {
        json!({"prompt_tokens": f.prompt_tokens, "completion_tokens": f.completion_tokens,
               "total_tokens": f.prompt_tokens + f.completion_tokens})
    }

    fn full(&self, text: &str, f: &Finished) -> Value {
        let finish = f.reason.openai_name();
        let choice = match self.kind {
            Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text},
                                 "logprobs": null, "finish_reason": finish}),
            Kind::Text => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
        };
        json!({"id": self.id, "object": self.object(false), "created": self.created, "model": self.model,
               "choices": [choice], "usage": Self::usage(f)})
    }
}

pub async fn chat_completions(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let r = async {
        let v = read_json(&headers, body, st.cfg.max_body_bytes, st.cfg.limits.body_timeout).await?;
        let req: ChatRequest = typed(&v)?;
        let s: SamplingFields = typed(&v)?;
        let eng = st.served(s.model.as_deref(), ModelUse::Generation)?;
        if req.messages.is_empty() {
            return Err(ApiError::invalid("'messages' must hold at least one message").param("messages"));
        }
        let mut msgs = Vec::with_capacity(req.messages.len());
        for (i, m) in req.messages.iter().enumerate() {
            msgs.push(ChatMessage::new(m.role.clone(), m.text(i)?));
        }
        // Rendering and tokenizing a large conversation is CPU work: off the async executor, so that
        // /health and running streams stay responsive.
        let e2 = Arc::clone(&eng);
        let ids = tokio::task::spawn_blocking(move || chat_prompt(&e2.tok, &e2.template, &msgs))
            .await
            .map_err(|e| ApiError::internal(format!("rendering the prompt failed: {e}")))?
            .map_err(|e| ApiError::invalid(e.to_string()).param("messages"))?;
        Ok((eng, s, ids))
    }
    .await;
    match r {
        Ok((eng, s, ids)) => start(st, eng, s, ids, Kind::Chat).await,
        Err(e) => e.into_response(),
    }
}

pub async fn completions(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let r = async {
        let v = read_json(&headers, body, st.cfg.max_body_bytes, st.cfg.limits.body_timeout).await?;
        let req: CompletionRequest = typed(&v)?;
        let s: SamplingFields = typed(&v)?;
        let eng = st.served(s.model.as_deref(), ModelUse::Generation)?;
        let ids = match req.prompt {
            PromptField::Tokens(ids) => {
                let vocab = eng.model.cfg.vocab_size;
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                    return Err(
                        ApiError::invalid(format!("token id {bad} is outside the vocabulary (size {vocab})"))
                            .param("prompt"),
                    );
                }
                ids
            }
            PromptField::Text(t) => {
                let (e2, ps) = (Arc::clone(&eng), req.parse_special);
                tokio::task::spawn_blocking(move || encode(&e2, &t, ps))
                    .await
                    .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))??
            }
            PromptField::Texts(ts) if ts.len() == 1 => encode(&eng, &ts[0], req.parse_special)?,
            PromptField::Texts(_) => {
                return Err(ApiError::invalid("only one prompt per request is supported").param("prompt"))
            }
        };
        if ids.is_empty() {
            return Err(ApiError::invalid("the prompt is empty").param("prompt"));
        }
        Ok((eng, s, ids))
    }
    .await;
    match r {
        Ok((eng, s, ids)) => start(st, eng, s, ids, Kind::Text).await,
        Err(e) => e.into_response(),
    }
}

/// A plain prompt is encoded like `bitnet generate` does (BOS when the model wants one).
/// A raw prompt's ids. Special-token text becomes control tokens (people template by hand here) unless
/// the request says `"parse_special": false`.
fn encode(eng: &Loaded, text: &str, parse_special: bool) -> Result<Vec<u32>, ApiError> {
    let r = if parse_special {
        text_prompt(&eng.tok, text).map_err(|e| e.to_string())
    } else {
        eng.tok
            .encode_plain(text, eng.tok.add_bos_default())
            .map_err(|e| e.to_string())
    };
    r.map_err(|e| ApiError::invalid(e).param("prompt"))
}

/// Queues the job and answers (streaming or not).
async fn start(st: Arc<AppState>, eng: Arc<Loaded>, s: SamplingFields, ids: Vec<u32>, kind: Kind) -> Response {
    let opts = match s.to_options(ids.len(), eng.ctx) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = unbounded_channel();
    let job = Job {
        prompt: ids,
        opts,
        events: tx,
    };
    if let Err(e) = eng.scheduler.submit(job) {
        let status = match e {
            SubmitError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            SubmitError::ShuttingDown | SubmitError::Failed => StatusCode::SERVICE_UNAVAILABLE,
        };
        let code = match e {
            SubmitError::QueueFull { .. } => "server_busy",
            SubmitError::ShuttingDown => "shutting_down",
            SubmitError::Failed => "scheduler_failed",
        };
        return ApiError::new(status, "server_error", e.to_string())
            .code(code)
            .into_response();
    }
    let meta = Meta::new(
        kind,
        &st.cfg.model_name,
        s.stream_options.as_ref().is_some_and(|o| o.include_usage),
    );
    if s.stream {
        stream_response(st, meta, rx).into_response()
    } else {
        collect_response(st, meta, rx).await
    }
}

async fn collect_response(st: Arc<AppState>, meta: Meta, mut rx: UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done(f) => {
                st.metrics.record_ttft(f.ttft_secs);
                return Json(meta.full(&text, &f)).into_response();
            }
            Event::Error(e) => return ApiError::internal(format!("generation failed: {e}")).into_response(),
        }
    }
    ApiError::internal("generation ended without a result").into_response()
}

/// Where a stream is: role chunk not sent yet, streaming, or finished.
enum Phase {
    Start,
    Body,
    Usage(Finished),
    Done,
    End,
}

fn stream_response(
    st: Arc<AppState>,
    meta: Meta,
    rx: UnboundedReceiver<Event>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let data = |v: Value| SseEvent::default().data(v.to_string());
    let s = stream::unfold((rx, Phase::Start), move |(mut rx, phase)| {
        let meta = meta.clone();
        let st = Arc::clone(&st);
        async move {
            match phase {
                Phase::Start if meta.kind == Kind::Chat => {
                    Some((Ok(data(meta.chunk(Some(""), true, None))), (rx, Phase::Body)))
                }
                Phase::Start | Phase::Body => match rx.recv().await {
                    Some(Event::Text(t)) => Some((Ok(data(meta.chunk(Some(&t), false, None))), (rx, Phase::Body))),
                    Some(Event::Done(f)) => {
                        st.metrics.record_ttft(f.ttft_secs);
                        let last = meta.chunk(None, false, Some(f.reason.openai_name()));
                        let next = if meta.include_usage {
                            Phase::Usage(f)
                        } else {
                            Phase::Done
                        };
                        Some((Ok(data(last)), (rx, next)))
                    }
                    Some(Event::Error(e)) => {
                        let err = ApiError::internal(format!("generation failed: {e}"));
                        Some((Ok(data(err.body())), (rx, Phase::Done)))
                    }
                    None => None,
                },
                Phase::Usage(f) => {
                    let mut v = meta.chunk(None, false, None);
                    v["choices"] = json!([]);
                    v["usage"] = Meta::usage(&f);
                    Some((Ok(data(v)), (rx, Phase::Done)))
                }
                Phase::Done => Some((Ok(SseEvent::default().data("[DONE]")), (rx, Phase::End))),
                Phase::End => None,
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}
