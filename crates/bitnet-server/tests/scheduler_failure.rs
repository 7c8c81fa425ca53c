//! When the decoding thread dies, the server says so instead of accepting work that never runs:
//! `/health` turns 503 and generation requests fail at once with 503.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bitnet_server::ServerConfig;
use tower::ServiceExt;

mod common;

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn completion() -> Request<Body> {
    Request::post("/v1/completions")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"prompt": "Once", "max_tokens": 2}"#))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_scheduler_turns_health_red_and_refuses_requests_at_once() {
    let cfg = ServerConfig {
        ctx: Some(128),
        ..Default::default()
    };
    let (_state, loaded, app) = common::loaded_app(cfg, common::tiny_a());
    let health = || Request::get("/health").body(Body::empty()).unwrap();
    assert_eq!(call(&app, health()).await.0, StatusCode::OK);
    assert_eq!(call(&app, completion()).await.0, StatusCode::OK);

    loaded.scheduler.inject_panic_for_tests();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, body) = call(&app, health()).await;
        if st == StatusCode::SERVICE_UNAVAILABLE {
            assert!(body.contains("scheduler"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "health stayed {st}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = Instant::now();
    let (st, body) = call(&app, completion()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("scheduler_failed"), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}
