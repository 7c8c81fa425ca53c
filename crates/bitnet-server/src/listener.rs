//! Accepting connections ourselves rather than with `axum::serve`, which runs hyper without a timer (so
//! a client that sends half a header holds its connection forever) and without a connection limit (so
//! ~1000 such clients exhaust the file descriptors before the API key is even checked).
//!
//! - **Header read timeout** (`--header-timeout`, default 10 s): a connection must deliver each request's
//!   headers within it. It also bounds idle keep-alive connections: hyper starts the same timer when it
//!   waits for the next request.
//! - **Body read timeout** (`--body-timeout`, default 60 s): applied where the JSON body is read
//!   ([`crate::request::read_json`]); a stalled upload gets 408.
//! - **Connection cap** (`--max-connections`, default below the process's open-file limit): at the cap,
//!   the oldest connection that has not yet sent a complete request is closed to make room, so clients
//!   that stall before their first request cannot lock others out; when every connection is busy with
//!   a request the new one is refused (closed) instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// Limits on connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// After SIGTERM, how long in-flight requests may take to finish before their connections are
    /// closed (a load balancer's or Kubernetes' grace period should be a little longer).
    pub drain_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The process's open-file limit minus room for the model files, logs and the listener, at most 8192
/// (read from /proc on Linux; 1024 elsewhere).
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        })
        .unwrap_or(1024);
    soft.saturating_sub(128).clamp(16, 8192)
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub open: AtomicU64,
    pub accepted_total: AtomicU64,
    /// Connections closed to make room (they had not sent a complete request).
    pub evicted_total: AtomicU64,
    /// Connections refused because every open one was busy.
    pub refused_total: AtomicU64,
}

struct Conn {
    id: u64,
    /// Set when the connection delivers its first request.
    served: Arc<AtomicBool>,
    task: AbortHandle,
}

#[derive(Default)]
struct Table {
    conns: Mutex<VecDeque<Conn>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|c| c.id != id);
    }

    /// Closes the oldest connection that has not sent a request; false when there is none.
    fn evict_one(&self) -> bool {
        let victim = {
            let mut t = self.lock();
            let i = t.iter().position(|c| !c.served.load(Ordering::Acquire));
            i.and_then(|i| t.remove(i))
        };
        match victim {
            Some(c) => {
                c.task.abort();
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Closes every connection (the drain timeout passed); returns how many.
    fn abort_all(&self) -> usize {
        let all: Vec<Conn> = self.lock().drain(..).collect();
        for c in &all {
            c.task.abort();
        }
        all.len()
    }
}

/// Forgets a connection when its task ends, normally or aborted.
struct OnExit {
    table: Arc<Table>,
    stats: Arc<ConnStats>,
    id: u64,
}

impl Drop for OnExit {
    fn drop(&mut self) {
        self.table.remove(self.id);
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` until `stop` resolves, then lets the open requests finish.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let table = Arc::new(Table::default());
    let graceful = GracefulShutdown::new();
    let mut next_id = 0u64;
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors or a transient error: back off instead of spinning.
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        stats.accepted_total.fetch_add(1, Ordering::Relaxed);
        if table.len() >= limits.max_connections {
            if table.evict_one() {
                stats.evicted_total.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.refused_total.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            }
        }
        next_id += 1;
        let id = next_id;
        let served = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&served);
        let svc = tower::ServiceExt::map_request(app.clone(), move |r: hyper::Request<Incoming>| {
            flag.store(true, Ordering::Release);
            r
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Some(limits.header_timeout))
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        // Insert before the task can finish, so that its removal always finds the entry.
        let mut guard = table.lock();
        stats.open.fetch_add(1, Ordering::Relaxed);
        let on_exit = OnExit {
            table: Arc::clone(&table),
            stats: Arc::clone(&stats),
            id,
        };
        let task = tokio::spawn(async move {
            let _on_exit = on_exit;
            let _ = conn.await;
        });
        guard.push_back(Conn {
            id,
            served,
            task: task.abort_handle(),
        });
        drop(guard);
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        let cut = table.abort_all();
        eprintln!(
            "drain timeout ({} s): closed {cut} connections with requests still running",
            limits.drain_timeout.as_secs_f64()
        );
    }
    Ok(())
}
