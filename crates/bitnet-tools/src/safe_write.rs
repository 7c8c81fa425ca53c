//! Writing an output file so that its path never holds a half-written file: the bytes go to a hidden
//! temporary file in the same folder, which is flushed to disk (fsync) and then renamed over the target.
//! On error the temporary file is removed; on Ctrl-C too, once [`install_interrupt_cleanup`] ran.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// Temporary files being written right now (removed by the Ctrl-C handler).
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Installs a Ctrl-C / SIGTERM handler that deletes any temporary file still being written, then exits
/// with status 130. Call once from a binary; a second call is a no-op.
pub fn install_interrupt_cleanup() {
    let _ = ctrlc::set_handler(|| {
        remove_pending();
        eprintln!("\ninterrupted: no output was written");
        std::process::exit(130);
    });
}

fn remove_pending() {
    if let Ok(mut p) = PENDING.lock() {
        for path in p.drain(..) {
            let _ = fs::remove_file(path);
        }
    }
}

fn forget(tmp: &Path) {
    if let Ok(mut p) = PENDING.lock() {
        p.retain(|x| x != tmp);
    }
}

/// Refuses an existing `out` unless `force`, and an `out` that is the input itself.
pub fn check_target(out: &Path, input: &Path, force: bool) -> Result<()> {
    if let (Ok(a), Ok(b)) = (fs::canonicalize(out), fs::canonicalize(input)) {
        if a == b {
            bail!("output {} is the input file; choose another name", out.display());
        }
    }
    if out.is_dir() {
        bail!(
            "output {} is a folder; give a file name such as model.gguf",
            out.display()
        );
    }
    if out.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", out.display());
    }
    Ok(())
}

/// The hidden temporary name used while writing `out`.
pub fn temp_path(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("'{}' does not name a file", out.display()))?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".partial-{}", std::process::id()));
    Ok(dir.join(tmp))
}

/// Writes `out` atomically: `fill` writes the content into a buffered temporary file, which is then
/// fsynced and renamed to `out` (and the folder fsynced). Any error (from `fill` or the file system)
/// removes the temporary file and leaves `out` as it was.
pub fn write_atomically(out: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let tmp = temp_path(out)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating temporary file {}", tmp.display()))?;
    if let Ok(mut p) = PENDING.lock() {
        p.push(tmp.clone());
    }
    let result = (|| -> Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        let file: File = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("flushing {} to disk", tmp.display()))?;
        drop(file);
        fs::rename(&tmp, out).with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Persist the rename itself; not every platform can open a folder, which is fine.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    forget(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_leaves_no_file_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.gguf");
        let r = write_atomically(&out, |w| {
            w.write_all(b"partial")?;
            bail!("boom")
        });
        assert!(r.is_err());
        assert!(!out.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporary file left behind"
        );
        fs::write(&out, b"old").unwrap();
        let r = write_atomically(&out, |w| {
            w.write_all(b"new but failing")?;
            bail!("boom")
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&out).unwrap(), b"old");
        write_atomically(&out, |w| Ok(w.write_all(b"new")?)).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn target_checks() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.gguf");
        let input = dir.path().join("in.gguf");
        fs::write(&input, b"x").unwrap();
        check_target(&out, &input, false).unwrap();
        fs::write(&out, b"x").unwrap();
        let e = check_target(&out, &input, false).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        check_target(&out, &input, true).unwrap();
        let e = check_target(&input, &input, true).unwrap_err().to_string();
        assert!(e.contains("is the input"), "{e}");
    }
}
