//! Slow and stalled clients cannot lock others out: with 1100 connections that each sent half a
//! header, a new client is served within seconds (the oldest stalled connections are closed to make
//! room at the cap), the server closes stalled connections after the header timeout, a stalled body
//! gets 408, and an idle keep-alive connection is closed after the same timeout.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bitnet_server::listener::ConnLimits;
use bitnet_server::ServerConfig;
use tokio::sync::oneshot;

async fn start(limits: ConnLimits) -> (String, oneshot::Sender<()>) {
    let cfg = ServerConfig {
        model_name: "m".into(),
        ctx: Some(256),
        limits,
        ..Default::default()
    };
    common::start(cfg, common::tiny_a()).await
}

/// Whether the server has closed `s` (EOF or reset), waiting up to `within`.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408/400 response before the close is fine
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_headers_do_not_lock_out_new_clients() {
    let limits = ConnLimits {
        header_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(2),
        max_connections: 256,
        ..Default::default()
    };
    let (addr, _stop) = start(limits).await;
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        let mut stalled = Vec::new();
        for _ in 0..1100 {
            let mut s = TcpStream::connect(&a).expect("connect");
            s.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-")
                .unwrap();
            stalled.push(s);
        }
        // A new client is served at once although 1100 connections hold half a header.
        let (status, took) = common::get_health(&a).expect("new client");
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(5), "new client waited {took:?}");
        // The server closes the stalled connections itself (evicted at the cap or timed out).
        let newest = stalled.len() - 1;
        assert!(
            closed_by_server(&mut stalled[newest], Duration::from_secs(6)),
            "stalled connection still open"
        );
        assert!(closed_by_server(&mut stalled[0], Duration::from_secs(1)));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_get_408_and_idle_keep_alive_connections_close() {
    let limits = ConnLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        max_connections: 64,
        ..Default::default()
    };
    let (addr, _stop) = start(limits).await;
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        s.write_all(
            b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\"",
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");

        // A served keep-alive connection left idle is closed after the header timeout.
        let mut k = TcpStream::connect(&a).unwrap();
        k.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        k.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1024];
        let n = k.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        assert!(closed_by_server(&mut k, Duration::from_secs(4)), "idle keep-alive connection stayed open");
    })
    .await
    .unwrap();
}
