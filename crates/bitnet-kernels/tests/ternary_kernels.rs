//! Every SIMD level of the ternary kernels against the scalar twin (bit-exact for I2_S, whose
//! result is an integer times fixed scales; within f32 rounding for the block-scaled TQ formats),
//! and the scalar kernels against a naive dot of the decoded weights.

use bitnet_kernels::{
    i2s, supported_simd_levels, tq1_0, tq2_0, Bytes, OutRows, QTokens, SimdLevel, TernaryFormat, TernaryMatrix,
};
use proptest::prelude::*;

/// Ternary values with runs of all-zero and all -1 rows mixed in.
fn codes_strategy(len: usize) -> impl Strategy<Value = Vec<i8>> {
    prop_oneof![
        6 => proptest::collection::vec(-1i8..=1, len),
        1 => Just(vec![0i8; len]),
        1 => Just(vec![-1i8; len]),
        1 => Just(vec![1i8; len]),
    ]
}

/// Activations, often at the extremes -128 / 127.
fn acts_strategy(len: usize) -> impl Strategy<Value = Vec<i8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<i8>(), len),
        1 => proptest::collection::vec(prop_oneof![Just(-128i8), Just(127i8)], len),
        1 => Just(vec![-128i8; len]),
        1 => Just(vec![127i8; len]),
    ]
}

/// Exact integer dot of row `r` (decoded through `row_codes`) with `q`.
fn naive_dot(w: &TernaryMatrix, r: usize, q: &[i8]) -> i64 {
    let mut codes = vec![0i8; w.cols()];
    w.row_codes(r, &mut codes);
    codes.iter().zip(q).map(|(&t, &x)| i64::from(t) * i64::from(x)).sum()
}

/// `sum_b d_b * dot_b` in f64 from decoded codes and block scales.
fn naive_block_dot(w: &TernaryMatrix, r: usize, q: &[i8]) -> (f64, f64) {
    let mut codes = vec![0i8; w.cols()];
    w.row_codes(r, &mut codes);
    let bs = w.block_size();
    let mut scales = vec![0f32; w.cols().div_ceil(bs)];
    w.row_scales(r, &mut scales);
    let (mut sum, mut mag) = (0f64, 0f64);
    for (b, d) in scales.iter().enumerate() {
        let lo = b * bs;
        let hi = (lo + bs).min(w.cols());
        let dot: i64 = codes[lo..hi]
            .iter()
            .zip(&q[lo..hi])
            .map(|(&t, &x)| i64::from(t) * i64::from(x))
            .sum();
        let abs: i64 = q[lo..hi].iter().map(|&x| i64::from(x).abs()).sum();
        sum += f64::from(*d) * dot as f64;
        mag += f64::from(d.abs()) * abs as f64;
    }
    (sum, mag)
}

/// Runs gemv and gemm at `level` over rows `row0..row0 + m` for `n` tokens.
fn run(w: &TernaryMatrix, level: SimdLevel, q: &[i8], xs: &[f32], row0: usize, m: usize) -> (Vec<f32>, Vec<f32>) {
    let n = xs.len();
    let cols = w.cols();
    let mut gv = vec![f32::NAN; n * m];
    for t in 0..n {
        w.gemv_with(
            level,
            &q[t * cols..(t + 1) * cols],
            xs[t],
            row0,
            &mut gv[t * m..(t + 1) * m],
        );
    }
    // gemm into a wider output (ldy > m) to check the stride; the padding must stay untouched.
    let ldy = m + 3;
    let mut gm = vec![f32::NAN; n * ldy];
    w.gemm_with(level, QTokens::new(q, xs), OutRows::new(&mut gm, ldy, row0, m));
    for t in 0..n {
        assert!(
            gm[t * ldy + m..(t + 1) * ldy].iter().all(|v| v.is_nan()),
            "gemm wrote outside its rows"
        );
    }
    let gm = (0..n).flat_map(|t| gm[t * ldy..t * ldy + m].to_vec()).collect();
    (gv, gm)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[derive(Debug, Clone)]
struct Case {
    rows: usize,
    cols: usize,
    row0: usize,
    m: usize,
    codes: Vec<i8>,
    q: Vec<i8>,
    xs: Vec<f32>,
    scale: f32,
}

/// Random shapes: any `cols` (multiple of `col_unit` if given), rows offset, token counts not a
/// multiple of the tile.
fn case_strategy(col_unit: usize, max_col_units: usize) -> impl Strategy<Value = Case> {
    (1usize..=11, 1usize..=max_col_units, 1usize..=9).prop_flat_map(move |(rows, cu, n)| {
        let cols = cu * col_unit;
        (0..rows).prop_flat_map(move |row0| {
            (
                Just(rows),
                Just(cols),
                Just(row0),
                1..=(rows - row0),
                codes_strategy(rows * cols),
                acts_strategy(n * cols),
                proptest::collection::vec(0.01f32..300.0, n),
                0.001f32..4.0,
            )
                .prop_map(|(rows, cols, row0, m, codes, q, xs, scale)| Case {
                    rows,
                    cols,
                    row0,
                    m,
                    codes,
                    q,
                    xs,
                    scale,
                })
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Our in-memory layout (any cols): every level bit-identical to scalar, scalar equal to the
    /// exact integer dot.
    #[test]
    fn from_codes_levels_match_scalar(c in case_strategy(1, 700)) {
        let w = TernaryMatrix::from_codes(c.rows, c.cols, &c.codes, c.scale).unwrap();
        let (sv, sm) = run(&w, SimdLevel::Scalar, &c.q, &c.xs, c.row0, c.m);
        for t in 0..c.xs.len() {
            for i in 0..c.m {
                let acc = naive_dot(&w, c.row0 + i, &c.q[t * c.cols..(t + 1) * c.cols]);
                let want = acc as i32 as f32 / c.xs[t] * c.scale;
                prop_assert_eq!(sv[t * c.m + i].to_bits(), want.to_bits());
            }
        }
        prop_assert_eq!(bits(&sv), bits(&sm));
        for level in supported_simd_levels() {
            let (gv, gm) = run(&w, level, &c.q, &c.xs, c.row0, c.m);
            prop_assert_eq!(bits(&gv), bits(&sv), "gemv {:?}", level);
            prop_assert_eq!(bits(&gm), bits(&sv), "gemm {:?}", level);
        }
    }

    /// Raw I2_S bytes, including the invalid code 3 (which must read as 0 everywhere).
    #[test]
    fn i2s_raw_bytes_levels_match_scalar(c in case_strategy(128, 6), seed in any::<u64>()) {
        let n = c.rows * c.cols;
        let mut data: Vec<u8> = (0..n / 4).map(|i| (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i as u64 * 0x2545_F491) >> 29) as u8).collect();
        data.extend_from_slice(&c.scale.to_le_bytes());
        data.extend_from_slice(&[0xAB; 28]);
        let w = TernaryMatrix::from_i2s(c.rows, c.cols, Bytes::from_vec(data)).unwrap();
        prop_assert_eq!(w.scale(), Some(c.scale));
        let dbg = format!("{:?}", w);
        prop_assert!(dbg.contains("clean: false"));
        let (sv, _) = run(&w, SimdLevel::Scalar, &c.q, &c.xs, c.row0, c.m);
        for t in 0..c.xs.len() {
            for i in 0..c.m {
                let acc = naive_dot(&w, c.row0 + i, &c.q[t * c.cols..(t + 1) * c.cols]);
                prop_assert_eq!(sv[t * c.m + i].to_bits(), (acc as i32 as f32 / c.xs[t] * c.scale).to_bits());
            }
        }
        // The same weights repacked to Triple5 (code 3 reads as 0 there too).
        let t5 = w.to_triple5().unwrap();
        prop_assert_eq!(t5.format(), TernaryFormat::Triple5);
        for level in supported_simd_levels() {
            let (gv, gm) = run(&w, level, &c.q, &c.xs, c.row0, c.m);
            prop_assert_eq!(bits(&gv), bits(&sv), "gemv {:?}", level);
            prop_assert_eq!(bits(&gm), bits(&sv), "gemm {:?}", level);
            let (gv, gm) = run(&t5, level, &c.q, &c.xs, c.row0, c.m);
            prop_assert_eq!(bits(&gv), bits(&sv), "triple5 gemv {:?}", level);
            prop_assert_eq!(bits(&gm), bits(&sv), "triple5 gemm {:?}", level);
        }
    }

    /// Triple5 from our in-memory layout (rows of whole 64-value units, blocks of 192 and tails of
    /// one or two units): decoded codes and every level equal the I2_S scalar results.
    #[test]
    fn triple5_levels_match_i2s(c in case_strategy(128, 8)) {
        let w = TernaryMatrix::from_codes(c.rows, c.cols, &c.codes, c.scale).unwrap();
        let t5 = w.to_triple5().unwrap();
        let mut a = vec![0i8; c.cols];
        let mut b = vec![0i8; c.cols];
        for r in 0..c.rows {
            w.row_codes(r, &mut a);
            t5.row_codes(r, &mut b);
            prop_assert_eq!(&a, &b);
        }
        let (sv, _) = run(&w, SimdLevel::Scalar, &c.q, &c.xs, c.row0, c.m);
        for level in supported_simd_levels() {
            let (gv, gm) = run(&t5, level, &c.q, &c.xs, c.row0, c.m);
            prop_assert_eq!(bits(&gv), bits(&sv), "gemv {:?}", level);
            prop_assert_eq!(bits(&gm), bits(&sv), "gemm {:?}", level);
        }
    }

    /// I2_S file bytes from `encode` and `from_codes` give the same results.
    #[test]
    fn i2s_file_equals_in_memory_layout(c in case_strategy(128, 5)) {
        let data = i2s::encode(&c.codes, c.scale).unwrap();
        let a = TernaryMatrix::from_i2s(c.rows, c.cols, Bytes::from_vec(data)).unwrap();
        let dbg = format!("{:?}", a);
        prop_assert!(dbg.contains("clean: true"));
        let b = TernaryMatrix::from_codes(c.rows, c.cols, &c.codes, c.scale).unwrap();
        for level in supported_simd_levels() {
            let (av, am) = run(&a, level, &c.q, &c.xs, c.row0, c.m);
            let (bv, bm) = run(&b, level, &c.q, &c.xs, c.row0, c.m);
            prop_assert_eq!(bits(&av), bits(&bv));
            prop_assert_eq!(bits(&am), bits(&bm));
        }
    }

    /// TQ2_0 from random raw blocks (code 3 included, random f16 scales).
    #[test]
    fn tq2_0_levels_match_scalar(c in case_strategy(256, 4), seed in any::<u64>()) {
        let nb = c.rows * c.cols / 256;
        let mut data = Vec::with_capacity(nb * 66);
        let mut s = seed | 1;
        for b in 0..nb {
            for _ in 0..64 {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                data.push(s as u8);
            }
            let d = half::f16::from_f32(0.01 + (b % 7) as f32 * 0.37 - if b % 3 == 0 { 1.0 } else { 0.0 });
            data.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        let w = TernaryMatrix::from_tq2_0(c.rows, c.cols, Bytes::from_vec(data)).unwrap();
        let dbg = format!("{:?}", w);
        prop_assert!(dbg.contains("clean: false"));
        check_block_scaled(&w, &c)?;
    }

    /// TQ2_0 from encoded codes (no code 3: the kernels skip neutralizing it).
    #[test]
    fn tq2_0_clean_levels_match_scalar(c in case_strategy(256, 4)) {
        let nb = c.rows * c.cols / 256;
        let scales: Vec<f32> = (0..nb).map(|b| 0.03 + b as f32 * 0.21 - if b % 3 == 2 { 0.7 } else { 0.0 }).collect();
        let data = tq2_0::encode(&c.codes, &scales).unwrap();
        let w = TernaryMatrix::from_tq2_0(c.rows, c.cols, Bytes::from_vec(data)).unwrap();
        let dbg = format!("{:?}", w);
        prop_assert!(dbg.contains("clean: true"));
        check_block_scaled(&w, &c)?;
    }

    /// TQ1_0 from encoded codes with random per-block scales.
    #[test]
    fn tq1_0_levels_match_scalar(c in case_strategy(256, 4)) {
        let nb = c.rows * c.cols / 256;
        let scales: Vec<f32> = (0..nb).map(|b| 0.02 + b as f32 * 0.11 - if b % 4 == 1 { 0.5 } else { 0.0 }).collect();
        let data = tq1_0::encode(&c.codes, &scales).unwrap();
        let w = TernaryMatrix::from_tq1_0(c.rows, c.cols, Bytes::from_vec(data)).unwrap();
        check_block_scaled(&w, &c)?;
    }

    /// TQ2_0 and TQ1_0 built from the same codes and scales agree exactly at the scalar level.
    #[test]
    fn tq_formats_agree(c in case_strategy(256, 3)) {
        let nb = c.rows * c.cols / 256;
        let scales: Vec<f32> = (0..nb).map(|b| 0.5 + b as f32 * 0.25).collect();
        let a = TernaryMatrix::from_tq2_0(c.rows, c.cols, Bytes::from_vec(tq2_0::encode(&c.codes, &scales).unwrap())).unwrap();
        let b = TernaryMatrix::from_tq1_0(c.rows, c.cols, Bytes::from_vec(tq1_0::encode(&c.codes, &scales).unwrap())).unwrap();
        let (av, am) = run(&a, SimdLevel::Scalar, &c.q, &c.xs, c.row0, c.m);
        let (bv, bm) = run(&b, SimdLevel::Scalar, &c.q, &c.xs, c.row0, c.m);
        prop_assert_eq!(bits(&av), bits(&bv));
        prop_assert_eq!(bits(&am), bits(&bm));
    }

    /// TQ2_0 / TQ1_0 whose blocks share one scale (some blocks scale 0, whose codes must then read
    /// as zeros) repack to Triple5 with that scale: the codes match, every level is bit-identical to
    /// the I2_S scalar kernel on those codes, and the TQ kernel agrees within its f32 rounding.
    /// Differing scales refuse to repack.
    #[test]
    fn tq_with_shared_scale_repacks_to_triple5(c in case_strategy(256, 4), zero_every in 2usize..6) {
        let nb = c.rows * c.cols / 256;
        let scales: Vec<f32> = (0..nb).map(|b| if b % zero_every == 1 { 0.0 } else { c.scale }).collect();
        let mut kept = c.codes.clone();
        for (b, blk) in kept.chunks_exact_mut(256).enumerate() {
            if scales[b] == 0.0 {
                blk.fill(0);
            }
        }
        let want_w = TernaryMatrix::from_codes(c.rows, c.cols, &kept, c.scale).unwrap();
        let (want, _) = run(&want_w, SimdLevel::Scalar, &c.q, &c.xs, c.row0, c.m);
        let tq2 = TernaryMatrix::from_tq2_0(c.rows, c.cols, Bytes::from_vec(tq2_0::encode(&c.codes, &scales).unwrap())).unwrap();
        let tq1 = TernaryMatrix::from_tq1_0(c.rows, c.cols, Bytes::from_vec(tq1_0::encode(&c.codes, &scales).unwrap())).unwrap();
        for tq in [&tq2, &tq1] {
            let t5 = tq.to_triple5().unwrap();
            prop_assert_eq!(t5.format(), TernaryFormat::Triple5);
            // The f16 scale of the file, as f32.
            prop_assert_eq!(t5.scale(), Some(half_round(c.scale)));
            let mut a = vec![0i8; c.cols];
            for r in 0..c.rows {
                t5.row_codes(r, &mut a);
                prop_assert_eq!(&a[..], &kept[r * c.cols..(r + 1) * c.cols]);
            }
            let (tv, _) = run(tq, SimdLevel::Scalar, &c.q, &c.xs, c.row0, c.m);
            let rescale = half_round(c.scale) / c.scale;
            for level in supported_simd_levels() {
                let (gv, gm) = run(&t5, level, &c.q, &c.xs, c.row0, c.m);
                for k in 0..want.len() {
                    // Same integer dot, scaled once by the f16-rounded scale.
                    let w = want[k] * rescale;
                    prop_assert!((gv[k] - w).abs() <= 1e-5 * w.abs().max(1e-3), "{:?} {} vs {}", level, gv[k], w);
                    prop_assert_eq!(gv[k].to_bits(), gm[k].to_bits());
                    prop_assert!((gv[k] - tv[k]).abs() <= 1e-4 * tv[k].abs().max(1.0), "{:?} {} vs tq {}", level, gv[k], tv[k]);
                }
            }
        }
        if nb >= 2 {
            let mut differ = scales.clone();
            differ[0] = 0.5;
            differ[nb - 1] = 0.75;
            let tq2 = TernaryMatrix::from_tq2_0(c.rows, c.cols, Bytes::from_vec(tq2_0::encode(&c.codes, &differ).unwrap())).unwrap();
            prop_assert!(tq2.to_triple5().is_none());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// TQ1_0 repacked to TQ2_0 keeps every code and block scale, so the scalar results are the same
    /// bits.
    #[test]
    fn tq1_0_repacks_to_tq2_0(c in case_strategy(256, 4)) {
        let nb = c.rows * c.cols / 256;
        let scales: Vec<f32> = (0..nb).map(|b| 0.5 + b as f32 * 0.125).collect();
        let tq1 = TernaryMatrix::from_tq1_0(c.rows, c.cols, Bytes::from_vec(tq1_0::encode(&c.codes, &scales).unwrap())).unwrap();
        let tq2 = tq1.to_tq2_0().unwrap();
        prop_assert_eq!(tq2.format(), TernaryFormat::TQ2_0);
        prop_assert!(tq2.to_tq2_0().is_none());
        let (mut a, mut b) = (vec![0i8; c.cols], vec![0i8; c.cols]);
        let (mut sa, mut sb) = (vec![0f32; c.cols / 256], vec![0f32; c.cols / 256]);
        for r in 0..c.rows {
            tq1.row_codes(r, &mut a);
            tq2.row_codes(r, &mut b);
            prop_assert_eq!(&a, &b);
            tq1.row_scales(r, &mut sa);
            tq2.row_scales(r, &mut sb);
            prop_assert_eq!(bits(&sa), bits(&sb));
        }
        let (av, am) = run(&tq1, SimdLevel::Scalar, &c.q, &c.xs, c.row0, c.m);
        let (bv, bm) = run(&tq2, SimdLevel::Scalar, &c.q, &c.xs, c.row0, c.m);
        prop_assert_eq!(bits(&av), bits(&bv));
        prop_assert_eq!(bits(&am), bits(&bm));
        check_block_scaled(&tq2, &c)?;
    }
}

/// `v` rounded to f16 and back (the precision of TQ block scales).
fn half_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// Scalar vs naive f64, scalar gemv == scalar gemm exactly, SIMD within f32 rounding.
fn check_block_scaled(w: &TernaryMatrix, c: &Case) -> Result<(), TestCaseError> {
    let (sv, sm) = run(w, SimdLevel::Scalar, &c.q, &c.xs, c.row0, c.m);
    prop_assert_eq!(bits(&sv), bits(&sm));
    let mut tol = vec![0f64; sv.len()];
    for t in 0..c.xs.len() {
        for i in 0..c.m {
            let (want, mag) = naive_block_dot(w, c.row0 + i, &c.q[t * c.cols..(t + 1) * c.cols]);
            let want = want / f64::from(c.xs[t]);
            let k = t * c.m + i;
            // f32 sums over a few blocks: relative error well under 1e-6 of the magnitude.
            tol[k] = 1e-6 * mag / f64::from(c.xs[t]) + 1e-30;
            prop_assert!(
                (f64::from(sv[k]) - want).abs() <= tol[k],
                "scalar {} vs naive {} (tol {})",
                sv[k],
                want,
                tol[k]
            );
        }
    }
    for level in supported_simd_levels() {
        let (gv, gm) = run(w, level, &c.q, &c.xs, c.row0, c.m);
        for k in 0..sv.len() {
            prop_assert!(
                (f64::from(gv[k]) - f64::from(sv[k])).abs() <= tol[k],
                "{:?} gemv {} vs {}",
                level,
                gv[k],
                sv[k]
            );
            prop_assert!(
                (f64::from(gm[k]) - f64::from(sv[k])).abs() <= tol[k],
                "{:?} gemm {} vs {}",
                level,
                gm[k],
                sv[k]
            );
        }
    }
    Ok(())
}

/// Larger shapes than the proptests (several row chunks, many tokens: 70 takes Triple5's path that
/// converts chunks to I2_S) at every level.
#[test]
fn large_i2s_matches_scalar() {
    let (rows, cols) = (1100, 640);
    let codes: Vec<i8> = (0..rows * cols).map(|i| ((i * 7919 + i / 13) % 3) as i8 - 1).collect();
    let w = TernaryMatrix::from_codes(rows, cols, &codes, 0.75).unwrap();
    let t5 = w.to_triple5().unwrap();
    for n in [13, 70] {
        let q: Vec<i8> = (0..n * cols).map(|i| ((i * 31337) % 256) as u8 as i8).collect();
        let xs: Vec<f32> = (0..n).map(|t| 1.0 + t as f32).collect();
        let (sv, sm) = run(&w, SimdLevel::Scalar, &q, &xs, 5, rows - 9);
        assert_eq!(bits(&sv), bits(&sm));
        for level in supported_simd_levels() {
            for m in [&w, &t5] {
                let (gv, gm) = run(m, level, &q, &xs, 5, rows - 9);
                assert_eq!(bits(&gv), bits(&sv), "{:?} {level:?} n {n}", m.format());
                assert_eq!(bits(&gm), bits(&sv), "{:?} {level:?} n {n}", m.format());
            }
        }
    }
}

#[test]
fn constructors_validate() {
    use bitnet_kernels::KernelError;
    // I2_S: cols must be a multiple of 128, data must hold the packed bytes + scale.
    assert!(matches!(
        TernaryMatrix::from_i2s(2, 100, Bytes::from_vec(vec![0; 100])),
        Err(KernelError::Shape(_))
    ));
    assert!(matches!(
        TernaryMatrix::from_i2s(2, 128, Bytes::from_vec(vec![0; 67])),
        Err(KernelError::DataTooShort {
            needed: 68,
            got: 67,
            ..
        })
    ));
    let w = TernaryMatrix::from_i2s(2, 128, Bytes::from_vec(vec![0x55; 68])).unwrap();
    assert_eq!((w.format(), w.rows(), w.cols()), (TernaryFormat::I2S, 2, 128));
    assert!(TernaryMatrix::from_tq2_0(1, 255, Bytes::from_vec(vec![0; 66])).is_err());
    assert!(TernaryMatrix::from_tq2_0(2, 256, Bytes::from_vec(vec![0; 131])).is_err());
    assert!(TernaryMatrix::from_tq1_0(2, 256, Bytes::from_vec(vec![0; 107])).is_err());
    assert_eq!(
        TernaryMatrix::from_tq1_0(2, 256, Bytes::from_vec(vec![0; 108]))
            .unwrap()
            .scale(),
        None
    );
    assert!(TernaryMatrix::from_codes(2, 3, &[0; 5], 1.0).is_err());
    assert!(TernaryMatrix::from_codes(2, 3, &[0, 0, 0, 0, 2, 0], 1.0).is_err());
    assert!(TernaryMatrix::from_codes(0, 3, &[], 1.0).is_err());
}

#[test]
fn row_codes_and_scales() {
    let codes: Vec<i8> = (0..3 * 300).map(|i| (i % 3) as i8 - 1).collect();
    let w = TernaryMatrix::from_codes(3, 300, &codes, 0.5).unwrap();
    let mut out = vec![0i8; 300];
    for r in 0..3 {
        w.row_codes(r, &mut out);
        assert_eq!(out, &codes[r * 300..(r + 1) * 300]);
    }
    let mut s = [0f32; 3];
    w.row_scales(1, &mut s);
    assert_eq!(s, [0.5; 3]);
    let scales = [1.0f32, 2.0, 3.0, 4.0];
    let codes: Vec<i8> = (0..2 * 512).map(|i| ((i * 5) % 3) as i8 - 1).collect();
    for w in [
        TernaryMatrix::from_tq2_0(2, 512, Bytes::from_vec(tq2_0::encode(&codes, &scales).unwrap())).unwrap(),
        TernaryMatrix::from_tq1_0(2, 512, Bytes::from_vec(tq1_0::encode(&codes, &scales).unwrap())).unwrap(),
    ] {
        let mut s = [0f32; 2];
        w.row_scales(1, &mut s);
        assert_eq!(s, [3.0, 4.0]);
        let mut out = vec![0i8; 512];
        w.row_codes(1, &mut out);
        assert_eq!(out, &codes[512..]);
    }
}

#[test]
fn unaligned_bytes_view() {
    // Weights at an odd offset inside a shared buffer (as in a mapped file).
    let codes: Vec<i8> = (0..4 * 256).map(|i| ((i * 11) % 3) as i8 - 1).collect();
    let enc = i2s::encode(&codes, 2.0).unwrap();
    let mut buf = vec![0u8; 3];
    buf.extend_from_slice(&enc);
    let owner: std::sync::Arc<dyn AsRef<[u8]> + Send + Sync> = std::sync::Arc::new(buf);
    let w = TernaryMatrix::from_i2s(4, 256, Bytes::from_shared(owner, 3, enc.len())).unwrap();
    let q: Vec<i8> = (0..256).map(|i| (i - 128) as i8).collect();
    for level in supported_simd_levels() {
        let mut y = [0f32; 4];
        w.gemv_with(level, &q, 1.0, 0, &mut y);
        for (r, &v) in y.iter().enumerate() {
            let acc: i32 = codes[r * 256..(r + 1) * 256]
                .iter()
                .zip(&q)
                .map(|(&t, &x)| i32::from(t) * i32::from(x))
                .sum();
            assert_eq!(v, acc as f32 * 2.0);
        }
    }
}

/// Long rows (many blocks, beyond any i16 partial-sum group) with saturating patterns: all +1 or
/// all -1 weights against all -128 / all 127 activations, at every level and format.
#[test]
fn extreme_values_on_long_rows() {
    for cols in [1024usize, 1280, 2560, 2560 + 77, 6912] {
        let rows = 6;
        let mut codes = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            codes.extend((0..cols).map(|j| match r {
                0 => 1,
                1 => -1,
                2 => 0,
                3 => {
                    if j % 2 == 0 {
                        1
                    } else {
                        -1
                    }
                }
                _ => ((j * 7 + r) % 3) as i8 - 1,
            }));
        }
        let patterns: [Vec<i8>; 4] = [
            vec![-128; cols],
            vec![127; cols],
            (0..cols).map(|j| if j % 2 == 0 { -128 } else { 127 }).collect(),
            (0..cols).map(|j| if j % 2 == 0 { 127 } else { -128 }).collect(),
        ];
        let q: Vec<i8> = patterns.concat();
        let xs = [1.0f32, 2.0, 0.5, 3.0];
        let mut mats = vec![TernaryMatrix::from_codes(rows, cols, &codes, 1.0).unwrap()];
        mats.extend(mats[0].to_triple5());
        if cols % 256 == 0 {
            let enc = i2s::encode(&codes, 1.0).unwrap();
            mats.push(TernaryMatrix::from_i2s(rows, cols, Bytes::from_vec(enc)).unwrap());
            let scales = vec![1.0f32; rows * cols / 256];
            let enc = tq2_0::encode(&codes, &scales).unwrap();
            mats.push(TernaryMatrix::from_tq2_0(rows, cols, Bytes::from_vec(enc)).unwrap());
            let enc = tq1_0::encode(&codes, &scales).unwrap();
            mats.push(TernaryMatrix::from_tq1_0(rows, cols, Bytes::from_vec(enc)).unwrap());
        }
        for w in &mats {
            for level in supported_simd_levels() {
                let (gv, gm) = run(w, level, &q, &xs, 0, rows);
                for t in 0..4 {
                    for r in 0..rows {
                        let acc = naive_dot(w, r, &q[t * cols..(t + 1) * cols]);
                        let want = acc as f32 / xs[t];
                        // Unit scales: every path is exact (block sums are integers far below 2^24).
                        assert_eq!(
                            gv[t * rows + r],
                            want,
                            "{:?} {level:?} cols {cols} t {t} r {r}",
                            w.format()
                        );
                        assert_eq!(gm[t * rows + r], want, "{:?} {level:?} gemm", w.format());
                    }
                }
            }
        }
    }
}
