//! The entry points the fuzz targets drive: each takes the fuzzer's bytes, feeds them to the same
//! functions `bitnet` calls on a downloaded model or a client's request, and must return without
//! panicking, aborting or hanging whatever the bytes are (errors are the expected outcome).
//!
//! The libFuzzer targets in `fuzz/fuzz_targets/` are one line each around these functions (they need
//! nightly Rust: `cargo +nightly fuzz run <target>`), and `tests/replay.rs` runs every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through the same functions in a plain
//! `cargo test`, so CI replays the corpora and every crash found stays fixed without nightly.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub mod chat_template;
pub mod gguf;
pub mod hf_folder;
pub mod request;
pub mod tokenizer;

/// One fuzz target: its name (the folder of its corpus) and its entry point.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `fuzz/README.md` lists them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "gguf",
        run: gguf::run,
    },
    Target {
        name: "gguf_tokenizer",
        run: gguf::run_tokenizer,
    },
    Target {
        name: "hf_folder",
        run: hf_folder::run,
    },
    Target {
        name: "tokenizer_json",
        run: tokenizer::run,
    },
    Target {
        name: "chat_template",
        run: chat_template::run,
    },
    Target {
        name: "request_json",
        run: request::run,
    },
];

/// A byte-level BPE `tokenizer.json` of 320 entries (256 bytes, merges, `<|begin_of_text|>`,
/// `<|end_of_text|>`, `<|eot_id|>`), trained by `examples/make_seeds.rs`: the fixed tokenizer of the
/// targets whose input is something else (the HF folder, requests).
pub const MICRO_TOKENIZER_JSON: &[u8] = include_bytes!("../data/tokenizer.json");

/// A `tokenizer_config.json` for [`MICRO_TOKENIZER_JSON`].
pub const MICRO_TOKENIZER_CONFIG: &str = r#"{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}"#;

/// A folder of its own for one call (the replay test runs targets on several threads), removed when
/// dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> std::io::Result<ScratchDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("bitnet-fuzz-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(ScratchDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` inside the folder.
    pub fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::write(self.0.join(name), bytes)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Splits `data` into a first part whose length is the leading little-endian u16 and the rest (for
/// targets whose input is two files).
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (data, &[]);
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    let n = n.min(rest.len());
    rest.split_at(n)
}

/// The inverse of [`split2`], for writing seeds.
pub fn join2(first: &[u8], rest: &[u8]) -> Vec<u8> {
    let n = u16::try_from(first.len()).unwrap_or(u16::MAX);
    let mut v = n.to_le_bytes().to_vec();
    v.extend_from_slice(&first[..n as usize]);
    v.extend_from_slice(rest);
    v
}
