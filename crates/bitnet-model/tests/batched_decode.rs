//! Batched decoding (several sequences advanced together, as the server's scheduler does) gives each
//! sequence the logits it would get on its own.

mod common;
use common::*;

use bitnet_model::{InferenceState, LogitsWanted, Workspace};

#[test]
fn forward_batch_equals_separate_sequences() {
    for file in ["gguf/bitnet-b158-i2_s.gguf", "gguf/llamacpp-tq2_0.gguf"] {
        let (m, _) = load_fixture(file, None);
        let ids = ids(&json("reference/input.json")["ids"]);
        let vocab = m.cfg.vocab_size;
        // Three sequences with different prompt lengths, hence different positions.
        let prompts: Vec<&[u32]> = vec![&ids[..5], &ids[3..17], &ids[10..12]];
        let mut solo: Vec<InferenceState> = prompts.iter().map(|_| InferenceState::new(&m, 64)).collect();
        let mut batch: Vec<InferenceState> = prompts.iter().map(|_| InferenceState::new(&m, 64)).collect();
        let mut next: Vec<u32> = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let l = m.forward(p, &mut solo[i], LogitsWanted::Last).unwrap().to_vec();
            m.forward(p, &mut batch[i], LogitsWanted::None).unwrap();
            next.push(argmax(&l) as u32);
        }
        let mut ws = Workspace::new();
        for step in 0..6 {
            let want: Vec<Vec<f32>> = (0..prompts.len())
                .map(|i| {
                    m.forward(&[next[i]], &mut solo[i], LogitsWanted::Last)
                        .unwrap()
                        .to_vec()
                })
                .collect();
            let mut refs: Vec<&mut InferenceState> = batch.iter_mut().collect();
            let got = m.forward_batch(&next, &mut refs, &mut ws).unwrap().to_vec();
            for i in 0..prompts.len() {
                let g = &got[i * vocab..(i + 1) * vocab];
                let d = g.iter().zip(&want[i]).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(d < 1e-4, "{file} step {step} sequence {i}: max diff {d}");
                assert_eq!(batch[i].pos, solo[i].pos);
            }
            next = (0..prompts.len()).map(|i| argmax(&want[i]) as u32).collect();
        }
        // Mismatched inputs are errors, not panics.
        let mut refs: Vec<&mut InferenceState> = batch.iter_mut().collect();
        assert!(m.forward_batch(&[1, 2], &mut refs, &mut ws).is_err());
    }
}

/// Mixed steps (continuous batching with chunked prefill): a prompt split into chunks that share passes
/// with other sequences' prompts and decoding steps gives every sequence exactly its solo logits.
#[test]
fn forward_spans_mixes_prefill_chunks_and_decoding() {
    let (m, _) = load_fixture("gguf/bitnet-b158-i2_s.gguf", None);
    let ids = ids(&json("reference/input.json")["ids"]);
    let vocab = m.cfg.vocab_size;
    let (pa, pb) = (&ids[..5], &ids[2..16]);
    // Solo: A's prompt then two greedy steps; B's whole prompt at once then one step.
    let mut sa = InferenceState::new(&m, 64);
    let mut sb = InferenceState::new(&m, 64);
    let la0 = m.forward(pa, &mut sa, LogitsWanted::Last).unwrap().to_vec();
    let a1 = argmax(&la0) as u32;
    let la1 = m.forward(&[a1], &mut sa, LogitsWanted::Last).unwrap().to_vec();
    let a2 = argmax(&la1) as u32;
    let la2 = m.forward(&[a2], &mut sa, LogitsWanted::Last).unwrap().to_vec();
    let lb0 = m.forward(pb, &mut sb, LogitsWanted::Last).unwrap().to_vec();
    let b1 = argmax(&lb0) as u32;
    let lb1 = m.forward(&[b1], &mut sb, LogitsWanted::Last).unwrap().to_vec();

    let mut ba = InferenceState::new(&m, 64);
    let mut bb = InferenceState::new(&m, 64);
    let mut ws = Workspace::new();
    let same = |got: &[f32], want: &[f32], what: &str| {
        let d = got.iter().zip(want).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(d == 0.0, "{what}: max diff {d}");
    };
    // Step 1: A's whole prompt with the first 8 tokens of B's.
    let toks: Vec<u32> = pa.iter().chain(&pb[..8]).copied().collect();
    let got = m
        .forward_spans(&toks, &mut [&mut ba, &mut bb], &[5, 8], &mut ws)
        .unwrap()
        .to_vec();
    same(&got[..vocab], &la0, "A prompt");
    // Step 2: A decodes one token while B's prompt finishes.
    let toks: Vec<u32> = std::iter::once(a1).chain(pb[8..].iter().copied()).collect();
    let got = m
        .forward_spans(&toks, &mut [&mut ba, &mut bb], &[1, 6], &mut ws)
        .unwrap()
        .to_vec();
    same(&got[..vocab], &la1, "A step 1");
    same(&got[vocab..], &lb0, "B prompt in two chunks");
    // Step 3: both decode (B listed first this time).
    let got = m
        .forward_spans(&[b1, a2], &mut [&mut bb, &mut ba], &[1, 1], &mut ws)
        .unwrap()
        .to_vec();
    same(&got[..vocab], &lb1, "B step 1");
    same(&got[vocab..], &la2, "A step 2");
    assert_eq!((ba.pos, bb.pos), (sa.pos, sb.pos));
    // Bad span lists are errors, not panics.
    assert!(m.forward_spans(&[1, 2], &mut [&mut ba], &[1], &mut ws).is_err());
    assert!(m
        .forward_spans(&[1], &mut [&mut ba, &mut bb], &[1, 0], &mut ws)
        .is_err());
    assert!(m.forward_spans(&[1], &mut [&mut ba], &[1, 1], &mut ws).is_err());
    let mut full = InferenceState::new(&m, 4);
    assert!(m.forward_spans(&[1; 5], &mut [&mut full], &[5], &mut ws).is_err());
}
