//! FloatMatrix: decoders against the format formulas, gemv against a naive f64 dot of the
//! decoded rows, every SIMD level against the scalar twin, unaligned data.

use super::*;
use crate::supported_simd_levels;
use half::{bf16, f16};
use proptest::prelude::*;

/// Deterministic pseudo-random stream (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }
}

/// Random bytes of a `rows x cols` matrix of `format` (valid for every format: random f16 scales
/// are kept finite and small).
fn random_matrix(format: FloatFormat, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let f16b = |v: f32| f16::from_f32(v).to_bits().to_le_bytes();
    for _ in 0..rows {
        match format {
            FloatFormat::F32 => (0..cols).for_each(|_| out.extend_from_slice(&rng.f().to_le_bytes())),
            FloatFormat::F16 => (0..cols).for_each(|_| out.extend_from_slice(&f16b(rng.f()))),
            FloatFormat::BF16 => {
                (0..cols).for_each(|_| out.extend_from_slice(&bf16::from_f32(rng.f()).to_bits().to_le_bytes()))
            }
            FloatFormat::Q8_0 => {
                let x: Vec<f32> = (0..cols).map(|_| rng.f()).collect();
                out.extend(q8_0::quantize(&x));
            }
            FloatFormat::Q6_K => {
                for _ in 0..cols / 256 {
                    let sc: [i8; 16] = core::array::from_fn(|_| rng.byte() as i8);
                    let q: [u8; 256] = core::array::from_fn(|_| rng.byte() & 63);
                    out.extend(q6_k::encode_block(rng.f() * 0.01, &sc, &q));
                }
            }
            FloatFormat::Q4_K => {
                for _ in 0..cols / 256 {
                    let sc: [u8; 8] = core::array::from_fn(|_| rng.byte() & 63);
                    let m: [u8; 8] = core::array::from_fn(|_| rng.byte() & 63);
                    let q: [u8; 256] = core::array::from_fn(|_| rng.byte() & 15);
                    out.extend(q4_k::encode_block(rng.f() * 0.1, rng.f() * 0.1, &sc, &m, &q));
                }
            }
        }
    }
    out
}

const FORMATS: [FloatFormat; 6] = [
    FloatFormat::F32,
    FloatFormat::F16,
    FloatFormat::BF16,
    FloatFormat::Q8_0,
    FloatFormat::Q6_K,
    FloatFormat::Q4_K,
];

/// Checks gemv at every level against the naive f64 dot of `dequantize_row`.
fn check_gemv(m: &FloatMatrix, x: &[f32], row0: usize, n: usize) {
    let cols = m.cols();
    let mut row = vec![0f32; cols];
    let mut want = vec![(0f64, 0f64); n];
    for (i, w) in want.iter_mut().enumerate() {
        m.dequantize_row(row0 + i, &mut row);
        *w = row.iter().zip(x).fold((0.0, 0.0), |(s, a), (&r, &v)| {
            (s + f64::from(r) * f64::from(v), a + (f64::from(r) * f64::from(v)).abs())
        });
    }
    let mut scalar = vec![0f32; n];
    m.gemv_with(SimdLevel::Scalar, x, row0, &mut scalar);
    for level in supported_simd_levels() {
        let mut y = vec![f32::NAN; n];
        m.gemv_with(level, x, row0, &mut y);
        for i in 0..n {
            let (w, mag) = want[i];
            // f32 accumulation over at most a few thousand terms.
            let tol = 1e-6 * mag.max(1e-30) * (1.0 + cols as f64 / 256.0);
            assert!(
                (f64::from(y[i]) - w).abs() <= tol,
                "{:?} {level:?} row {i}: {} vs {w}",
                m.format(),
                y[i]
            );
            assert!(
                (y[i] - scalar[i]).abs() as f64 <= tol,
                "{:?} {level:?} vs scalar",
                m.format()
            );
        }
    }
}

#[test]
fn gemv_all_formats_all_levels() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for format in FORMATS {
        for cols in [256usize, 512, 1280] {
            let cols = if format.block_size() == 1 { cols + 7 } else { cols };
            let rows = 9;
            let bytes = random_matrix(format, rows, cols, &mut rng);
            // Place the data at an odd offset: kernels must not assume alignment.
            let mut buf = vec![0u8; 1];
            buf.extend_from_slice(&bytes);
            let owner: std::sync::Arc<dyn AsRef<[u8]> + Send + Sync> = std::sync::Arc::new(buf);
            let m = FloatMatrix::new(format, rows, cols, Bytes::from_shared(owner, 1, bytes.len())).unwrap();
            let x: Vec<f32> = (0..cols).map(|_| rng.f() * 3.0).collect();
            check_gemv(&m, &x, 0, rows);
            check_gemv(&m, &x, 4, 3);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The public f32 dot at every supported level agrees with the scalar twin, for odd lengths and for
    /// values spanning many orders of magnitude.
    #[test]
    fn dot_f32_matches_scalar(n in 0usize..300, seed in 1u64..u64::MAX, big in 0usize..3) {
        let mut rng = Rng(seed);
        let mag = [1.0f32, 1e-20, 1e20][big];
        let a: Vec<f32> = (0..n).map(|_| rng.f() * mag).collect();
        let b: Vec<f32> = (0..n + 3).map(|_| rng.f()).collect();
        let want = dot_f32_scalar(&a, &b[..n]);
        let bound: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum::<f32>() * 1e-5 + f32::MIN_POSITIVE;
        for level in supported_simd_levels() {
            let got = dot_f32_slices(level, &a, &b[..n]);
            prop_assert!((got - want).abs() <= bound, "{level:?} n={n}: {got} vs {want}");
        }
        let got = crate::dot_f32(&a, &b); // the public entry: current level, shorter length wins
        prop_assert!((got - want).abs() <= bound, "dot_f32 n={n}: {got} vs {want}");
    }

    /// gemm over several tokens equals gemv token by token, bit for bit, at every level and format
    /// (odd widths and token counts cover the 4-token kernel's tails and the leftover tokens).
    #[test]
    fn gemm_equals_gemv_per_token(cols in 1usize..300, rows in 1usize..6, n_tok in 1usize..10, seed in 1u64..u64::MAX, f in 0usize..3) {
        let format = [FloatFormat::F16, FloatFormat::F32, FloatFormat::BF16][f];
        let mut rng = Rng(seed);
        let m = FloatMatrix::new(format, rows, cols, Bytes::from_vec(random_matrix(format, rows, cols, &mut rng))).unwrap();
        let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.f() * 1e3).collect();
        for level in supported_simd_levels() {
            let ldy = rows + 2;
            let mut y = vec![f32::NAN; n_tok * ldy];
            m.gemm_with(level, &x, n_tok, OutRows::new(&mut y, ldy, 0, rows));
            for t in 0..n_tok {
                let mut want = vec![0f32; rows];
                m.gemv_with(level, &x[t * cols..(t + 1) * cols], 0, &mut want);
                prop_assert_eq!(&y[t * ldy..t * ldy + rows], &want[..], "{:?} {:?} token {}", format, level, t);
            }
        }
    }

    /// The same across row tiles (more than 32 rows, row ranges not starting at 0) for every format,
    /// including the block formats (Q8_0 has its own multi-token kernel).
    #[test]
    fn gemm_equals_gemv_across_row_tiles(blocks in 1usize..3, rows in 30usize..75, row0 in 0usize..5, n_tok in 1usize..10,
                                         seed in 1u64..u64::MAX, f in 0usize..5) {
        let format = [FloatFormat::F16, FloatFormat::Q8_0, FloatFormat::F32, FloatFormat::Q6_K, FloatFormat::Q4_K][f];
        let cols = blocks * 256;
        let mut rng = Rng(seed);
        let m = FloatMatrix::new(format, rows, cols, Bytes::from_vec(random_matrix(format, rows, cols, &mut rng))).unwrap();
        let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.f() * 10.0).collect();
        let n = rows - row0;
        for level in supported_simd_levels() {
            let ldy = n + 1;
            let mut y = vec![f32::NAN; n_tok * ldy];
            m.gemm_with(level, &x, n_tok, OutRows::new(&mut y, ldy, row0, n));
            for t in 0..n_tok {
                let mut want = vec![0f32; n];
                m.gemv_with(level, &x[t * cols..(t + 1) * cols], row0, &mut want);
                prop_assert_eq!(&y[t * ldy..t * ldy + n], &want[..], "{:?} {:?} token {}", format, level, t);
            }
        }
    }

    /// The AVX-512 Q8_0 kernel gives the AVX2 one's results bit for bit (one token and tiles of
    /// several), so the levels differ in speed only.
    #[test]
    fn q8_0_avx512_equals_avx2(blocks in 1usize..90, rows in 1usize..5, n_tok in 1usize..7, seed in 1u64..u64::MAX) {
        let levels = supported_simd_levels();
        if levels.contains(&SimdLevel::Avx2) && levels.contains(&SimdLevel::Avx512) {
            let cols = blocks * 32;
            let mut rng = Rng(seed);
            let m = FloatMatrix::new(FloatFormat::Q8_0, rows, cols, Bytes::from_vec(random_matrix(FloatFormat::Q8_0, rows, cols, &mut rng))).unwrap();
            let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.f() * 100.0).collect();
            let run = |level| {
                let mut y = vec![f32::NAN; n_tok * rows];
                m.gemm_with(level, &x, n_tok, OutRows::all(&mut y, rows));
                let mut one = vec![f32::NAN; rows];
                m.gemv_with(level, &x[..cols], 0, &mut one);
                (y.iter().chain(&one).map(|v| v.to_bits()).collect::<Vec<_>>(), y)
            };
            let (a, b) = (run(SimdLevel::Avx2), run(SimdLevel::Avx512));
            prop_assert_eq!(a.0, b.0, "{:?} vs {:?}", a.1, b.1);
        }
    }

    /// Odd lengths for the plain float formats (tails of every SIMD loop).
    #[test]
    fn dense_odd_lengths(cols in 1usize..200, rows in 1usize..5, seed in 1u64..u64::MAX, f in 0usize..3) {
        let format = [FloatFormat::F32, FloatFormat::F16, FloatFormat::BF16][f];
        let mut rng = Rng(seed);
        let m = FloatMatrix::new(format, rows, cols, Bytes::from_vec(random_matrix(format, rows, cols, &mut rng))).unwrap();
        let x: Vec<f32> = (0..cols).map(|_| rng.f()).collect();
        check_gemv(&m, &x, 0, rows);
    }
}

#[test]
fn dense_decoders() {
    let vals = [1.5f32, -2.25, 0.0, 65504.0];
    let mut b32 = Vec::new();
    let mut b16 = Vec::new();
    let mut bb = Vec::new();
    for v in vals {
        b32.extend_from_slice(&v.to_le_bytes());
        b16.extend_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
        bb.extend_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes());
    }
    for (f, b) in [
        (FloatFormat::F32, b32),
        (FloatFormat::F16, b16),
        (FloatFormat::BF16, bb),
    ] {
        let m = FloatMatrix::new(f, 2, 2, Bytes::from_vec(b)).unwrap();
        let mut out = [0f32; 2];
        m.dequantize_row(1, &mut out);
        let want = if f == FloatFormat::BF16 {
            [0.0, bf16::from_f32(65504.0).to_f32()]
        } else {
            [0.0, 65504.0]
        };
        assert_eq!(out, want, "{f:?}");
    }
}

#[test]
fn q8_0_decoder() {
    let mut blk = f16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
    blk.extend((0..32).map(|i| (i as i8 - 16) as u8));
    let m = FloatMatrix::new(FloatFormat::Q8_0, 1, 32, Bytes::from_vec(blk)).unwrap();
    let mut out = [0f32; 32];
    m.dequantize_row(0, &mut out);
    for (i, &v) in out.iter().enumerate() {
        assert_eq!(v, 0.5 * (i as f32 - 16.0));
    }
}

#[test]
fn q6_k_decoder_matches_formula() {
    let mut rng = Rng(77);
    for _ in 0..20 {
        let d = 0.03125f32; // exact in f16
        let sc: [i8; 16] = core::array::from_fn(|_| rng.byte() as i8);
        let q: [u8; 256] = core::array::from_fn(|_| rng.byte() & 63);
        let m = FloatMatrix::new(
            FloatFormat::Q6_K,
            1,
            256,
            Bytes::from_vec(q6_k::encode_block(d, &sc, &q)),
        )
        .unwrap();
        let mut out = [0f32; 256];
        m.dequantize_row(0, &mut out);
        for j in 0..256 {
            assert_eq!(
                out[j],
                d * f32::from(sc[j / 16]) * (i32::from(q[j]) - 32) as f32,
                "j={j}"
            );
        }
    }
}

#[test]
fn q4_k_decoder_matches_formula() {
    let mut rng = Rng(99);
    for _ in 0..20 {
        let (d, dmin) = (0.25f32, 0.0625f32);
        let sc: [u8; 8] = core::array::from_fn(|_| rng.byte() & 63);
        let mn: [u8; 8] = core::array::from_fn(|_| rng.byte() & 63);
        let q: [u8; 256] = core::array::from_fn(|_| rng.byte() & 15);
        let m = FloatMatrix::new(
            FloatFormat::Q4_K,
            1,
            256,
            Bytes::from_vec(q4_k::encode_block(d, dmin, &sc, &mn, &q)),
        )
        .unwrap();
        let mut out = [0f32; 256];
        m.dequantize_row(0, &mut out);
        for j in 0..256 {
            let s = j / 32;
            let want = d * f32::from(sc[s]) * f32::from(q[j]) - dmin * f32::from(mn[s]);
            assert_eq!(out[j], want, "j={j}");
        }
    }
}

#[test]
fn constructor_validates() {
    assert!(FloatMatrix::new(FloatFormat::Q8_0, 1, 31, Bytes::from_vec(vec![0; 34])).is_err());
    assert!(FloatMatrix::new(FloatFormat::Q6_K, 1, 256, Bytes::from_vec(vec![0; 209])).is_err());
    assert!(FloatMatrix::new(FloatFormat::Q4_K, 2, 256, Bytes::from_vec(vec![0; 288])).is_ok());
    assert!(FloatMatrix::new(FloatFormat::F16, 3, 3, Bytes::from_vec(vec![0; 17])).is_err());
    assert!(FloatMatrix::new(FloatFormat::F32, 0, 3, Bytes::from_vec(vec![])).is_err());
    // A 1 x 1 scalar tensor (the model reads per-tensor scales this way).
    let m = FloatMatrix::new(
        FloatFormat::BF16,
        1,
        1,
        Bytes::from_vec(bf16::from_f32(0.5).to_bits().to_le_bytes().to_vec()),
    )
    .unwrap();
    let mut v = [0f32];
    m.dequantize_row(0, &mut v);
    assert_eq!(v, [0.5]);
}

#[test]
fn to_q8_0_requantizes_every_row_like_ggml() {
    let mut rng = Rng(0x0dd_ba11);
    let (rows, cols) = (600, 96); // more rows than one pool task
    let src = FloatMatrix::new(
        FloatFormat::F16,
        rows,
        cols,
        Bytes::from_vec(random_matrix(FloatFormat::F16, rows, cols, &mut rng)),
    )
    .unwrap();
    let q = src.to_q8_0().unwrap();
    assert_eq!((q.format(), q.rows(), q.cols()), (FloatFormat::Q8_0, rows, cols));
    let (mut a, mut b) = (vec![0f32; cols], vec![0f32; cols]);
    for r in 0..rows {
        src.dequantize_row(r, &mut a);
        assert_eq!(q.row(r), &q8_0::quantize(&a)[..], "row {r}");
        q.dequantize_row(r, &mut b);
        let amax = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= amax / 127.0 * 0.51 + 1e-3 * amax,
                "row {r}: {x} vs {y}"
            );
        }
    }
    let odd = FloatMatrix::new(FloatFormat::F32, 2, 33, Bytes::from_vec(vec![0u8; 2 * 33 * 4])).unwrap();
    assert!(odd.to_q8_0().is_err());
}
