//! The hub client against a mock of the hub's HTTP API on loopback: the file listing, `resolve` with
//! redirects of LFS files to a blob host on another port (ETag, size and commit headers as the hub
//! sends them), and `Range` requests there. No test reaches outside this machine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Response};
use axum::routing::get;
use axum::Router;
use bitnet_hub::{Hub, ModelRef};
use sha2::{Digest, Sha256};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Default)]
struct Mock {
    /// repo -> (file -> bytes)
    repos: HashMap<String, Vec<(String, Vec<u8>)>>,
    /// The first blob GET is cut after this many bytes.
    cut_first_at: Option<usize>,
    /// Blobs are served with one byte changed.
    corrupt: bool,
    /// Requests without `Authorization: Bearer hf_secret` get 401.
    gated: bool,
    blob_base: String,
    /// (server, path, Authorization, Range) of every request.
    log: Vec<(&'static str, String, Option<String>, Option<String>)>,
    blob_gets: usize,
}

type Shared = Arc<Mutex<Mock>>;

fn hdr(h: &HeaderMap, k: &str) -> Option<String> {
    h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn lfs(file: &str) -> bool {
    file.ends_with(".gguf") || file.ends_with(".safetensors")
}

fn denied(m: &Mock, h: &HeaderMap) -> bool {
    m.gated && hdr(h, "authorization").as_deref() != Some("Bearer hf_secret")
}

async fn listing(
    State(s): State<Shared>,
    UrlPath((org, repo, _rev)): UrlPath<(String, String, String)>,
    h: HeaderMap,
) -> Response<Body> {
    let mut m = s.lock().unwrap();
    m.log.push((
        "hub",
        format!("/api/models/{org}/{repo}"),
        hdr(&h, "authorization"),
        None,
    ));
    if denied(&m, &h) {
        return Response::builder().status(401).body(Body::empty()).unwrap();
    }
    let Some(files) = m.repos.get(&format!("{org}/{repo}")) else {
        return Response::builder().status(404).body(Body::empty()).unwrap();
    };
    let siblings: Vec<_> = files
        .iter()
        .map(|(f, _)| serde_json::json!({ "rfilename": f }))
        .collect();
    let v = serde_json::json!({ "id": format!("{org}/{repo}"), "sha": COMMIT, "siblings": siblings });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

async fn resolve(
    State(s): State<Shared>,
    UrlPath((org, repo, _rev, file)): UrlPath<(String, String, String, String)>,
    h: HeaderMap,
) -> Response<Body> {
    let mut m = s.lock().unwrap();
    m.log.push((
        "hub",
        format!("/{org}/{repo}/resolve/{file}"),
        hdr(&h, "authorization"),
        None,
    ));
    if denied(&m, &h) {
        return Response::builder().status(401).body(Body::empty()).unwrap();
    }
    let Some(data) = m
        .repos
        .get(&format!("{org}/{repo}"))
        .and_then(|fs| fs.iter().find(|(f, _)| *f == file))
        .map(|(_, d)| d.clone())
    else {
        return Response::builder().status(404).body(Body::empty()).unwrap();
    };
    if lfs(&file) {
        let sha = sha256_hex(&data);
        Response::builder()
            .status(302)
            .header("location", format!("{}/blob/{sha}", m.blob_base))
            .header("x-linked-etag", format!("\"{sha}\""))
            .header("x-linked-size", data.len().to_string())
            .header("x-repo-commit", COMMIT)
            .header("etag", "\"0000000000000000000000000000000000000001\"")
            .body(Body::empty())
            .unwrap()
    } else {
        // Small files are served by the hub itself with their git blob id as ETag.
        let git_id = &sha256_hex(&data)[..40];
        Response::builder()
            .header("etag", format!("\"{git_id}\""))
            .header("x-repo-commit", COMMIT)
            .header("content-length", data.len().to_string())
            .body(Body::from(data))
            .unwrap()
    }
}

async fn blob(State(s): State<Shared>, UrlPath(sha): UrlPath<String>, h: HeaderMap) -> Response<Body> {
    let mut m = s.lock().unwrap();
    let range = hdr(&h, "range");
    m.log
        .push(("blob", format!("/blob/{sha}"), hdr(&h, "authorization"), range.clone()));
    let Some(mut data) = m
        .repos
        .values()
        .flatten()
        .find(|(_, d)| sha256_hex(d) == sha)
        .map(|(_, d)| d.clone())
    else {
        return Response::builder().status(404).body(Body::empty()).unwrap();
    };
    if m.corrupt {
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
    }
    m.blob_gets += 1;
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok())
        .unwrap_or(0);
    if from > data.len() {
        return Response::builder().status(416).body(Body::empty()).unwrap();
    }
    let status = if from > 0 { 206 } else { 200 };
    let rest = data[from..].to_vec();
    let total = rest.len();
    let builder = Response::builder()
        .status(status)
        .header("content-length", total.to_string())
        .header("accept-ranges", "bytes");
    let cut = if m.blob_gets == 1 { m.cut_first_at } else { None };
    match cut {
        Some(n) if n < total => {
            // Send n bytes, then fail the stream: the connection drops mid-file.
            let head = rest[..n].to_vec();
            let stream = futures_stream(head);
            builder.body(Body::from_stream(stream)).unwrap()
        }
        _ => builder.body(Body::from(rest)).unwrap(),
    }
}

/// A body stream that yields `head`, then an error (hyper then aborts the connection).
fn futures_stream(head: Vec<u8>) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send {
    /// (bytes to send, polls to wait before failing: lets the server flush what it sent).
    struct Cut(Option<Vec<u8>>, u32);
    impl futures_core::Stream for Cut {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if let Some(h) = self.0.take() {
                return std::task::Poll::Ready(Some(Ok(h)));
            }
            if self.1 > 0 {
                self.1 -= 1;
                let w = cx.waker().clone();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    w.wake();
                });
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(Some(Err(std::io::Error::other("connection dropped by the test"))))
        }
    }
    Cut(Some(head), 3)
}

struct Server {
    url: String,
    blob_url: String,
    state: Shared,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    fn start(mock: Mock) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state: Shared = Arc::new(Mutex::new(mock));
        let (hub_l, blob_l) = rt.block_on(async {
            (
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            )
        });
        let url = format!("http://{}", hub_l.local_addr().unwrap());
        let blob_url = format!("http://{}", blob_l.local_addr().unwrap());
        state.lock().unwrap().blob_base = blob_url.clone();
        let hub_app = Router::new()
            .route("/api/models/{org}/{repo}/revision/{rev}", get(listing))
            .route("/{org}/{repo}/resolve/{rev}/{*file}", get(resolve))
            .with_state(state.clone());
        let blob_app = Router::new().route("/blob/{sha}", get(blob)).with_state(state.clone());
        rt.spawn(async move { axum::serve(hub_l, hub_app).await.unwrap() });
        rt.spawn(async move { axum::serve(blob_l, blob_app).await.unwrap() });
        Server {
            url,
            blob_url,
            state,
            _rt: rt,
        }
    }

    fn hub(&self, cache: &Path, token: Option<&str>) -> Hub {
        Hub::new(&self.url, token.map(str::to_string), cache.to_path_buf(), false)
    }
}

fn fixture(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn tiny_repo() -> Mock {
    let mut m = Mock::default();
    m.repos.insert(
        "tester/bitnet-tiny-gguf".into(),
        vec![
            ("README.md".into(), b"# tiny".to_vec()),
            (
                "ggml-model-i2_s.gguf".into(),
                fixture("tiny-a/gguf/bitnet-b158-i2_s.gguf"),
            ),
            ("ggml-model-f16.gguf".into(), b"not used".to_vec()),
        ],
    );
    m
}

fn r(s: &str) -> ModelRef {
    ModelRef::parse(s).unwrap().unwrap()
}

fn fetch(hub: &Hub, s: &str) -> anyhow::Result<PathBuf> {
    hub.fetch(&r(s), &mut |_| {})
}

#[test]
fn downloads_into_the_hf_cache_and_loads() {
    let srv = Server::start(tiny_repo());
    let dir = tempdir();
    let hub = srv.hub(&dir, None);
    let mut seen = 0u64;
    let p = hub
        .fetch(&r("hf:tester/bitnet-tiny-gguf"), &mut |pr| seen = seen.max(pr.done))
        .unwrap();
    let repo = dir.join("models--tester--bitnet-tiny-gguf");
    assert_eq!(p, repo.join("snapshots").join(COMMIT).join("ggml-model-i2_s.gguf"));
    let data = fixture("tiny-a/gguf/bitnet-b158-i2_s.gguf");
    assert_eq!(seen, data.len() as u64);
    assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert!(repo.join("blobs").join(sha256_hex(&data)).is_file());
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), COMMIT);
    let (model, _tok) = bitnet_model::load(&p, &Default::default()).unwrap();
    assert_eq!(model.cfg.arch, "bitnet-b1.58");
    // Cached: a second fetch asks for no blob.
    let gets = srv.state.lock().unwrap().blob_gets;
    assert_eq!(
        fetch(&hub, "hf:tester/bitnet-tiny-gguf:ggml-model-i2_s.gguf").unwrap(),
        p
    );
    assert_eq!(srv.state.lock().unwrap().blob_gets, gets);
    // list and rm.
    let l = hub.list().unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].repo, "tester/bitnet-tiny-gguf");
    assert_eq!(l[0].bytes, data.len() as u64);
    assert_eq!(l[0].refs, vec![("main".to_string(), COMMIT.to_string())]);
    assert_eq!(hub.remove(&r("hf:tester/bitnet-tiny-gguf")).unwrap(), data.len() as u64);
    assert!(!repo.exists());
    assert!(hub.remove(&r("hf:tester/bitnet-tiny-gguf")).is_err());
}

#[test]
fn an_interrupted_download_resumes_where_it_stopped() {
    let mut m = tiny_repo();
    m.cut_first_at = Some(300_000);
    let srv = Server::start(m);
    let dir = tempdir();
    let hub = srv.hub(&dir, None);
    let e = fetch(&hub, "hf:tester/bitnet-tiny-gguf").unwrap_err().to_string();
    assert!(e.contains("run the same command again"), "{e}");
    let data = fixture("tiny-a/gguf/bitnet-b158-i2_s.gguf");
    let blobs = dir.join("models--tester--bitnet-tiny-gguf/blobs");
    let part = blobs.join(format!("{}.incomplete", sha256_hex(&data)));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 300_000);
    assert!(
        !dir.join("models--tester--bitnet-tiny-gguf/snapshots").exists(),
        "nothing visible yet"
    );
    let p = fetch(&hub, "hf:tester/bitnet-tiny-gguf").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert!(!part.exists());
    let log = &srv.state.lock().unwrap().log;
    let ranges: Vec<_> = log.iter().filter(|l| l.0 == "blob").map(|l| l.3.clone()).collect();
    assert_eq!(ranges, vec![None, Some("bytes=300000-".to_string())]);
}

#[test]
fn a_checksum_mismatch_leaves_nothing_behind() {
    let mut m = tiny_repo();
    m.corrupt = true;
    let srv = Server::start(m);
    let dir = tempdir();
    let e = fetch(&srv.hub(&dir, None), "hf:tester/bitnet-tiny-gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    let repo = dir.join("models--tester--bitnet-tiny-gguf");
    let left: Vec<_> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!repo.join("snapshots").exists());
}

#[test]
fn offline_mode_uses_the_cache_only() {
    let srv = Server::start(tiny_repo());
    let dir = tempdir();
    let online = fetch(&srv.hub(&dir, None), "hf:tester/bitnet-tiny-gguf").unwrap();
    // An endpoint nobody listens on: offline mode must not try it.
    let offline = Hub::new("http://127.0.0.1:9", None, dir.clone(), true);
    assert_eq!(fetch(&offline, "hf:tester/bitnet-tiny-gguf").unwrap(), online);
    assert_eq!(
        fetch(&offline, &format!("hf:tester/bitnet-tiny-gguf@{COMMIT}")).unwrap(),
        online
    );
    let e = fetch(&offline, "hf:tester/other").unwrap_err().to_string();
    assert!(e.contains("not in the cache") && e.contains("HF_HUB_OFFLINE"), "{e}");
    // Online but unreachable: the error says offline mode exists.
    let down = Hub::new("http://127.0.0.1:9", None, dir.clone(), false);
    let e = fetch(&down, "hf:tester/bitnet-tiny-gguf").unwrap_err().to_string();
    assert!(e.contains("cannot reach") && e.contains("HF_HUB_OFFLINE=1"), "{e}");
}

#[test]
fn the_token_goes_to_the_endpoint_only() {
    let mut m = tiny_repo();
    m.gated = true;
    let srv = Server::start(m);
    let dir = tempdir();
    let e = fetch(&srv.hub(&dir, None), "hf:tester/bitnet-tiny-gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("HF_TOKEN") && e.contains("401"), "{e}");
    assert!(!e.contains("hf_secret"));
    fetch(&srv.hub(&dir, Some("hf_secret")), "hf:tester/bitnet-tiny-gguf").unwrap();
    let log = &srv.state.lock().unwrap().log;
    let hub_auth: Vec<_> = log.iter().filter(|l| l.0 == "hub").map(|l| l.2.clone()).collect();
    assert!(hub_auth
        .iter()
        .skip(1)
        .all(|a| a.as_deref() == Some("Bearer hf_secret")));
    assert!(
        log.iter().filter(|l| l.0 == "blob").all(|l| l.2.is_none()),
        "token sent to the blob host"
    );
    assert!(srv.blob_url != srv.url);
}

#[test]
fn ambiguous_and_missing_repositories_say_what_to_do() {
    let mut m = Mock::default();
    m.repos.insert(
        "tester/two".into(),
        vec![
            ("m-TQ1_0.gguf".into(), b"a".to_vec()),
            ("m-TQ2_0.gguf".into(), b"b".to_vec()),
        ],
    );
    let srv = Server::start(m);
    let dir = tempdir();
    let hub = srv.hub(&dir, None);
    let e = fetch(&hub, "hf:tester/two").unwrap_err().to_string();
    assert!(
        e.contains("hf:tester/two:m-TQ1_0.gguf") && e.contains("hf:tester/two:m-TQ2_0.gguf"),
        "{e}"
    );
    let e = fetch(&hub, "hf:tester/none").unwrap_err().to_string();
    assert!(e.contains("not found (404)"), "{e}");
    let e = fetch(&hub, "hf:tester/two:m.gguf").unwrap_err().to_string();
    assert!(e.contains("no file 'm.gguf'"), "{e}");
}

#[test]
fn concurrent_pulls_of_one_file_agree() {
    let srv = Server::start(tiny_repo());
    let dir = tempdir();
    let hub = srv.hub(&dir, None);
    let paths: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| fetch(&hub, "hf:tester/bitnet-tiny-gguf")))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let data = fixture("tiny-a/gguf/bitnet-b158-i2_s.gguf");
    for p in &paths {
        assert_eq!(std::fs::read(p).unwrap(), data);
    }
    assert_eq!(srv.state.lock().unwrap().blob_gets, 1, "one download for three pulls");
}

/// A fresh folder under the system temp dir (removed at the end of the process is not needed: the
/// OS cleans /tmp, and names never collide).
fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "bitnet-hub-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}
