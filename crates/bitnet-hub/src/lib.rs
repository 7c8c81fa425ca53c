//! Models from the Hugging Face Hub, in the cache Hugging Face's own tools use, so a model downloaded
//! by either is found by both: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`,
//! holding `models--ORG--REPO/{blobs,snapshots,refs}`.
//!
//! * [`ModelRef`]: what `-m hf:ORG/REPO[:FILE][@REVISION]` names.
//! * [`Hub::fetch`]: the local path of a reference (a GGUF file, or the snapshot folder of a Hugging
//!   Face model), downloading what is missing: resumed with HTTP `Range` after an interruption,
//!   checked against the hub's sha256 (the LFS ETag) before it becomes visible, written through a
//!   temporary file and renamed, under a lock so concurrent pulls of one file do not collide.
//! * [`Hub::list`] and [`Hub::remove`]: what the cache holds.
//!
//! `HF_ENDPOINT` (default `https://huggingface.co`), `HF_TOKEN` (or the token file Hugging Face's
//! tools write; sent to the endpoint's host only, never printed) and `HF_HUB_OFFLINE=1` (the cache
//! only, no network) are honoured.
//!
//! Why not the `hf-hub` crate: version 1.0 is an async client (tokio + reqwest) whose TLS backend
//! builds C code with cmake, and it neither resumes partial blobs nor verifies checksums, which this
//! module must do; the protocol it needs is four requests, written here over `ureq`.

// It faces the network and the file system: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod cache;
mod client;
mod pick;

use std::fmt;
use std::path::PathBuf;

pub use cache::CachedRepo;
pub use pick::{pick_files, Choice};

/// What `hf:ORG/REPO[:FILE][@REVISION]` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRef {
    /// `ORG/REPO`.
    pub repo: String,
    /// One file of the repository, when named.
    pub file: Option<String>,
    /// A branch, tag or commit (`main` when not named).
    pub revision: String,
}

impl ModelRef {
    /// Parses a model argument: `None` when it does not start with `hf:` (a local path), else the
    /// reference or an error saying what is wrong with it.
    pub fn parse(s: &str) -> Option<anyhow::Result<ModelRef>> {
        let rest = s.strip_prefix("hf:")?;
        Some(Self::parse_ref(rest).map_err(|e| anyhow::anyhow!("'{s}': {e} (expected hf:ORG/REPO[:FILE][@REVISION])")))
    }

    fn parse_ref(rest: &str) -> Result<ModelRef, String> {
        let (body, revision) = match rest.rsplit_once('@') {
            Some((b, r)) if !r.is_empty() && !r.contains(':') => (b, r.to_string()),
            Some(_) => return Err("empty or malformed revision".into()),
            None => (rest, "main".to_string()),
        };
        let (repo, file) = match body.split_once(':') {
            Some((r, f)) => (r, Some(f.to_string())),
            None => (body, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let name_ok = |p: &str| {
            !p.is_empty() && p != "." && p != ".." && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if parts.len() != 2 || !parts.iter().all(|p| name_ok(p)) {
            return Err(format!("'{repo}' is not ORG/REPO"));
        }
        if let Some(f) = &file {
            check_repo_path(f)?;
        }
        if !revision
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            || revision.contains("..")
            // It becomes a path under refs/ (branch names like `pr/1` have slashes): relative, no
            // empty or dot components, so `@/etc/x` cannot write outside the cache.
            || check_repo_path(&revision).is_err()
        {
            return Err(format!("revision '{revision}' has characters a revision cannot hold"));
        }
        Ok(ModelRef {
            repo: repo.to_string(),
            file,
            revision,
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hf:{}", self.repo)?;
        if let Some(file) = &self.file {
            write!(f, ":{file}")?;
        }
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

/// A file path inside a repository: relative, no `..`, no empty parts (it becomes a path in the
/// cache, so a hostile listing must not reach outside it).
pub(crate) fn check_repo_path(p: &str) -> Result<(), String> {
    let ok = !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !p.chars().any(|c| c.is_control());
    if ok {
        Ok(())
    } else {
        Err(format!("'{}' is not a file path inside a repository", p.escape_debug()))
    }
}

/// Where and how to reach the hub.
#[derive(Clone, Debug)]
pub struct Hub {
    /// Base URL (`HF_ENDPOINT`), without a trailing slash.
    pub endpoint: String,
    /// The access token (`HF_TOKEN`); sent to `endpoint`'s host only.
    token: Option<String>,
    /// The hub cache folder.
    pub cache_dir: PathBuf,
    /// `HF_HUB_OFFLINE=1`: the cache only.
    pub offline: bool,
}

/// Download progress of one file.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    pub file: &'a str,
    /// Bytes on disk so far (a resumed download starts above 0).
    pub done: u64,
    pub total: Option<u64>,
}

impl Hub {
    /// Settings from the environment, as Hugging Face's tools read them.
    pub fn from_env() -> Hub {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let base = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            base.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token = var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")).or_else(|| {
            std::fs::read_to_string(home.join("token"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Hub {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".to_string())
                .trim_end_matches('/')
                .to_string(),
            token,
            cache_dir,
            offline,
        }
    }

    /// Explicit settings (tests, embedding applications).
    pub fn new(endpoint: &str, token: Option<String>, cache_dir: PathBuf, offline: bool) -> Hub {
        Hub {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            cache_dir,
            offline,
        }
    }

    /// Whether a token is configured (its value is never shown).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The local path of `r`: a GGUF file, or the snapshot folder of a Hugging Face model. Downloads
    /// whatever is not in the cache yet (offline: only looks), reporting progress per file.
    pub fn fetch(&self, r: &ModelRef, progress: &mut dyn FnMut(&Progress<'_>)) -> anyhow::Result<PathBuf> {
        if self.offline {
            return cache::find_offline(&self.cache_dir, r);
        }
        let client = client::Client::new(self);
        let listing = client.listing(r)?;
        let choice = match &r.file {
            Some(f) => {
                if !listing.files.iter().any(|x| x == f) {
                    anyhow::bail!(
                        "{}: the repository has no file '{f}' at revision {} (files: {})",
                        r,
                        r.revision,
                        pick::summary(&listing.files)
                    );
                }
                Choice::File(f.clone())
            }
            None => pick_files(&r.repo, &listing.files)?,
        };
        let repo_dir = cache::repo_dir(&self.cache_dir, &r.repo);
        let snapshot = repo_dir.join("snapshots").join(&listing.commit);
        let files = match &choice {
            Choice::File(f) => vec![f.clone()],
            Choice::Folder(fs) => fs.clone(),
        };
        for f in &files {
            client.download(r, &listing.commit, f, &repo_dir, progress)?;
        }
        cache::write_ref(&repo_dir, &r.revision, &listing.commit)?;
        Ok(match choice {
            Choice::File(f) => snapshot.join(f),
            Choice::Folder(_) => snapshot,
        })
    }

    /// The repositories in the cache.
    pub fn list(&self) -> anyhow::Result<Vec<CachedRepo>> {
        cache::list(&self.cache_dir)
    }

    /// Deletes a repository from the cache (every revision, `r.file` or not); returns the bytes freed.
    pub fn remove(&self, r: &ModelRef) -> anyhow::Result<u64> {
        cache::remove(&self.cache_dir, &r.repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = ModelRef::parse("hf:microsoft/bitnet-b1.58-2B-4T-gguf")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.repo.as_str(), r.file.as_deref(), r.revision.as_str()),
            ("microsoft/bitnet-b1.58-2B-4T-gguf", None, "main")
        );
        let r = ModelRef::parse("hf:a/b:sub/m.gguf@v1.0").unwrap().unwrap();
        assert_eq!((r.file.as_deref(), r.revision.as_str()), (Some("sub/m.gguf"), "v1.0"));
        assert_eq!(r.to_string(), "hf:a/b:sub/m.gguf@v1.0");
        assert!(ModelRef::parse("model.gguf").is_none());
        for bad in [
            "hf:",
            "hf:a",
            "hf:a/b/c",
            "hf:../b",
            "hf:a/b:../../etc/passwd",
            "hf:a/b:/abs",
            "hf:a/b@",
            "hf:a/b:x@..",
            "hf:a/b:",
            "hf:a/b@/etc/x",
            "hf:a/b@x//y",
            "hf:a/b@./x",
        ] {
            assert!(ModelRef::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
