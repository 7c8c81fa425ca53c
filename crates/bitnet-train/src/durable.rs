//! Crash-safe checkpoints: a checkpoint folder is replaced as a whole, never file by file, so that
//! `kill -9`, Ctrl-C or a full disk at any moment leaves a complete, resumable checkpoint.
//!
//! A save writes every file into a staging folder beside the checkpoint (`.NAME.new`), carrying over the
//! files it does not produce (tokenizer, plots), fsyncs them, and writes `checkpoint.json` last: the
//! manifest with each file's size and sha256. It then swaps folders with two renames (`NAME` ->
//! `.NAME.old`, `.NAME.new` -> `NAME`) and removes the old one. Whatever step a crash interrupts,
//! [`recover`] finds a complete checkpoint: `NAME` itself, or after a crash between the two renames the
//! staged one (complete: its manifest is written) or the previous one. `--resume` verifies the
//! manifest, so a checkpoint whose files do not match it is refused instead of silently mixing states.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name.
pub const MANIFEST: &str = "checkpoint.json";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ManifestFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The training step the checkpoint holds.
    pub step: u64,
    pub files: Vec<ManifestFile>,
}

/// Where a save can be interrupted (for the crash tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Some files staged, no manifest yet.
    Staging,
    /// The staged checkpoint is complete (manifest written), nothing renamed.
    Staged,
    /// The old checkpoint moved aside, the new one not yet in place.
    BetweenRenames,
    /// The new checkpoint in place, the old one not yet removed.
    Swapped,
}

fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .with_context(|| format!("'{}' does not name a folder", dir.display()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut s = std::ffi::OsString::from(".");
    s.push(name);
    s.push(suffix);
    Ok(parent.join(s))
}

/// The staging folder of checkpoint `dir`.
pub fn staging_dir(dir: &Path) -> Result<PathBuf> {
    sibling(dir, ".new")
}

fn old_dir(dir: &Path) -> Result<PathBuf> {
    sibling(dir, ".old")
}

fn sync_dir(d: &Path) {
    // Persists renames and new entries; not every platform can open a folder, which is fine.
    if let Ok(f) = File::open(d) {
        let _ = f.sync_all();
    }
}

fn sha256_of(p: &Path) -> Result<(u64, String)> {
    let mut f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).with_context(|| format!("reading {}", p.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, format!("{:x}", h.finalize())))
}

/// Whether `d` holds a checkpoint whose files match its manifest.
pub fn is_complete(d: &Path) -> bool {
    verify(d).is_ok_and(|m| m.is_some())
}

/// Checks `d`'s files against its manifest. `Ok(None)` for a folder without one (written before
/// manifests existed); an error names the first file that does not match.
pub fn verify(d: &Path) -> Result<Option<Manifest>> {
    let mp = d.join(MANIFEST);
    let text = match fs::read_to_string(&mp) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", mp.display())),
    };
    let m: Manifest = serde_json::from_str(&text).with_context(|| format!("parsing {}", mp.display()))?;
    for f in &m.files {
        if f.name.contains('/') || f.name.contains('\\') || f.name.starts_with('.') {
            bail!("{}: file name '{}' must be a plain file name", mp.display(), f.name);
        }
        let p = d.join(&f.name);
        let (bytes, sha) = sha256_of(&p).with_context(|| format!("checkpoint {}: file '{}'", d.display(), f.name))?;
        if bytes != f.bytes || sha != f.sha256 {
            bail!(
                "checkpoint {}: '{}' does not match {MANIFEST} ({bytes} bytes, expected {}; the checkpoint is \
                 damaged or was written by hand)",
                d.display(),
                f.name,
                f.bytes
            );
        }
    }
    Ok(Some(m))
}

/// Finishes or undoes a save that a crash interrupted, leaving `dir` as a complete checkpoint when
/// there is one. Returns what it did, if anything.
pub fn recover(dir: &Path) -> Result<Option<String>> {
    let (new, old) = (staging_dir(dir)?, old_dir(dir)?);
    if dir.exists() {
        // The swap finished (old left behind) or never started (staging left behind).
        let mut did = Vec::new();
        if old.exists() {
            fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
            did.push(format!("removed the previous checkpoint left at {}", old.display()));
        }
        if new.exists() {
            fs::remove_dir_all(&new).with_context(|| format!("removing {}", new.display()))?;
            did.push(format!("removed an unfinished save at {}", new.display()));
        }
        return Ok((!did.is_empty()).then(|| did.join("; ")));
    }
    // Between the two renames: the staged checkpoint is complete if its manifest verifies.
    for (cand, what) in [(&new, "the checkpoint saved last"), (&old, "the previous checkpoint")] {
        if cand.exists() && is_complete(cand) {
            fs::rename(cand, dir).with_context(|| format!("renaming {} to {}", cand.display(), dir.display()))?;
            if let Some(p) = dir.parent() {
                sync_dir(p);
            }
            let other = if cand == &new { &old } else { &new };
            if other.exists() {
                let _ = fs::remove_dir_all(other);
            }
            return Ok(Some(format!("restored {what} after an interrupted save")));
        }
    }
    Ok(None)
}

/// Starts a save: recovers an interrupted one, then creates an empty staging folder holding copies of
/// the files of the current checkpoint that the save will not write (`produced`).
pub fn begin(dir: &Path, produced: &[&str]) -> Result<PathBuf> {
    recover(dir)?;
    let staging = staging_dir(dir)?;
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    if dir.is_dir() {
        for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.file_type()?.is_file() || name == MANIFEST || produced.contains(&name.as_str()) {
                continue;
            }
            fs::copy(e.path(), staging.join(&name)).with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(staging)
}

/// Completes a save started with [`begin`]: fsyncs the staged files, writes the manifest, swaps the
/// folders. `crash_at` stops there as a `kill -9` would (tests only).
pub fn commit(dir: &Path, staging: &Path, step: u64, crash_at: Option<Stage>) -> Result<()> {
    let mut files = Vec::new();
    let mut names: Vec<String> = fs::read_dir(staging)
        .with_context(|| format!("listing {}", staging.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != MANIFEST)
        .collect();
    names.sort();
    for (i, n) in names.iter().enumerate() {
        let p = staging.join(n);
        File::open(&p)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("flushing {} to disk", p.display()))?;
        let (bytes, sha256) = sha256_of(&p)?;
        files.push(ManifestFile {
            name: n.clone(),
            bytes,
            sha256,
        });
        if crash_at == Some(Stage::Staging) && i == 0 {
            return Ok(());
        }
    }
    let manifest = Manifest { step, files };
    let mp = staging.join(MANIFEST);
    bitnet_tools::safe_write::write_atomically(&mp, |w| {
        w.write_all(serde_json::to_string_pretty(&manifest)?.as_bytes())?;
        Ok(())
    })?;
    sync_dir(staging);
    if crash_at == Some(Stage::Staged) {
        return Ok(());
    }
    let old = old_dir(dir)?;
    if dir.exists() {
        fs::rename(dir, &old).with_context(|| format!("renaming {} to {}", dir.display(), old.display()))?;
    }
    if crash_at == Some(Stage::BetweenRenames) {
        return Ok(());
    }
    fs::rename(staging, dir).with_context(|| format!("renaming {} to {}", staging.display(), dir.display()))?;
    if let Some(p) = dir.parent() {
        sync_dir(p);
    }
    if crash_at == Some(Stage::Swapped) {
        return Ok(());
    }
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}
