//! The loader's repacking changes nothing it should not: on a CPU that repacks to Triple5 (AVX-512
//! VBMI + VNNI), the I2_S fixture gives bit-identical logits with and without repacking, and the TQ
//! fixtures (whose blocks share a scale) agree with their per-block kernels to f32 rounding. Its own
//! test binary, because the SIMD level (which decides the repacking at load) is process-wide.

mod common;
use common::*;

use bitnet_kernels::{set_simd_level, SimdLevel, TernaryFormat, TernaryMatrix};
use bitnet_model::{BitNetModel, FfnActivation};

fn formats(m: &BitNetModel) -> Vec<TernaryFormat> {
    m.layers
        .iter()
        .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
        .map(|lin| lin.w.format())
        .collect()
}

#[test]
fn repacked_models_give_the_same_logits() {
    if !TernaryMatrix::prefers_triple5() {
        eprintln!("this CPU keeps the files' layouts (no AVX-512 VBMI + VNNI): nothing to compare");
        return;
    }
    let ids = ids(&json("reference/input.json")["ids"]);
    for (model, act, file_layout) in [
        ("gguf/bitnet-b158-i2_s.gguf", None, TernaryFormat::I2S),
        (
            "gguf/llamacpp-tq2_0.gguf",
            Some(FfnActivation::Relu2),
            TernaryFormat::TQ2_0,
        ),
        // Below VBMI, TQ1_0 (scalar kernel only) becomes TQ2_0.
        (
            "gguf/llamacpp-tq1_0.gguf",
            Some(FfnActivation::Relu2),
            TernaryFormat::TQ2_0,
        ),
    ] {
        set_simd_level(SimdLevel::Avx512Vbmi);
        let (packed, _) = load_fixture(model, act);
        assert!(formats(&packed).iter().all(|&f| f == TernaryFormat::Triple5), "{model}");
        let a = all_logits(&packed, &ids);
        // AVX-512 VNNI without VBMI keeps the file's layout (its float kernels are the same).
        set_simd_level(SimdLevel::Avx512Vnni);
        let (kept, _) = load_fixture(model, act);
        assert!(formats(&kept).iter().all(|&f| f == file_layout), "{model}");
        let b = all_logits(&kept, &ids);
        if file_layout == TernaryFormat::I2S {
            // Exact integer dots either way, one scale per tensor: the same bits.
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{model}");
        } else {
            // Block sums scaled once per tensor instead of once per block: f32 rounding apart.
            let g = agreement(&b, &a, packed.cfg.vocab_size, 0.0);
            eprintln!("{model}: Triple5 vs {file_layout:?}: {g:?}");
            assert!(g.kl_mean < 1e-4 && g.top1_all == 1.0, "{model}: {g:?}");
        }
    }
}
