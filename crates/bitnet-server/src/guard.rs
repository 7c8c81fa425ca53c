//! What a local server must refuse from browsers (the defences Ollama's server has):
//!
//! - **Non-JSON bodies on JSON routes: 415.** A web page may POST `text/plain` (or a body without a type)
//!   to any origin without a CORS preflight; requiring `Content-Type: application/json` makes every
//!   cross-origin call a preflighted one, which the Origin check below then refuses.
//! - **Origins: 403 unless allowed.** Requests carrying an `Origin` header (browsers) must come from a
//!   loopback origin (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`) or one given with
//!   `--allowed-origins`; CORS headers are sent for allowed origins only. Clients that send no `Origin`
//!   (curl, the OpenAI SDKs) are not affected.
//! - **Hosts: 403 unless allowed, when bound to loopback.** DNS rebinding points an attacker's name at
//!   127.0.0.1, so the browser's requests carry the attacker's `Host`; a loopback-bound server answers
//!   only `Host: localhost`, a loopback address, or a name given with `--allowed-hosts`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// Who may call the server (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Guard {
    /// Extra allowed origins, exactly as browsers send them (`https://app.example.com`); `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Extra allowed `Host` names (without port); `*` allows any.
    pub allowed_hosts: Vec<String>,
    /// Whether the server is bound to a loopback address (then `Host` is checked).
    pub loopback: bool,
}

impl Guard {
    /// The host part of a `Host` header value (`[::1]:8080` -> `::1`, `localhost:80` -> `localhost`).
    fn host_name(v: &str) -> &str {
        let v = v.trim();
        if let Some(rest) = v.strip_prefix('[') {
            return rest.split(']').next().unwrap_or("");
        }
        v.rsplit_once(':').map_or(
            v,
            |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { v },
        )
    }

    fn is_loopback_name(h: &str) -> bool {
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        h == "localhost" || h.ends_with(".localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Whether requests with this `Host` are served.
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        if !self.loopback {
            return true;
        }
        let Some(host) = host else { return true };
        let name = Self::host_name(host);
        Self::is_loopback_name(name)
            || self
                .allowed_hosts
                .iter()
                .any(|a| a == "*" || a.eq_ignore_ascii_case(name))
    }

    /// Whether a browser page of this origin may call the server.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        if self
            .allowed_origins
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        matches!(scheme, "http" | "https") && Self::is_loopback_name(Self::host_name(rest))
    }
}

fn forbidden(message: String, code: &'static str) -> Response {
    closing(
        ApiError::new(StatusCode::FORBIDDEN, "permission_error", message)
            .code(code)
            .into_response(),
    )
}

/// Marks a response sent before the request body was read (or after reading stopped early) with
/// `Connection: close`: the unread body makes the connection unusable, and without the header a
/// keep-alive client would send its next request on a connection the server is closing (measured by
/// the soak test: ~1% of requests lost that way).
fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .is_some_and(|t| t == "application/json" || (t.starts_with("application/") && t.ends_with("+json")))
}

/// The middleware: Host, then Origin (with CORS preflight answers), then the JSON content type of POSTs.
pub async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let g = &st.cfg.guard;
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !g.host_allowed(host) {
        return forbidden(
            format!(
                "Host '{}' is not served: this server is bound to loopback and answers only localhost names \
                 (pass --allowed-hosts to add one)",
                host.unwrap_or("")
            ),
            "host_not_allowed",
        );
    }
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(o) = &origin {
        if !g.origin_allowed(o) {
            return forbidden(
                format!("requests from origin '{o}' are not allowed (pass --allowed-origins to add it)"),
                "origin_not_allowed",
            );
        }
    }
    if req.method() == Method::OPTIONS {
        // A CORS preflight from an allowed origin (or none).
        let mut r = StatusCode::NO_CONTENT.into_response();
        cors(r.headers_mut(), origin.as_deref(), true);
        return r;
    }
    if req.method() == Method::POST && !is_json(req.headers()) {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        return closing(
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                format!("the body must be JSON: send 'Content-Type: application/json' (got '{ct}')"),
            )
            .code("unsupported_media_type")
            .into_response(),
        );
    }
    let mut r = next.run(req).await;
    if matches!(r.status(), StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT) {
        // The handler stopped reading the body.
        r = closing(r);
    }
    cors(r.headers_mut(), origin.as_deref(), false);
    r
}

fn cors(h: &mut HeaderMap, origin: Option<&str>, preflight: bool) {
    let Some(o) = origin.and_then(|o| HeaderValue::from_str(o).ok()) else {
        return;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let g = Guard {
            loopback: true,
            allowed_hosts: vec!["bitnet.internal".into()],
            allowed_origins: vec!["https://app.example.com".into()],
        };
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost",
            "BITNET.internal:1",
            "a.localhost",
        ] {
            assert!(g.host_allowed(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:8080",
            "127.0.0.1.evil.com",
            "localhost.evil.com:80",
            "[::2]:80",
        ] {
            assert!(!g.host_allowed(Some(bad)), "{bad}");
        }
        assert!(
            Guard::default().host_allowed(Some("evil.com")),
            "not loopback-bound: no Host check"
        );
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://[::1]:5173",
            "https://app.example.com",
        ] {
            assert!(g.origin_allowed(ok), "{ok}");
        }
        for bad in [
            "https://evil.com",
            "null",
            "http://localhost.evil.com",
            "file://",
            "https://app.example.com.evil",
        ] {
            assert!(!g.origin_allowed(bad), "{bad}");
        }
    }
}
