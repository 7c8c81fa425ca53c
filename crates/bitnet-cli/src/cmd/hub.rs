//! `bitnet pull`, `bitnet list`, `bitnet rm`: the models in the Hugging Face cache (shared with
//! Hugging Face's own tools; see the bitnet-hub crate for the layout and the environment variables).

use anyhow::{anyhow, Result};
use bitnet_hub::{Hub, ModelRef};

fn parse(s: &str) -> Result<ModelRef> {
    ModelRef::parse(s).unwrap_or_else(|| {
        Err(anyhow!(
            "'{s}' is not a hub reference (expected hf:ORG/REPO[:FILE][@REVISION])"
        ))
    })
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// hf:ORG/REPO, with :FILE and @REVISION optional
    pub reference: String,
}

pub fn pull(a: PullArgs) -> Result<()> {
    // A clear error for anything that is not a hub reference (a local path needs no pull).
    parse(&a.reference)?;
    let path = crate::common::model_path(std::path::Path::new(&a.reference))?;
    println!("{}", path.display());
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1_048_575 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.2} GiB", b / 1_073_741_824.0),
    }
}

pub fn list(_a: ListArgs) -> Result<()> {
    let hub = Hub::from_env();
    let repos = hub.list()?;
    if repos.is_empty() {
        println!("no models in {}", hub.cache_dir.display());
        return Ok(());
    }
    println!("{}", hub.cache_dir.display());
    for r in repos {
        println!("hf:{}  {}", r.repo, human(r.bytes));
        for (rev, commit) in &r.refs {
            println!("  {rev} -> {commit}");
        }
        for (commit, files) in &r.snapshots {
            println!("  snapshot {commit}");
            for (f, size) in files {
                println!("    {f}  {}", human(*size));
            }
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// hf:ORG/REPO (every revision and file of it is removed)
    pub reference: String,
}

pub fn rm(a: RmArgs) -> Result<()> {
    let r = parse(&a.reference)?;
    let freed = Hub::from_env().remove(&r)?;
    println!("removed hf:{} ({} freed)", r.repo, human(freed));
    Ok(())
}
