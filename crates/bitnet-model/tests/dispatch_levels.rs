//! The fast paths change nothing: logits on every fixture format agree across every SIMD level this CPU
//! supports (forced with `set_simd_level`), and greedy continuations are identical up to the first
//! near-tie (levels differ only in f32 summation order, ~1e-7 relative, which can flip an int8 rounding
//! tie or a top-1 that wins by a hair; after that, teacher forcing checks every decisive step). Its own
//! test binary, because the level is process-wide.

mod common;
use common::*;

use bitnet_kernels::{set_simd_level, supported_simd_levels, SimdLevel};
use bitnet_model::FfnActivation;

/// A top-1/top-2 logit gap below this is not decisive: the same bar as the reference comparisons
/// (fixture_logits), since a flipped int8 rounding tie moves logits by up to about this much.
const NEAR_TIE: f32 = 0.3;

fn top2_gap(l: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in l {
        if x > a {
            b = a;
            a = x;
        } else if x > b {
            b = x;
        }
    }
    a - b
}

#[test]
fn every_dispatch_level_gives_the_same_outputs() {
    let ids = ids(&json("reference/input.json")["ids"]);
    let levels = supported_simd_levels();
    eprintln!("levels: {levels:?}");
    for (model, act) in [
        ("gguf/bitnet-b158-i2_s.gguf", None),
        ("gguf/llamacpp-tq2_0.gguf", Some(FfnActivation::Relu2)),
        ("gguf/llamacpp-tq1_0.gguf", Some(FfnActivation::Relu2)),
        ("gguf/llamacpp-tq2_0-f16emb.gguf", Some(FfnActivation::Relu2)),
        ("hf-bf16", None),
    ] {
        let (m, _) = load_fixture(model, act);
        set_simd_level(SimdLevel::Scalar);
        let base = all_logits(&m, &ids);
        let base_greedy = greedy(&m, &ids[..8], 16);
        let mut teacher = ids[..8].to_vec();
        teacher.extend_from_slice(&base_greedy[..15]);
        let base_forced = all_logits(&m, &teacher);
        let base_gaps: Vec<f32> = (0..16)
            .map(|step| top2_gap(&base_forced[(7 + step) * m.cfg.vocab_size..(8 + step) * m.cfg.vocab_size]))
            .collect();
        for &level in &levels {
            set_simd_level(level);
            let got = all_logits(&m, &ids);
            let vocab = m.cfg.vocab_size;
            let a = agreement(&base, &got, vocab, 0.0);
            eprintln!("{model} {level:?} vs scalar: {a:?}");
            // Integer accumulation is exact; only float summation order (f16/f32 dots, TQ block sums) may
            // differ, by a few ulps, which can flip an int8 rounding tie downstream: bound it like the
            // reference comparisons, and require identical top-1 everywhere.
            assert!(
                a.kl_mean < 1e-4,
                "{model} at {level:?}: mean KL {} vs scalar",
                a.kl_mean
            );
            assert_eq!(a.top1_all, 1.0, "{model} at {level:?}");
            let got = greedy(&m, &ids[..8], base_greedy.len());
            let upto = fragile_from(&base_gaps, NEAR_TIE);
            let same = got.iter().zip(&base_greedy).take_while(|(a, b)| a == b).count();
            eprintln!(
                "{model} {level:?}: greedy identical for {same} of {} steps (required {upto})",
                got.len()
            );
            assert_eq!(got[..upto], base_greedy[..upto], "{model} at {level:?}: greedy differs");
            // Teacher-forced on the scalar continuation: same top-1 at every step that is not a near-tie.
            let forced = all_logits(&m, &teacher);
            for (step, (&w, &gap)) in base_greedy.iter().zip(&base_gaps).enumerate() {
                let p = 7 + step;
                let ours = argmax(&forced[p * vocab..(p + 1) * vocab]) as u32;
                assert!(
                    gap < NEAR_TIE || ours == w,
                    "{model} at {level:?}: step {step}: {ours} != {w} (gap {gap})"
                );
            }
        }
    }
    set_simd_level(SimdLevel::Avx512Vbmi);
}
