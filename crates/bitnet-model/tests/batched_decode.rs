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
