//! The machine's read bandwidth, which bounds decoding (every weight is read once per token):
//! `bitnet bench --membw` reports each decode test as a fraction of it.

use std::time::Instant;

use bitnet_kernels::pool;

/// Best-of-5 read bandwidth (GB/s) over a 1 GiB buffer, split over the worker pool like the kernels.
pub fn measure_read_bandwidth() -> f64 {
    const WORDS: usize = (1 << 30) / 8;
    let buf: Vec<u64> = (0..WORDS as u64).collect();
    let tasks = pool::num_threads() * 8;
    let chunk = WORDS.div_ceil(tasks);
    let mut best = 0.0f64;
    for _ in 0..5 {
        let sums: Vec<std::sync::atomic::AtomicU64> = (0..tasks).map(|_| Default::default()).collect();
        let t0 = Instant::now();
        pool::run(tasks, |i| {
            let a = (i * chunk).min(WORDS);
            let e = (a + chunk).min(WORDS);
            let s = buf[a..e].iter().fold(0u64, |acc, &v| acc.wrapping_add(v));
            sums[i].store(s, std::sync::atomic::Ordering::Relaxed);
        });
        let dt = t0.elapsed().as_secs_f64();
        std::hint::black_box(&sums);
        best = best.max((WORDS * 8) as f64 / dt / 1e9);
    }
    best
}
