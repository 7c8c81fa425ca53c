//! The fast paths change nothing: logits on every fixture format agree across every SIMD level this CPU
//! supports (forced with `set_simd_level`), and greedy continuations are identical. Its own test binary,
//! because the level is process-wide.

mod common;
use common::*;

use bitnet_kernels::{set_simd_level, supported_simd_levels, SimdLevel};
use bitnet_model::FfnActivation;

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
            assert_eq!(
                greedy(&m, &ids[..8], 16),
                base_greedy,
                "{model} at {level:?}: greedy differs"
            );
        }
    }
    set_simd_level(SimdLevel::Avx512Vnni);
}
