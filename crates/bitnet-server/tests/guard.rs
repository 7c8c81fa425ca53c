//! The browser defences on the real server (raw HTTP over TCP, so every header is exactly as a hostile
//! page or a rebinding DNS name would send it): 415 for non-JSON bodies, 403 for foreign origins and
//! hosts, CORS for allowed origins, and curl-style clients unaffected.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bitnet_server::guard::Guard;
use bitnet_server::ServerConfig;
use tokio::sync::oneshot;

async fn start(guard: Guard) -> (String, oneshot::Sender<()>) {
    let cfg = ServerConfig {
        model_name: "m".into(),
        ctx: Some(256),
        guard,
        ..Default::default()
    };
    common::start(cfg, common::tiny_a()).await
}

/// One HTTP/1.1 request with exactly these headers (Host defaults to the address); returns the status,
/// the response head and the body.
fn raw(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new(), String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

async fn call(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let (a, m, p, b) = (addr.to_string(), method.to_string(), path.to_string(), body.to_string());
    let h: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        raw(&a, &m, &p, &h, &b)
    })
    .await
    .unwrap()
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const BODY: &str = r#"{"prompt": "Once", "max_tokens": 2}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_are_held_to_same_origin_and_json() {
    let (addr, _stop) = start(Guard::default()).await;
    // curl-style: JSON, no Origin.
    let (st, _, _) = call(&addr, "POST", "/v1/completions", &[JSON], BODY).await;
    assert_eq!(st, 200);
    // A "simple" cross-origin POST (text/plain, or no type at all) is refused before it runs.
    for ct in [
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let h: Vec<(&str, &str)> = ct.map(|c| ("Content-Type", c)).into_iter().collect();
        let (st, head, body) = call(&addr, "POST", "/v1/completions", &h, BODY).await;
        assert_eq!(st, 415, "{ct:?}: {body}");
        // The body was not read: the connection must not be reused by a keep-alive client.
        assert!(head.contains("connection: close"), "{head}");
        assert!(body.contains("application/json"), "{body}");
    }
    // Foreign origins: 403 on every route, preflights included, and no CORS headers.
    for (m, p) in [
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("OPTIONS", "/v1/completions"),
    ] {
        let (st, head, _) = call(&addr, m, p, &[JSON, ("Origin", "https://evil.example")], BODY).await;
        assert_eq!(st, 403, "{m} {p}");
        assert!(!head.contains("access-control-allow-origin"), "{head}");
    }
    // A loopback page: allowed, with CORS headers; its preflight is answered.
    let local = ("Origin", "http://localhost:5173");
    let (st, head, _) = call(&addr, "POST", "/v1/completions", &[JSON, local], BODY).await;
    assert_eq!(st, 200);
    assert!(
        head.contains("access-control-allow-origin: http://localhost:5173"),
        "{head}"
    );
    let (st, head, _) = call(&addr, "OPTIONS", "/v1/completions", &[local], "").await;
    assert_eq!(st, 204);
    assert!(head.contains("access-control-allow-methods"), "{head}");
    // DNS rebinding: a loopback-bound server answers only localhost names.
    let (st, _, body) = call(&addr, "GET", "/v1/models", &[("Host", "attacker.example:8080")], "").await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("--allowed-hosts"), "{body}");
    for h in ["localhost:1", "127.0.0.1", "[::1]:8080"] {
        let (st, _, _) = call(&addr, "GET", "/v1/models", &[("Host", h)], "").await;
        assert_eq!(st, 200, "{h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_and_hosts_extend_the_defaults() {
    let (addr, _stop) = start(Guard {
        allowed_origins: vec!["https://app.example.com".into()],
        allowed_hosts: vec!["bitnet.lan".into()],
        loopback: true,
    })
    .await;
    let (st, head, _) = call(&addr, "GET", "/v1/models", &[("Origin", "https://app.example.com")], "").await;
    assert_eq!(st, 200);
    assert!(
        head.contains("access-control-allow-origin: https://app.example.com"),
        "{head}"
    );
    let (st, _, _) = call(&addr, "GET", "/v1/models", &[("Host", "bitnet.lan:8080")], "").await;
    assert_eq!(st, 200);
    let (st, _, _) = call(
        &addr,
        "GET",
        "/v1/models",
        &[("Origin", "https://other.example.com")],
        "",
    )
    .await;
    assert_eq!(st, 403);
}
