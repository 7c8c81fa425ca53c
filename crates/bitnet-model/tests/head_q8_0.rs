//! `--head-type q8_0`: the output head requantized at load changes the logits only by Q8_0's rounding.
//! Measured against the file's own F16 (or Q6_K) head on the fixture prompt: mean KL, top-1 agreement.

mod common;
use common::*;

use bitnet_kernels::FloatFormat;
use bitnet_model::FfnActivation;

#[test]
fn q8_0_head_stays_close_to_the_file_head() {
    let ids = ids(&json("reference/input.json")["ids"]);
    for (file, act) in [
        ("gguf/bitnet-b158-i2_s.gguf", None),
        ("gguf/llamacpp-tq2_0-f16emb.gguf", Some(FfnActivation::Relu2)),
        ("gguf/llamacpp-tq2_0.gguf", Some(FfnActivation::Relu2)),
    ] {
        let (mut m, _) = load_fixture(file, act);
        let before = m.head.format();
        let base = all_logits(&m, &ids);
        m.requantize_head_q8_0().unwrap();
        assert_eq!(m.head.format(), FloatFormat::Q8_0);
        let got = all_logits(&m, &ids);
        let a = agreement(&base, &got, m.cfg.vocab_size, 0.3);
        eprintln!("{file}: {before:?} head -> Q8_0: {a:?}");
        assert!(a.kl_mean < 1e-3, "{file}: mean KL {}", a.kl_mean);
        assert!(a.decisive_mismatches.is_empty(), "{file}: {:?}", a.decisive_mismatches);
        assert!(a.kl_mean > 0.0, "{file}: the head did not change at all");
    }
}
