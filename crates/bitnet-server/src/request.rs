//! Request bodies of the OpenAI-compatible routes, and their validation into engine options.
//!
//! Bodies are read with a size limit, parsed as JSON, then typed with `serde_path_to_error` so that a
//! wrong type names its field (`param` in the error). Unknown fields are ignored, as OpenAI clients send
//! many (`logprobs`, `user`, ...).

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use bitnet_engine::{GenerateOptions, SamplerConfig};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::ApiError;

/// Longest stop string and most stop strings accepted.
const MAX_STOP_BYTES: usize = 256;
const MAX_STOPS: usize = 16;

/// Bodies over the limit but below this are read and discarded before the 413, so that the client
/// gets the answer instead of a reset connection; larger ones are refused at once.
const DRAIN_MAX: u64 = 16 << 20;

/// Reads the body (at most `limit` bytes, within `timeout`) as a JSON object.
pub async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, ApiError> {
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
        .code("request_too_large")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_MAX) {
        // Absurd: refuse at once (the connection is closed; the client may see a reset).
        return Err(too_big());
    }
    let timed_out = || {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!("the request body did not arrive within {} s", timeout.as_secs_f64()),
        )
        .code("request_timeout")
    };
    // Read up to `limit`; past it keep reading and discarding (up to DRAIN_MAX) so that the client
    // finishes its upload and receives the 413 instead of a connection reset.
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = Vec::new();
        let mut total = 0u64;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            let chunk = chunk.map_err(|_| too_big())?;
            total += chunk.len() as u64;
            if total > DRAIN_MAX {
                return Err(too_big());
            }
            if total <= limit as u64 {
                buf.extend_from_slice(&chunk);
            }
        }
        if total > limit as u64 {
            return Err(too_big());
        }
        Ok(buf)
    };
    let bytes = tokio::time::timeout(timeout, read).await.map_err(|_| timed_out())??;
    parse_json_body(&bytes)
}

/// A request body as a JSON object (what [`read_json`] does once the bytes are in; the fuzz target
/// `request_json` enters here).
pub fn parse_json_body(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}")).code("invalid_json"))?;
    if !value.is_object() {
        return Err(ApiError::invalid("the request body must be a JSON object").code("invalid_json"));
    }
    Ok(value)
}

/// Types a JSON body as `T`; a wrong or missing field is named in the error's `param`.
pub fn typed<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut err = ApiError::invalid(format!("invalid field '{path}': {inner}"));
        if path != "." {
            err = err.param(path);
        }
        err
    })
}

/// `stop`: one string or a list.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

/// Sampling fields shared by both completion routes (OpenAI's plus llama.cpp's extras).
#[derive(Deserialize, Debug, Default, Clone)]
pub struct SamplingFields {
    pub model: Option<String>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<StopField>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<u32>,
    pub n: Option<u32>,
    #[serde(default)]
    pub ignore_eos: bool,
}

#[derive(Deserialize, Debug, Default, Clone)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Message content: a string, or OpenAI's list of parts (only text parts are understood).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug, Clone)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
}

/// `prompt`: a string, a one-string list, or token ids.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Deserialize, Debug, Clone)]
pub struct CompletionRequest {
    pub prompt: PromptField,
    /// Whether special-token text in a text prompt (`<|eot_id|>`) becomes the control token (default
    /// true, like llama.cpp's server: raw prompts are often templated by hand). Chat requests never
    /// parse special tokens in message content.
    #[serde(default = "yes")]
    pub parse_special: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Debug, Clone)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default)]
    pub add_special: bool,
}

#[derive(Deserialize, Debug, Clone)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

impl Message {
    /// The text of the content (parts joined); an error for non-text parts.
    pub fn text(&self, i: usize) -> Result<String, ApiError> {
        match &self.content {
            None => Ok(String::new()),
            Some(Content::Text(s)) => Ok(s.clone()),
            Some(Content::Parts(parts)) => {
                let mut s = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => s.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(format!(
                                "only text content parts are supported (got type '{}')",
                                p.kind
                            ))
                            .param(format!("messages[{i}].content[{j}]")))
                        }
                    }
                }
                Ok(s)
            }
        }
    }
}

fn range_err(field: &str, what: &str) -> ApiError {
    ApiError::invalid(format!("'{field}' must be {what}")).param(field)
}

impl SamplingFields {
    /// Checks the fields and builds the engine options. `prompt_tokens` and `ctx` bound `max_tokens`.
    pub fn to_options(&self, prompt_tokens: usize, ctx: usize) -> Result<GenerateOptions, ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(range_err("n", "1 (one choice per request)"));
            }
        }
        if prompt_tokens >= ctx {
            return Err(ApiError::invalid(format!(
                "the prompt has {prompt_tokens} tokens but the context holds {ctx}"
            ))
            .code("context_length_exceeded"));
        }
        let room = ctx - prompt_tokens;
        let (field, requested) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) => ("max_completion_tokens", Some(m)),
            (None, m) => ("max_tokens", m),
        };
        let max_new_tokens = match requested {
            None => room,
            Some(0) => return Err(range_err(field, "at least 1")),
            Some(m) if m > room as u64 => {
                return Err(ApiError::invalid(format!(
                    "'{field}' is {m} but the prompt has {prompt_tokens} tokens and the context holds {ctx}: at most {room} new tokens fit"
                ))
                .param(field)
                .code("context_length_exceeded"))
            }
            Some(m) => m as usize,
        };
        let d = SamplerConfig::default();
        let temperature = self.temperature.unwrap_or(d.temperature);
        if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
            return Err(range_err("temperature", "in [0, 2]"));
        }
        let top_p = self.top_p.unwrap_or(d.top_p);
        if !(0.0..=1.0).contains(&top_p) {
            return Err(range_err("top_p", "in [0, 1]"));
        }
        let min_p = self.min_p.unwrap_or(d.min_p);
        if !(0.0..=1.0).contains(&min_p) {
            return Err(range_err("min_p", "in [0, 1]"));
        }
        let check_pen = |field: &str, v: Option<f32>| -> Result<f32, ApiError> {
            let v = v.unwrap_or(0.0);
            if v.is_finite() && (-2.0..=2.0).contains(&v) {
                Ok(v)
            } else {
                Err(range_err(field, "in [-2, 2]"))
            }
        };
        let presence_penalty = check_pen("presence_penalty", self.presence_penalty)?;
        let frequency_penalty = check_pen("frequency_penalty", self.frequency_penalty)?;
        let repeat_penalty = self.repeat_penalty.unwrap_or(d.repeat_penalty);
        if !(repeat_penalty.is_finite() && repeat_penalty > 0.0 && repeat_penalty <= 10.0) {
            return Err(range_err("repeat_penalty", "in (0, 10]"));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopField::One(s)) => vec![s.clone()],
            Some(StopField::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOPS || stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
            return Err(range_err(
                "stop",
                &format!("at most {MAX_STOPS} strings of at most {MAX_STOP_BYTES} bytes"),
            ));
        }
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|t| t.as_nanos() as u64)
                .unwrap_or(0)
        });
        Ok(GenerateOptions {
            max_new_tokens,
            ignore_eos: self.ignore_eos,
            stop,
            sampler: SamplerConfig {
                temperature,
                top_k: self.top_k.map(|k| k as usize).unwrap_or(d.top_k),
                top_p,
                min_p,
                seed,
                repeat_penalty,
                repeat_last_n: self.repeat_last_n.map(|n| n as usize).unwrap_or(d.repeat_last_n),
                presence_penalty,
                frequency_penalty,
            },
        })
    }
}
