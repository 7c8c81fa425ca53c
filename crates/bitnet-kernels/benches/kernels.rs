//! criterion benchmarks of the hot kernels on BitNet b1.58 2B-4T shapes, one thread, at every SIMD
//! level this CPU supports. GEMV throughput is in bytes of weights read per second; GEMM throughput is
//! in elements = multiply-adds per second (criterion prints them as "elem/s": read as MAC/s).
//!
//! `cargo bench -p bitnet-kernels --bench kernels [-- FILTER]`

use bitnet_kernels::{
    i2s, quantize_row_i8_with, supported_simd_levels, tq2_0, Bytes, FloatFormat, FloatMatrix, OutRows, QTokens,
    SimdLevel, TernaryMatrix,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

const ROWS: usize = 6912; // FFN width
const COLS: usize = 2560; // hidden size

fn codes() -> Vec<i8> {
    (0..ROWS * COLS)
        .map(|i| ((i.wrapping_mul(2654435761) >> 7) % 3) as i8 - 1)
        .collect()
}

fn activations(n: usize) -> (Vec<i8>, Vec<f32>) {
    let x: Vec<f32> = (0..n * COLS)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.001 - 0.5)
        .collect();
    let mut q = vec![0i8; n * COLS];
    let mut s = vec![0f32; n];
    for t in 0..n {
        s[t] = quantize_row_i8_with(
            SimdLevel::Scalar,
            &x[t * COLS..(t + 1) * COLS],
            &mut q[t * COLS..(t + 1) * COLS],
        );
    }
    (q, s)
}

fn ternary(c: &mut Criterion) {
    let codes = codes();
    let i2s_m = TernaryMatrix::from_i2s(ROWS, COLS, Bytes::from_vec(i2s::encode(&codes, 0.5).unwrap())).unwrap();
    let tq2 = TernaryMatrix::from_tq2_0(
        ROWS,
        COLS,
        Bytes::from_vec(tq2_0::encode(&codes, &vec![0.5; ROWS * COLS / 256]).unwrap()),
    )
    .unwrap();
    let t5 = i2s_m.to_triple5().expect("2560 columns are whole I2_S blocks");
    let (q, s) = activations(16);
    let mut y = vec![0f32; 16 * ROWS];

    let mut g = c.benchmark_group("ternary_gemv");
    for (name, m, bytes) in [
        ("i2s", &i2s_m, ROWS * COLS / 4),
        ("tq2_0", &tq2, ROWS * COLS / 256 * 66),
        ("triple5", &t5, ROWS * bitnet_kernels::triple5::stride_for(COLS)),
    ] {
        g.throughput(Throughput::Bytes(bytes as u64));
        for level in supported_simd_levels() {
            g.bench_function(BenchmarkId::new(name, format!("{level:?}")), |b| {
                b.iter(|| m.gemv_with(level, black_box(&q[..COLS]), s[0], 0, &mut y[..ROWS]))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("ternary_gemm_16tok");
    g.throughput(Throughput::Elements((ROWS * COLS * 16) as u64));
    for (name, m) in [("i2s", &i2s_m), ("tq2_0", &tq2), ("triple5", &t5)] {
        for level in supported_simd_levels() {
            g.bench_function(BenchmarkId::new(name, format!("{level:?}")), |b| {
                b.iter(|| m.gemm_with(level, QTokens::new(black_box(&q), &s), OutRows::all(&mut y, ROWS)))
            });
        }
    }
    g.finish();
}

fn float_head(c: &mut Criterion) {
    let rows = 8192; // a slice of the 128256-row output head
    let head: Vec<u8> = (0..rows * COLS)
        .flat_map(|i| {
            half::f16::from_f32(((i % 97) as f32 - 48.0) * 0.01)
                .to_bits()
                .to_le_bytes()
        })
        .collect();
    let f16m = FloatMatrix::new(FloatFormat::F16, rows, COLS, Bytes::from_vec(head)).unwrap();
    let q8 = f16m.to_q8_0().unwrap();
    let x: Vec<f32> = (0..8 * COLS).map(|i| ((i * 31) % 200) as f32 * 0.01 - 1.0).collect();
    let mut y = vec![0f32; 8 * rows];
    let mut g = c.benchmark_group("head_gemv");
    for (name, m, bytes) in [("f16", &f16m, rows * COLS * 2), ("q8_0", &q8, rows * COLS / 32 * 34)] {
        g.throughput(Throughput::Bytes(bytes as u64));
        for level in supported_simd_levels() {
            g.bench_function(BenchmarkId::new(name, format!("{level:?}")), |b| {
                b.iter(|| m.gemv_with(level, black_box(&x[..COLS]), 0, &mut y[..rows]))
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("head_gemm_8tok");
    g.throughput(Throughput::Elements((rows * COLS * 8) as u64));
    for level in supported_simd_levels() {
        g.bench_function(BenchmarkId::new("f16", format!("{level:?}")), |b| {
            b.iter(|| f16m.gemm_with(level, black_box(&x), 8, OutRows::all(&mut y, rows)))
        });
    }
    g.finish();
}

fn act_quant(c: &mut Criterion) {
    let x: Vec<f32> = (0..COLS).map(|i| ((i * 7919) % 1000) as f32 * 0.001 - 0.5).collect();
    let mut q = vec![0i8; COLS];
    let mut g = c.benchmark_group("act_quant");
    g.throughput(Throughput::Bytes((COLS * 4) as u64));
    for level in supported_simd_levels() {
        g.bench_function(format!("{level:?}"), |b| {
            b.iter(|| quantize_row_i8_with(level, black_box(&x), &mut q))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = ternary, float_head, act_quant
}
criterion_main!(benches);
