//! Steady-state decoding allocates nothing: after a short warm-up, single-sequence decode steps and
//! batched decode steps run with zero heap allocations (counted by a global allocator, which is why
//! this test has its own binary). The worker pool runs with 2 threads, so dispatch is covered too.

mod common;
use common::*;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bitnet_model::{InferenceState, LogitsWanted, Workspace};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts them.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.load(Ordering::Relaxed)
}

#[test]
fn steady_state_decode_does_not_allocate() {
    bitnet_kernels::pool::set_num_threads(2);
    // The counter works at all (so a zero below means something).
    let a0 = allocs();
    let v = std::hint::black_box(vec![1u8; 100]);
    assert!(allocs() > a0);
    drop(v);

    let ids = ids(&json("reference/input.json")["ids"]);
    for file in ["gguf/bitnet-b158-i2_s.gguf", "gguf/llamacpp-tq2_0.gguf"] {
        let (m, _) = load_fixture(file, None);
        let ctx = 256;
        let mut st = InferenceState::new(&m, ctx);
        let mut next = argmax(m.forward(&ids[..8], &mut st, LogitsWanted::Last).unwrap()) as u32;
        for _ in 0..2 {
            next = argmax(m.forward(&[next], &mut st, LogitsWanted::Last).unwrap()) as u32;
        }
        let before = allocs();
        for _ in 0..64 {
            next = argmax(m.forward(&[next], &mut st, LogitsWanted::Last).unwrap()) as u32;
        }
        assert_eq!(allocs() - before, 0, "{file}: single-sequence decode allocated");

        // Batched decoding with sequences at different positions.
        let mut states: Vec<InferenceState> = (0..4).map(|_| InferenceState::new(&m, ctx)).collect();
        for (i, s) in states.iter_mut().enumerate() {
            m.forward(&ids[..3 + 2 * i], s, LogitsWanted::None).unwrap();
        }
        let mut ws = Workspace::new();
        let vocab = m.cfg.vocab_size;
        let mut toks = vec![1u32; states.len()];
        let mut refs: Vec<&mut InferenceState> = states.iter_mut().collect();
        let mut step = |toks: &mut [u32], refs: &mut [&mut InferenceState]| {
            let l = m.forward_batch(toks, refs, &mut ws).unwrap();
            for (i, t) in toks.iter_mut().enumerate() {
                *t = argmax(&l[i * vocab..(i + 1) * vocab]) as u32;
            }
        };
        for _ in 0..2 {
            step(&mut toks, &mut refs);
        }
        let before = allocs();
        for _ in 0..32 {
            step(&mut toks, &mut refs);
        }
        assert_eq!(allocs() - before, 0, "{file}: batched decode allocated");
    }
}
