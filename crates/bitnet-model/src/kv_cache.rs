//! The key/value cache that makes generation incremental.

/// K and V of every layer for positions `0..capacity`, f32, `[position, n_kv_heads * head_dim]`.
///
/// The buffers are allocated zeroed, which the allocator hands out as untouched pages: memory becomes
/// resident only as positions are written, so a large `-c` costs nothing until it is used.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    kv_dim: usize,
    capacity: usize,
}

impl KvCache {
    /// # Panics
    /// If the cache cannot be allocated; use [`try_new`](Self::try_new) for a size that came from outside.
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize) -> Self {
        Self::try_new(n_layers, kv_dim, capacity).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The cache, or an error naming the context size when it cannot be allocated (e.g. `-c` far
    /// beyond the machine's memory).
    pub fn try_new(n_layers: usize, kv_dim: usize, capacity: usize) -> anyhow::Result<Self> {
        let per_layer = capacity
            .checked_mul(kv_dim)
            .ok_or_else(|| anyhow::anyhow!("context size {capacity} is too large"))?;
        let buf = |_| {
            bitnet_kernels::try_zeroed_f32(per_layer).map_err(|e| {
                anyhow::anyhow!(
                    "the KV cache for a context of {capacity} tokens ({:.1} GB) cannot be allocated: {e} (lower -c/--ctx-size)",
                    (per_layer as f64) * 8.0 * n_layers as f64 / 1e9
                )
            })
        };
        Ok(KvCache {
            k: (0..n_layers).map(buf).collect::<anyhow::Result<_>>()?,
            v: (0..n_layers).map(buf).collect::<anyhow::Result<_>>()?,
            kv_dim,
            capacity,
        })
    }

    /// How many positions fit.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Writes K and V rows (`[n, kv_dim]`) of `layer` at positions `pos..pos+n`.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let a = pos * self.kv_dim;
        self.k[layer][a..a + k.len()].copy_from_slice(k);
        self.v[layer][a..a + v.len()].copy_from_slice(v);
    }

    /// K and V of `layer` for positions `0..n`.
    pub fn layer(&self, layer: usize, n: usize) -> (&[f32], &[f32]) {
        let e = n * self.kv_dim;
        (&self.k[layer][..e], &self.v[layer][..e])
    }
}
