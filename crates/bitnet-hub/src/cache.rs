//! The Hugging Face cache layout: `models--ORG--REPO/blobs/<etag>` holds each file's bytes once,
//! `snapshots/<commit>/<path>` links to them, `refs/<revision>` holds the commit a branch or tag
//! pointed to when last fetched. A blob appears only complete and verified (written as
//! `<etag>.incomplete`, then renamed), so a snapshot never links to a partial file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::pick::{pick_files, Choice};
use crate::ModelRef;

/// `models--ORG--REPO` under the cache.
pub(crate) fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// A name no other writer (process or thread) uses at the same time.
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Writes `data` to `path` through a temporary file in the same folder, fsynced, then renamed.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("a cache path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        unique_suffix()
    ));
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Records that `revision` pointed to `commit` (nothing to record when the revision is the commit).
pub(crate) fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<()> {
    if revision == commit {
        return Ok(());
    }
    write_atomic(&repo_dir.join("refs").join(revision), commit.as_bytes())
}

/// Links `snapshots/<commit>/<file>` to `blobs/<etag>` (relative, as Hugging Face's tools do),
/// replacing an older link atomically.
pub(crate) fn link_snapshot(repo_dir: &Path, commit: &str, file: &str, etag: &str) -> Result<()> {
    let link = repo_dir.join("snapshots").join(commit).join(file);
    let dir = link.parent().context("a snapshot path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let up = "../".repeat(2 + file.matches('/').count());
    let target = PathBuf::from(format!("{up}blobs/{etag}"));
    let tmp = dir.join(format!(".link.{}.tmp", unique_suffix()));
    let _ = fs::remove_file(&tmp);
    make_link(&target, &tmp, repo_dir, etag)?;
    fs::rename(&tmp, &link).with_context(|| format!("linking {}", link.display()))
}

#[cfg(unix)]
fn make_link(target: &Path, at: &Path, _repo_dir: &Path, _etag: &str) -> Result<()> {
    std::os::unix::fs::symlink(target, at).with_context(|| format!("linking {}", at.display()))
}

#[cfg(not(unix))]
fn make_link(_target: &Path, at: &Path, repo_dir: &Path, etag: &str) -> Result<()> {
    // Without symlinks, a copy (what Hugging Face's tools do on Windows without developer mode).
    fs::copy(repo_dir.join("blobs").join(etag), at).with_context(|| format!("copying to {}", at.display()))?;
    Ok(())
}

/// The commit `r.revision` names in the cache: a ref recorded by an earlier fetch, or a snapshot
/// named by the commit itself.
fn cached_commit(repo_dir: &Path, r: &ModelRef) -> Option<String> {
    let by_ref = fs::read_to_string(repo_dir.join("refs").join(&r.revision)).ok();
    if let Some(c) = by_ref.map(|c| c.trim().to_string()).filter(|c| !c.is_empty()) {
        return Some(c);
    }
    repo_dir
        .join("snapshots")
        .join(&r.revision)
        .is_dir()
        .then(|| r.revision.clone())
}

/// Every file under `dir`, as repository paths.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.exists() {
                if let Ok(rel) = p.strip_prefix(dir) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    out.sort();
    out
}

/// `HF_HUB_OFFLINE=1`: the path of `r` from the cache alone.
pub(crate) fn find_offline(cache: &Path, r: &ModelRef) -> Result<PathBuf> {
    let repo_dir = repo_dir(cache, &r.repo);
    let hint = "HF_HUB_OFFLINE=1 uses the cache only: unset it to download, or `bitnet pull` it while online";
    let Some(commit) = cached_commit(&repo_dir, r) else {
        bail!(
            "{r} is not in the cache {} (no revision '{}'); {hint}",
            cache.display(),
            r.revision
        );
    };
    let snap = repo_dir.join("snapshots").join(&commit);
    if let Some(f) = &r.file {
        let p = snap.join(f);
        if !p.exists() {
            bail!("{r}: '{f}' is not in the cached snapshot {commit}; {hint}");
        }
        return Ok(p);
    }
    match pick_files(&r.repo, &files_under(&snap))? {
        Choice::File(f) => Ok(snap.join(f)),
        Choice::Folder(_) => Ok(snap),
    }
}

/// A repository in the cache.
#[derive(Clone, Debug)]
pub struct CachedRepo {
    /// `ORG/REPO`.
    pub repo: String,
    /// Revision -> commit, as recorded.
    pub refs: Vec<(String, String)>,
    /// Commit -> its files with their sizes.
    pub snapshots: Vec<(String, Vec<(String, u64)>)>,
    /// Bytes of the complete blobs.
    pub bytes: u64,
}

fn blob_bytes(repo_dir: &Path) -> u64 {
    fs::read_dir(repo_dir.join("blobs"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub(crate) fn list(cache: &Path) -> Result<Vec<CachedRepo>> {
    let rd = match fs::read_dir(cache) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading the cache {}", cache.display())),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("models--") else {
            continue;
        };
        let Some((org, repo)) = rest.split_once("--") else {
            continue;
        };
        let dir = e.path();
        let mut refs: Vec<(String, String)> = files_under(&dir.join("refs"))
            .into_iter()
            .filter_map(|r| {
                let c = fs::read_to_string(dir.join("refs").join(&r)).ok()?;
                Some((r, c.trim().to_string()))
            })
            .collect();
        refs.sort();
        let mut snapshots = Vec::new();
        if let Ok(sd) = fs::read_dir(dir.join("snapshots")) {
            for s in sd.flatten() {
                let files = files_under(&s.path())
                    .into_iter()
                    .map(|f| {
                        let size = fs::metadata(s.path().join(&f)).map(|m| m.len()).unwrap_or(0);
                        (f, size)
                    })
                    .collect();
                snapshots.push((s.file_name().to_string_lossy().to_string(), files));
            }
        }
        snapshots.sort();
        out.push(CachedRepo {
            repo: format!("{org}/{repo}"),
            refs,
            snapshots,
            bytes: blob_bytes(&dir),
        });
    }
    out.sort_by(|a, b| a.repo.cmp(&b.repo));
    Ok(out)
}

pub(crate) fn remove(cache: &Path, repo: &str) -> Result<u64> {
    let dir = repo_dir(cache, repo);
    if !dir.is_dir() {
        bail!("hf:{repo} is not in the cache {}", cache.display());
    }
    let bytes = blob_bytes(&dir);
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(bytes)
}
