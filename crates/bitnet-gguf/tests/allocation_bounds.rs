//! Hostile counts and lengths must not make the reader allocate memory out of proportion to
//! the file. A counting global allocator measures the peak heap use of each parse.
//!
//! This file holds a single test so that no other test's allocations run concurrently.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bitnet_gguf::GgufFile;
use common::{metadata_entry, put_u64, Raw};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged,
// so all of GlobalAlloc's contracts are upheld by `System`; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged; `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak extra heap bytes while parsing `bytes` (the input itself excluded).
fn peak_of_parse(bytes: Vec<u8>) -> usize {
    let source: bitnet_gguf::SharedBytes = std::sync::Arc::new(bytes);
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let result = GgufFile::from_shared(source, "alloc.gguf");
    let peak = PEAK.load(Ordering::Relaxed) - base;
    drop(result);
    peak
}

#[test]
fn heap_use_stays_proportional_to_the_file() {
    let original = common::fixture_bytes("bitnet-b158-i2_s.gguf");
    let len = original.len();
    let normal = peak_of_parse(original.clone());
    assert!(normal < 1 << 20, "a normal parse took {normal} bytes");

    // Counts that fail the up-front check must cost (almost) nothing; counts that pass it
    // can cost at most a bounded multiple of the bytes that back them.
    let bound = 64 * len + (4 << 20);
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
    ] {
        let at = metadata_entry(&original, key) + 4 + 4;
        let remaining = (len - at - 8) as u64;
        for count in [u64::MAX, 1 << 40, remaining, remaining / 4, remaining / 8] {
            let mut b = original.clone();
            put_u64(&mut b, at, count);
            cases.push((format!("{key} count {count}"), b));
        }
    }
    for (at, count) in [
        (8, u64::MAX),
        (8, (len as u64 - 24) / 32),
        (16, u64::MAX),
        (16, (len as u64 - 24) / 13),
    ] {
        let mut b = original.clone();
        put_u64(&mut b, at, count);
        cases.push((format!("header count at {at} = {count}"), b));
    }
    // A megabyte of zeros read as 87381 empty arrays of arrays... of u8.
    let mut raw = Raw::header(0, 1);
    raw.str("nest").u32(9).u32(9).u64((1 << 20) / 12).zeros(1 << 20);
    cases.push(("nested arrays".into(), raw.build()));
    // A megabyte of one-byte bools.
    let mut raw = Raw::header(0, 1);
    raw.str("bools").u32(9).u32(7).u64(1 << 20).zeros(1 << 20);
    cases.push(("bool array".into(), raw.build()));

    for (what, bytes) in cases {
        let n = bytes.len();
        let peak = peak_of_parse(bytes);
        assert!(
            peak <= bound.max(64 * n + (4 << 20)),
            "{what}: parse peaked at {peak} bytes for a {n}-byte file"
        );
    }
}
