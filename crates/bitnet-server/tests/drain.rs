//! Shutting down behind a load balancer: on SIGTERM the server refuses new connections at once, lets
//! the running requests finish (within `--drain-timeout`), answers `/health` 503 while draining, and
//! returns cleanly.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bitnet_server::listener::ConnLimits;
use bitnet_server::ServerConfig;
use tower::ServiceExt;

/// Sends a streaming completion of `max_tokens` (EOS ignored) and returns the open connection.
fn stream_request(addr: &str, max_tokens: usize) -> TcpStream {
    let body = format!(
        r#"{{"prompt": "Once upon a time", "max_tokens": {max_tokens}, "ignore_eos": true, "temperature": 0, "stream": true, "stream_options": {{"include_usage": true}}}}"#
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

fn cfg(drain: Duration) -> ServerConfig {
    ServerConfig {
        ctx: Some(4096),
        limits: ConnLimits {
            drain_timeout: drain,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_streams_finish_and_refuses_new_connections() {
    let (addr, stop, task) = common::start_task(cfg(Duration::from_secs(30)), common::tiny_a()).await;
    let a = addr.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let s = stream_request(&a, 3000);
        let mut r = BufReader::new(s);
        // Wait for the first token, then let the test stop the server.
        let mut line = String::new();
        loop {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended before a token");
            if line.starts_with("data: ") {
                break;
            }
        }
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        rest
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).unwrap();
    let rest = reader.await.unwrap();
    assert!(rest.contains("data: [DONE]"), "the running stream was cut:\n{rest}");
    assert!(
        rest.contains(r#""completion_tokens":3000"#),
        "not every token arrived:\n{rest}"
    );
    let done = tokio::time::timeout(Duration::from_secs(20), task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "serve did not return cleanly: {done:?}");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "a new connection was accepted after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_bounds_a_request_that_does_not_end() {
    let (addr, stop, task) = common::start_task(cfg(Duration::from_millis(300)), common::tiny_a()).await;
    // A request still arriving (a tenth of its body sent; the body timeout is 60 s): only the drain
    // timeout ends it.
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"prompt\": "
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    stop.send(()).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "serve did not return: {done:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_health_is_503_and_new_requests_are_not_started() {
    let cfg = ServerConfig {
        ctx: Some(128),
        ..Default::default()
    };
    let (state, _loaded, app) = common::loaded_app(cfg, common::tiny_a());
    let call = |req: Request<Body>| {
        let app = app.clone();
        async move {
            let r = app.oneshot(req).await.unwrap();
            let status = r.status();
            let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let health = || Request::get("/health").body(Body::empty()).unwrap();
    let completion = || {
        Request::post("/v1/completions")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"prompt": "Once", "max_tokens": 2}"#))
            .unwrap()
    };
    assert_eq!(call(health()).await.0, StatusCode::OK);
    assert_eq!(call(completion()).await.0, StatusCode::OK);
    state.draining.store(true, std::sync::atomic::Ordering::Release);
    let (st, body) = call(health()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("draining"), "{body}");
    let (st, body) = call(completion()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("shutting_down"), "{body}");
}
