//! The global level: detection, capping with set_simd_level, and that the public entry points
//! follow it. Kept in its own test binary because it changes process-wide state.

use bitnet_kernels::{
    detected_simd_level, quantize_row_i8, set_simd_level, simd_level, supported_simd_levels, SimdLevel, TernaryMatrix,
};

#[test]
fn set_simd_level_caps_and_restores() {
    let detected = detected_simd_level();
    let env_cap = std::env::var("BITNET_SIMD").ok().and_then(|v| SimdLevel::parse(&v));
    let expected = |l: SimdLevel| {
        let mut e = l.min(detected);
        if let Some(c) = env_cap {
            e = e.min(c);
        }
        e
    };
    assert_eq!(simd_level(), expected(detected));
    let codes: Vec<i8> = (0..8 * 300).map(|i| (i % 3) as i8 - 1).collect();
    let w = TernaryMatrix::from_codes(8, 300, &codes, 1.0).unwrap();
    let x: Vec<f32> = (0..300).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut q = vec![0i8; 300];
    let mut reference = None;
    for level in supported_simd_levels() {
        set_simd_level(level);
        assert_eq!(simd_level(), expected(level));
        let xs = quantize_row_i8(&x, &mut q);
        let mut y = vec![0f32; 8];
        w.gemv(&q, xs, 0, &mut y);
        let got = (xs, q.clone(), y);
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(r, &got, "{level:?}"),
        }
    }
    set_simd_level(SimdLevel::Scalar);
    assert_eq!(simd_level(), SimdLevel::Scalar);
    // Asking for more than the CPU has is capped, never an illegal instruction.
    set_simd_level(SimdLevel::Avx512Vbmi);
    assert_eq!(simd_level(), expected(SimdLevel::Avx512Vbmi));
}
