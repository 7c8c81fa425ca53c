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
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize) -> Self {
        KvCache {
            k: (0..n_layers).map(|_| vec![0.0; capacity * kv_dim]).collect(),
            v: (0..n_layers).map(|_| vec![0.0; capacity * kv_dim]).collect(),
            kv_dim,
            capacity,
        }
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
