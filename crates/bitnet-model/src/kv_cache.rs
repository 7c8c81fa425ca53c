//! The key/value cache that makes generation incremental.

pub use bitnet_kernels::ops::attention::{KvData, KvLayer};
use half::f16;

/// Element type of the KV cache (`--cache-type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvType {
    /// f32: exactly what the reference computes (the default).
    #[default]
    F32,
    /// f16 (what bitnet.cpp and llama.cpp keep by default): half the memory and half the bytes read
    /// per token at long contexts, for K/V rounded to 11 significant bits.
    F16,
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
        }
    }

    /// Parses `f32` / `f16` (case-insensitive).
    pub fn parse(s: &str) -> Option<KvType> {
        [KvType::F32, KvType::F16]
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s.trim()))
    }

    fn bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
        }
    }
}

/// Every layer's K and V buffers of `capacity * kv_dim` values.
#[derive(Debug)]
enum Store {
    F32 {
        k: Vec<Vec<f32>>,
        v: Vec<Vec<f32>>,
    },
    /// f16 bit patterns.
    F16 {
        k: Vec<Vec<u16>>,
        v: Vec<Vec<u16>>,
    },
}

/// K and V of every layer for positions `0..capacity`, in f32 or f16 ([`KvType`]), head-major:
/// `[kv_head, position, head_dim]`, so that attention reads each head's keys and values as one
/// contiguous stream (rows of all heads side by side made it a strided walk that the prefetchers
/// followed poorly at long contexts).
///
/// The buffers are allocated zeroed, which the allocator hands out as untouched pages: memory becomes
/// resident only as positions are written, so a large `-c` costs nothing until it is used.
#[derive(Debug)]
pub struct KvCache {
    store: Store,
    kv_dim: usize,
    head_dim: usize,
    capacity: usize,
    ty: KvType,
}

impl KvCache {
    /// An f32 cache.
    ///
    /// # Panics
    /// If the cache cannot be allocated; use [`try_new`](Self::try_new) for a size that came from outside.
    pub fn new(n_layers: usize, kv_dim: usize, head_dim: usize, capacity: usize) -> Self {
        Self::try_new(n_layers, kv_dim, head_dim, capacity, KvType::F32).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The cache, or an error naming the context size when it cannot be allocated (e.g. `-c` far
    /// beyond the machine's memory).
    /// `kv_dim` must be a multiple of `head_dim`.
    pub fn try_new(
        n_layers: usize,
        kv_dim: usize,
        head_dim: usize,
        capacity: usize,
        ty: KvType,
    ) -> anyhow::Result<Self> {
        if head_dim == 0 || !kv_dim.is_multiple_of(head_dim) {
            anyhow::bail!("KV width {kv_dim} is not a multiple of the head size {head_dim}");
        }
        let per_layer = capacity
            .checked_mul(kv_dim)
            .ok_or_else(|| anyhow::anyhow!("context size {capacity} is too large"))?;
        let err = |e: bitnet_kernels::KernelError| {
            anyhow::anyhow!(
                "the KV cache for a context of {capacity} tokens ({:.1} GB as {}) cannot be allocated: {e} (lower -c/--ctx-size)",
                (per_layer as f64) * 2.0 * ty.bytes() as f64 * n_layers as f64 / 1e9,
                ty.name()
            )
        };
        let store = match ty {
            KvType::F32 => {
                let buf = |_| bitnet_kernels::try_zeroed_f32(per_layer).map_err(err);
                Store::F32 {
                    k: (0..n_layers).map(buf).collect::<anyhow::Result<_>>()?,
                    v: (0..n_layers).map(buf).collect::<anyhow::Result<_>>()?,
                }
            }
            KvType::F16 => {
                let buf = |_| bitnet_kernels::try_zeroed_u16(per_layer).map_err(err);
                Store::F16 {
                    k: (0..n_layers).map(buf).collect::<anyhow::Result<_>>()?,
                    v: (0..n_layers).map(buf).collect::<anyhow::Result<_>>()?,
                }
            }
        };
        Ok(KvCache {
            store,
            kv_dim,
            head_dim,
            capacity,
            ty,
        })
    }

    /// How many positions fit.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn kv_type(&self) -> KvType {
        self.ty
    }

    /// Writes K and V rows (`[n, kv_dim]`) of `layer` at positions `pos..pos+n` (rounded to nearest
    /// even in an f16 cache).
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (d, cap) = (self.head_dim, self.capacity);
        // Token t, head h goes to row pos + t of head h's block.
        let dst_of = |i: usize| {
            let (t, h, c) = (i / self.kv_dim, (i % self.kv_dim) / d, i % d);
            (h * cap + pos + t) * d + c
        };
        match &mut self.store {
            Store::F32 { k: kc, v: vc } => {
                for (dst, src) in [(&mut kc[layer], k), (&mut vc[layer], v)] {
                    for (r, row) in src.chunks_exact(d).enumerate() {
                        let a = dst_of(r * d);
                        dst[a..a + d].copy_from_slice(row);
                    }
                }
            }
            Store::F16 { k: kc, v: vc } => {
                for (dst, src) in [(&mut kc[layer], k), (&mut vc[layer], v)] {
                    for (r, row) in src.chunks_exact(d).enumerate() {
                        let a = dst_of(r * d);
                        for (o, &x) in dst[a..a + d].iter_mut().zip(row) {
                            *o = f16::from_f32(x).to_bits();
                        }
                    }
                }
            }
        }
    }

    /// K and V of `layer` (every head, positions `0..n` of each are meaningful).
    pub fn layer(&self, layer: usize, n: usize) -> KvLayer<'_> {
        debug_assert!(n <= self.capacity);
        let data = match &self.store {
            Store::F32 { k, v } => KvData::F32 {
                k: &k[layer],
                v: &v[layer],
            },
            Store::F16 { k, v } => KvData::F16 {
                k: &k[layer],
                v: &v[layer],
            },
        };
        KvLayer {
            data,
            row_stride: self.head_dim,
            head_stride: self.capacity * self.head_dim,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_cache_rounds_and_reads_back() {
        // 2 layers, 2 KV heads of 2 values, 4 positions.
        let mut c = KvCache::try_new(2, 4, 2, 4, KvType::F16).unwrap();
        c.store(1, 2, &[1.0, 0.1, -70000.0, 3.0], &[2.0, 1e-8, 65504.0, 4.0]);
        let l = c.layer(1, 3);
        let KvData::F16 { k, v } = l.data else {
            panic!("not f16")
        };
        let f = |b: u16| f16::from_bits(b).to_f32();
        let at = |h: usize, j: usize| h * l.head_stride + j * l.row_stride;
        assert_eq!(f(k[at(0, 2)]), 1.0);
        assert_eq!(f(k[at(0, 2) + 1]), f16::from_f32(0.1).to_f32());
        assert_eq!(f(k[at(1, 2)]), f32::NEG_INFINITY, "out of f16 range");
        assert_eq!(
            (f(v[at(0, 2)]), f(v[at(1, 2)]), f(v[at(1, 2) + 1])),
            (2.0, 65504.0, 4.0)
        );
        assert_eq!(KvType::parse(" F16 "), Some(KvType::F16));
        assert_eq!(KvType::parse("q8_0"), None);
        assert!(KvCache::try_new(1, 5, 2, 4, KvType::F32).is_err());
    }

    #[test]
    fn head_major_layout_of_several_tokens() {
        let mut c = KvCache::new(1, 4, 2, 8);
        // Two tokens at positions 3 and 4, each [head0: a b, head1: c d].
        c.store(0, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[0.0; 8]);
        let l = c.layer(0, 5);
        let KvData::F32 { k, .. } = l.data else {
            panic!("not f32")
        };
        let row = |h: usize, j: usize| &k[h * l.head_stride + j * l.row_stride..][..2];
        assert_eq!(row(0, 3), &[1.0, 2.0]);
        assert_eq!(row(1, 3), &[3.0, 4.0]);
        assert_eq!(row(0, 4), &[5.0, 6.0]);
        assert_eq!(row(1, 4), &[7.0, 8.0]);
    }
}
