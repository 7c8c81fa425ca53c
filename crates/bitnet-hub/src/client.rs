//! The hub's HTTP protocol, as Hugging Face's own client speaks it: the revision's file listing
//! (`/api/models/ORG/REPO/revision/REV`), a `HEAD` of `/ORG/REPO/resolve/COMMIT/FILE` for the file's
//! ETag (the sha256 for LFS files, in `X-Linked-Etag`) and size, then a `GET` that follows redirects
//! to the blob host and resumes with `Range`. Redirects are followed here, not by the HTTP client,
//! so that the token goes to the endpoint's host and nowhere else.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use ureq::http::Response;
use ureq::Body;

use crate::cache;
use crate::{check_repo_path, Hub, ModelRef, Progress};

/// A revision's commit and files.
pub(crate) struct Listing {
    pub commit: String,
    pub files: Vec<String>,
}

pub(crate) struct Client<'h> {
    hub: &'h Hub,
    agent: ureq::Agent,
}

/// Most redirects one request follows.
const MAX_REDIRECTS: usize = 10;

/// `scheme://host:port` of a URL (what decides whether the token may go there).
fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    &url[..end]
}

/// A header's value as text.
fn header<'a>(r: &'a Response<Body>, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// An ETag without `W/` and quotes.
fn clean_etag(e: &str) -> String {
    e.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

/// Whether a name from the server is safe as one path component in the cache.
fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s != ".."
        && s != "."
}

fn is_sha256(e: &str) -> bool {
    e.len() == 64 && e.chars().all(|c| c.is_ascii_hexdigit())
}

impl<'h> Client<'h> {
    pub fn new(hub: &'h Hub) -> Self {
        let config = ureq::Agent::config_builder()
            .max_redirects(0)
            .max_redirects_will_error(false)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_recv_body(Some(Duration::from_secs(120)))
            .user_agent(concat!("bitnet-rs/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            hub,
            agent: config.into(),
        }
    }

    fn unreachable(&self, url: &str, e: ureq::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach {} ({e}); check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the \
             models already in the cache {}",
            origin(url),
            self.hub.cache_dir.display()
        )
    }

    /// A request of `method` to `url`, following redirects itself (the token only to the endpoint).
    fn request(&self, method: &str, url: &str, range_from: u64, follow: bool) -> Result<(Response<Body>, String)> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let send_token = origin(&url) == origin(&self.hub.endpoint);
            let mut req = match method {
                "HEAD" => self.agent.head(&url),
                _ => self.agent.get(&url),
            };
            if let (true, Some(t)) = (send_token, &self.hub.token) {
                req = req.header("Authorization", &format!("Bearer {t}"));
            }
            if range_from > 0 {
                req = req.header("Range", &format!("bytes={range_from}-"));
            }
            let resp = req.call().map_err(|e| self.unreachable(&url, e))?;
            let status = resp.status().as_u16();
            if follow && (300..400).contains(&status) && status != 304 {
                let loc = header(&resp, "location").ok_or_else(|| anyhow!("{url}: redirect without a Location"))?;
                url = if loc.starts_with("http://") || loc.starts_with("https://") {
                    loc.to_string()
                } else if loc.starts_with('/') {
                    format!("{}{loc}", origin(&url))
                } else {
                    bail!("{url}: unsupported redirect to '{loc}'");
                };
                continue;
            }
            return Ok((resp, url));
        }
        bail!("{url}: more than {MAX_REDIRECTS} redirects")
    }

    /// The error for a failed status, naming what was asked for.
    fn status_error(&self, what: &str, status: u16) -> anyhow::Error {
        match status {
            401 | 403 if self.hub.has_token() => anyhow!(
                "{what}: access denied ({status}): the token in HF_TOKEN has no access to it (gated or private: \
                 accept its terms on the hub with the same account)"
            ),
            401 | 403 => anyhow!(
                "{what}: access denied ({status}): the repository is gated or private; create a token on the hub \
                 and set HF_TOKEN=hf_... (it is never printed)"
            ),
            404 => anyhow!("{what}: not found (404): no such repository, revision or file"),
            429 => anyhow!("{what}: rate limited by the hub (429); try again later"),
            s => anyhow!("{what}: the hub answered {s}"),
        }
    }

    pub fn listing(&self, r: &ModelRef) -> Result<Listing> {
        let url = format!("{}/api/models/{}/revision/{}", self.hub.endpoint, r.repo, r.revision);
        let (mut resp, _) = self.request("GET", &url, 0, true)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(self.status_error(&format!("hf:{}@{}", r.repo, r.revision), status));
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .with_context(|| format!("reading the file list of hf:{}", r.repo))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("hf:{}: the file list is not JSON", r.repo))?;
        let commit = v
            .get("sha")
            .and_then(|s| s.as_str())
            .filter(|s| safe_component(s))
            .ok_or_else(|| anyhow!("hf:{}: the file list has no valid commit ('sha')", r.repo))?
            .to_string();
        let files = v
            .get("siblings")
            .and_then(|s| s.as_array())
            .ok_or_else(|| anyhow!("hf:{}: the file list has no 'siblings'", r.repo))?
            .iter()
            .filter_map(|s| s.get("rfilename").and_then(|f| f.as_str()))
            .filter(|f| check_repo_path(f).is_ok())
            .map(str::to_string)
            .collect();
        Ok(Listing { commit, files })
    }

    /// Puts `file` of `commit` in the cache (if it is not there yet) and links it into the snapshot.
    pub fn download(
        &self,
        r: &ModelRef,
        commit: &str,
        file: &str,
        repo_dir: &Path,
        progress: &mut dyn FnMut(&Progress<'_>),
    ) -> Result<()> {
        let what = format!("hf:{}:{file}", r.repo);
        let url = format!("{}/{}/resolve/{commit}/{file}", self.hub.endpoint, r.repo);
        let (head, _) = self.request("HEAD", &url, 0, false)?;
        let status = head.status().as_u16();
        if !(200..400).contains(&status) {
            return Err(self.status_error(&what, status));
        }
        let etag = header(&head, "x-linked-etag")
            .or_else(|| header(&head, "etag"))
            .map(clean_etag)
            .filter(|e| safe_component(e))
            .ok_or_else(|| anyhow!("{what}: the hub gave no usable ETag for the file"))?;
        let size = header(&head, "x-linked-size")
            .or_else(|| (status < 300).then(|| header(&head, "content-length")).flatten())
            .and_then(|s| s.trim().parse::<u64>().ok());
        drop(head);
        let blobs = repo_dir.join("blobs");
        let blob = blobs.join(&etag);
        if !blob.is_file() {
            fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
            // One downloader per blob: a concurrent pull of the same file waits here, then finds it.
            // The lock files stay (as Hugging Face's tools leave theirs): deleting one while another
            // process waits on it would let a third take a second lock on a new file.
            let locks = repo_dir.join(".locks");
            fs::create_dir_all(&locks).with_context(|| format!("creating {}", locks.display()))?;
            let lock_path = locks.join(format!("{etag}.lock"));
            let lock = File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
            lock.lock()
                .with_context(|| format!("locking {}", lock_path.display()))?;
            if !blob.is_file() {
                self.fetch_blob(&what, &url, &blobs, &etag, size, file, progress)?;
            }
        }
        let len = fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
        progress(&Progress {
            file,
            done: len,
            total: Some(len),
        });
        cache::link_snapshot(repo_dir, commit, file, &etag)
    }

    /// Downloads into `<etag>.incomplete` (resuming what an earlier try left), verifies it, and
    /// renames it to the blob.
    #[allow(clippy::too_many_arguments)]
    fn fetch_blob(
        &self,
        what: &str,
        url: &str,
        blobs: &Path,
        etag: &str,
        size: Option<u64>,
        file: &str,
        progress: &mut dyn FnMut(&Progress<'_>),
    ) -> Result<()> {
        let part = blobs.join(format!("{etag}.incomplete"));
        let mut out = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&part)
            .with_context(|| format!("opening {}", part.display()))?;
        let mut have = out.metadata().map(|m| m.len()).unwrap_or(0);
        if size.is_some_and(|s| have > s) {
            have = 0;
        }
        if size != Some(have) {
            let (mut resp, _) = self.request("GET", url, have, true)?;
            let status = resp.status().as_u16();
            match status {
                206 => {}
                200 => have = 0, // the server sent the whole file
                416 => have = 0,
                s => return Err(self.status_error(what, s)),
            }
            if status == 416 {
                // The partial file does not match what the server has: start over.
                drop(resp);
                out.set_len(0)?;
                let (r2, _) = self.request("GET", url, 0, true)?;
                resp = r2;
                let s = resp.status().as_u16();
                if s != 200 {
                    return Err(self.status_error(what, s));
                }
            }
            out.set_len(have)
                .with_context(|| format!("truncating {}", part.display()))?;
            out.seek(SeekFrom::Start(have))?;
            let mut reader = resp.body_mut().as_reader();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = out.sync_all();
                        bail!(
                            "{what}: the download stopped after {have} bytes ({e}); run the same command again \
                             to resume it"
                        );
                    }
                };
                out.write_all(&buf[..n]).map_err(|e| write_error(e, &part))?;
                have += n as u64;
                progress(&Progress {
                    file,
                    done: have,
                    total: size,
                });
            }
            out.sync_all().map_err(|e| write_error(e, &part))?;
        }
        if let Some(s) = size {
            if have != s {
                bail!("{what}: the download stopped at {have} of {s} bytes; run the same command again to resume it");
            }
        }
        if is_sha256(etag) {
            out.seek(SeekFrom::Start(0))?;
            let mut h = Sha256::new();
            std::io::copy(&mut out, &mut h).with_context(|| format!("reading back {}", part.display()))?;
            let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if !got.eq_ignore_ascii_case(etag) {
                drop(out);
                let _ = fs::remove_file(&part);
                bail!(
                    "{what}: checksum mismatch (sha256 {got}, the hub says {etag}); the download was deleted, run \
                     the command again to download it anew"
                );
            }
        }
        drop(out);
        let blob = blobs.join(etag);
        fs::rename(&part, &blob).with_context(|| format!("renaming {} to {}", part.display(), blob.display()))
    }
}

/// A write error, saying so plainly when the disk is full.
fn write_error(e: std::io::Error, path: &Path) -> anyhow::Error {
    if e.raw_os_error() == Some(28) || e.kind() == ErrorKind::StorageFull {
        anyhow!(
            "disk full while writing {} ({e}); free space and run the command again to resume",
            path.display()
        )
    } else {
        anyhow!("writing {}: {e}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_etags() {
        assert_eq!(
            origin("https://huggingface.co/api/models/a/b"),
            "https://huggingface.co"
        );
        assert_eq!(origin("http://127.0.0.1:8080/x"), "http://127.0.0.1:8080");
        assert_eq!(origin("http://h"), "http://h");
        assert_eq!(clean_etag("W/\"abc\""), "abc");
        assert!(safe_component("0123abcd") && !safe_component("../x") && !safe_component("a/b"));
        assert!(is_sha256(&"a".repeat(64)) && !is_sha256("abc"));
    }
}
