//! quantize_row_i8 at every SIMD level equals the scalar reference bit for bit (including the
//! round-half-to-even ties), and the scalar reference equals the PyTorch formula.

use bitnet_kernels::{quantize_row_i8_with, sum_i8_with, supported_simd_levels, SimdLevel};
use proptest::prelude::*;

/// The reference formula, written independently of the crate.
fn reference(x: &[f32]) -> (f32, Vec<i8>) {
    let amax = x.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let s = 127.0f32 / amax.max(1e-5);
    (
        s,
        x.iter()
            .map(|&v| (v * s).round_ties_even().clamp(-128.0, 127.0) as i8)
            .collect(),
    )
}

fn check(x: &[f32]) -> Result<(), TestCaseError> {
    let (s_ref, q_ref) = reference(x);
    for level in supported_simd_levels() {
        let mut q = vec![0x55i8; x.len()];
        let s = quantize_row_i8_with(level, x, &mut q);
        prop_assert_eq!(s.to_bits(), s_ref.to_bits(), "{:?}", level);
        prop_assert_eq!(&q, &q_ref, "{:?}", level);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_rows(x in proptest::collection::vec(-1000.0f32..1000.0, 0..300)) {
        check(&x)?;
    }

    #[test]
    fn tiny_and_mixed_magnitudes(x in proptest::collection::vec(prop_oneof![-1e-6f32..1e-6, -3.0f32..3.0, Just(0.0)], 0..100)) {
        check(&x)?;
    }

    /// sum_i8 at every level equals a plain i32 sum, for odd lengths and the extremes -128 / 127.
    #[test]
    fn sum_i8_levels(q in proptest::collection::vec(prop_oneof![any::<i8>(), Just(-128i8), Just(127i8)], 0..400)) {
        let want: i32 = q.iter().map(|&v| i32::from(v)).sum();
        for level in supported_simd_levels() {
            prop_assert_eq!(sum_i8_with(level, &q), want, "{:?}", level);
        }
    }

    /// Rows whose max is 127 (sx = 1) with half-integer values: every value is a tie.
    #[test]
    fn ties(h in proptest::collection::vec(-254i32..=254, 1..200)) {
        let mut x: Vec<f32> = h.iter().map(|&v| v as f32 * 0.5).collect();
        x.push(127.0);
        check(&x)?;
        let (s, q) = reference(&x);
        prop_assert_eq!(s, 1.0);
        for (&v, &o) in x.iter().zip(&q) {
            prop_assert_eq!(f32::from(o), v.round_ties_even());
        }
    }
}

#[test]
fn every_length_up_to_80() {
    for n in 0..80 {
        let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7).collect();
        check(&x).unwrap();
    }
}

#[test]
fn scalar_is_a_level() {
    let mut q = [0i8; 3];
    assert_eq!(
        quantize_row_i8_with(SimdLevel::Scalar, &[1.0, -0.5, 0.25], &mut q),
        127.0
    );
    assert_eq!(q, [127, -64, 32]); // -63.5 -> -64 (even), 31.75 -> 32
}
