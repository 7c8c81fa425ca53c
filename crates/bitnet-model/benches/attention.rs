//! criterion benchmark of decode attention on BitNet b1.58 2B-4T's shape (20 query heads, 5 KV
//! heads of 128) after a long context: one new token against every layer of a 30-layer cache, so
//! the cache comes from memory as it does when decoding (one layer's K and V would stay in L3).
//! Throughput is in bytes of K and V read per second. Threads: `BITNET_BENCH_THREADS` (default 2).
//!
//! `cargo bench -p bitnet-model --bench attention [-- FILTER]`

use bitnet_kernels::ops::attention::{attention_with, AttnScratch, AttnShape};
use bitnet_model::kv_cache::{KvCache, KvType};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const LAYERS: usize = 30;
const SHAPE: AttnShape = AttnShape {
    n_heads: 20,
    n_kv_heads: 5,
    head_dim: 128,
};

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 9) % 2001) as f32 * 1e-3 - 1.0)
        .collect()
}

fn decode_attention(c: &mut Criterion) {
    let threads = std::env::var("BITNET_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    bitnet_kernels::pool::set_num_threads(threads);
    let kv_dim = SHAPE.n_kv_heads * SHAPE.head_dim;
    let qd = SHAPE.n_heads * SHAPE.head_dim;
    let mut g = c.benchmark_group("decode_attention");
    g.sample_size(20);
    for ty in [KvType::F32, KvType::F16] {
        for depth in [1024usize, 2048] {
            let mut cache = KvCache::try_new(LAYERS, kv_dim, SHAPE.head_dim, depth + 1, ty).expect("cache");
            let (k, v) = (values(depth * kv_dim, 1), values(depth * kv_dim, 2));
            for l in 0..LAYERS {
                cache.store(l, 0, &k, &v);
            }
            let q = values(qd, 3);
            let mut out = vec![0f32; qd];
            let mut scratch = AttnScratch::new(depth + 1);
            let bytes = 2 * LAYERS * depth * kv_dim * if ty == KvType::F32 { 4 } else { 2 };
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_function(BenchmarkId::new(ty.name(), depth), |b| {
                b.iter(|| {
                    for l in 0..LAYERS {
                        let kv = cache.layer(l, depth);
                        attention_with(&q, kv, depth - 1, 1, SHAPE, &mut out, &mut scratch);
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, decode_attention);
criterion_main!(benches);
