//! Single-thread timings of the hot kernels at every SIMD level, on BitNet b1.58 2B shapes.
//! `cargo run --release -p bitnet-kernels --example bench_kernels [filter]`

use bitnet_kernels::{
    quantize_row_i8_with, supported_simd_levels, tq2_0, Bytes, FloatFormat, FloatMatrix, TernaryMatrix,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Best time of several runs of at least ~50 ms each.
fn time(mut f: impl FnMut()) -> Duration {
    f();
    let mut iters = 1u32;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed() > Duration::from_millis(50) {
            break;
        }
        iters *= 2;
    }
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed() / iters);
    }
    best
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let want = |name: &str| name.contains(&filter);
    let (rows, cols) = (6912usize, 2560usize);
    let codes: Vec<i8> = (0..rows * cols)
        .map(|i| ((i.wrapping_mul(2654435761) >> 7) % 3) as i8 - 1)
        .collect();
    let w = TernaryMatrix::from_codes(rows, cols, &codes, 0.5).unwrap();
    let x: Vec<f32> = (0..64 * cols)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.001 - 0.5)
        .collect();
    let mut q = vec![0i8; 64 * cols];
    let mut xs = vec![0f32; 64];
    for t in 0..64 {
        xs[t] = quantize_row_i8_with(
            bitnet_kernels::SimdLevel::Scalar,
            &x[t * cols..(t + 1) * cols],
            &mut q[t * cols..(t + 1) * cols],
        );
    }
    let tq2 = TernaryMatrix::from_tq2_0(
        rows,
        cols,
        Bytes::from_vec(tq2_0::encode(&codes, &vec![0.5; rows * cols / 256]).unwrap()),
    )
    .unwrap();
    let head_rows = 32064; // a quarter of the 128256-row output head
    let head: Vec<u8> = (0..head_rows * cols)
        .flat_map(|i| {
            half::f16::from_f32(((i % 97) as f32 - 48.0) * 0.01)
                .to_bits()
                .to_le_bytes()
        })
        .collect();
    let head = FloatMatrix::new(FloatFormat::F16, head_rows, cols, Bytes::from_vec(head)).unwrap();
    let mut y = vec![0f32; 64 * head_rows.max(rows)];
    if want("load") {
        // from_i2s scans the packed bytes once for the invalid code 3.
        let enc = Bytes::from_vec(bitnet_kernels::i2s::encode(&codes, 0.5).unwrap());
        let d = time(|| {
            black_box(TernaryMatrix::from_i2s(rows, cols, enc.clone()).unwrap());
        });
        println!(
            "from_i2s {rows}x{cols}: {:8.1} us  {:6.1} GB/s",
            d.as_secs_f64() * 1e6,
            enc.len() as f64 / d.as_secs_f64() / 1e9
        );
    }
    for level in supported_simd_levels() {
        println!("== {level:?}");
        let wbytes = (rows * cols / 4) as f64;
        if want("i2s_gemv") {
            let d = time(|| w.gemv_with(level, black_box(&q[..cols]), xs[0], 0, &mut y[..rows]));
            println!(
                "i2s gemv {rows}x{cols}: {:8.1} us  {:6.1} GB/s",
                d.as_secs_f64() * 1e6,
                wbytes / d.as_secs_f64() / 1e9
            );
        }
        if want("i2s_gemm") {
            for n in [4usize, 16, 64] {
                let d = time(|| w.gemm_with(level, black_box(&q[..n * cols]), &xs[..n], 0, rows, &mut y, rows));
                let macs = (rows * cols * n) as f64;
                println!(
                    "i2s gemm n={n:2}: {:8.1} us  {:6.1} GMAC/s",
                    d.as_secs_f64() * 1e6,
                    macs / d.as_secs_f64() / 1e9
                );
            }
        }
        if want("tq2") {
            let d = time(|| tq2.gemv_with(level, black_box(&q[..cols]), xs[0], 0, &mut y[..rows]));
            let b = (rows * cols / 256 * 66) as f64;
            println!(
                "tq2_0 gemv: {:8.1} us  {:6.1} GB/s",
                d.as_secs_f64() * 1e6,
                b / d.as_secs_f64() / 1e9
            );
            let n = 16;
            let d = time(|| tq2.gemm_with(level, black_box(&q[..n * cols]), &xs[..n], 0, rows, &mut y, rows));
            println!(
                "tq2_0 gemm n={n}: {:8.1} us  {:6.1} GMAC/s",
                d.as_secs_f64() * 1e6,
                (rows * cols * n) as f64 / d.as_secs_f64() / 1e9
            );
        }
        if want("quant") {
            let d = time(|| {
                black_box(quantize_row_i8_with(level, black_box(&x[..cols]), &mut q[..cols]));
            });
            println!("quantize_row_i8 {cols}: {:8.3} us", d.as_secs_f64() * 1e6);
        }
        if want("f16") {
            let d = time(|| head.gemv_with(level, black_box(&x[..cols]), 0, &mut y[..head_rows]));
            let b = (head_rows * cols * 2) as f64;
            println!(
                "f16 gemv {head_rows}x{cols}: {:8.1} us  {:6.1} GB/s",
                d.as_secs_f64() * 1e6,
                b / d.as_secs_f64() / 1e9
            );
        }
    }
}
