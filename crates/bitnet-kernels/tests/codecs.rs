//! decode(encode(x)) == x for every ternary codec, and the byte layouts the formats specify.

use bitnet_kernels::{hf_packed, i2s, tq1_0, tq2_0};
use proptest::prelude::*;

fn codes(n: usize) -> impl Strategy<Value = Vec<i8>> {
    proptest::collection::vec(-1i8..=1, n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn i2s_round_trip(c in (1usize..6).prop_flat_map(|b| codes(128 * b)), scale in -10.0f32..10.0) {
        let enc = i2s::encode(&c, scale).unwrap();
        prop_assert_eq!(enc.len(), i2s::tensor_bytes(c.len()));
        prop_assert_eq!(enc.len(), c.len() / 4 + 32);
        let mut back = vec![0i8; c.len()];
        prop_assert_eq!(i2s::decode(&enc, &mut back).unwrap().to_bits(), scale.to_bits());
        prop_assert_eq!(back, c);
    }

    #[test]
    fn tq2_0_round_trip(c in (1usize..4).prop_flat_map(|b| codes(256 * b))) {
        let nb = c.len() / 256;
        // f16-representable scales survive exactly.
        let scales: Vec<f32> = (0..nb).map(|b| 0.125 * (b as f32 + 1.0)).collect();
        let enc = tq2_0::encode(&c, &scales).unwrap();
        prop_assert_eq!(enc.len(), tq2_0::tensor_bytes(c.len()));
        let mut back = vec![0i8; c.len()];
        let mut s = vec![0f32; nb];
        tq2_0::decode(&enc, &mut back, &mut s).unwrap();
        prop_assert_eq!(back, c);
        prop_assert_eq!(s, scales);
    }

    #[test]
    fn tq1_0_round_trip(c in (1usize..4).prop_flat_map(|b| codes(256 * b))) {
        let nb = c.len() / 256;
        let scales: Vec<f32> = (0..nb).map(|b| -0.5 * (b as f32 + 1.0)).collect();
        let enc = tq1_0::encode(&c, &scales).unwrap();
        prop_assert_eq!(enc.len(), tq1_0::tensor_bytes(c.len()));
        let mut back = vec![0i8; c.len()];
        let mut s = vec![0f32; nb];
        tq1_0::decode(&enc, &mut back, &mut s).unwrap();
        prop_assert_eq!(back, c);
        prop_assert_eq!(s, scales);
    }

    #[test]
    fn hf_packed_round_trip((rows, cols, c) in (1usize..5, 1usize..40).prop_flat_map(|(r4, cols)| (Just(4 * r4), Just(cols), codes(4 * r4 * cols)))) {
        let packed = hf_packed::pack(&c, rows, cols).unwrap();
        prop_assert_eq!(packed.len(), rows / 4 * cols);
        let mut back = vec![0i8; c.len()];
        hf_packed::unpack(&packed, rows, cols, &mut back).unwrap();
        prop_assert_eq!(back, c);
    }
}

/// TQ1_0 element order, spot-checked against ggml's loops: value 32i + m for qs[m] (m < 32),
/// 160 + 16i + m for qs[32 + m], 240 + 4i + j for qh[j]; trit 0 is the most significant.
#[test]
fn tq1_0_element_order() {
    let probe = |j: usize, byte: usize, trit: u32| {
        let mut v = vec![0i8; 256];
        v[j] = 1; // digit 2 instead of 1: adds 3^(4 - trit) to the byte's base-3 value
        let enc = tq1_0::encode(&v, &[1.0]).unwrap();
        let base = tq1_0::encode(&[0i8; 256], &[1.0]).unwrap();
        let changed: Vec<usize> = (0..54).filter(|&k| enc[k] != base[k]).collect();
        assert_eq!(changed, vec![byte], "value {j}");
        let val = if byte < 48 {
            121 + 3u16.pow(4 - trit)
        } else {
            (40 + 3u16.pow(3 - trit)) * 3
        };
        assert_eq!(u16::from(enc[byte]), (val * 256).div_ceil(243), "value {j}");
    };
    probe(0, 0, 0);
    probe(31, 31, 0);
    probe(32, 0, 1);
    probe(159, 31, 4);
    probe(160, 32, 0);
    probe(175, 47, 0);
    probe(176, 32, 1);
    probe(239, 47, 4);
    probe(240, 48, 0);
    probe(243, 51, 0);
    probe(244, 48, 1);
    probe(255, 51, 3);
}
