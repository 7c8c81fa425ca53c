//! The float operations of the forward pass (norms, RoPE, attention), written to follow the reference's
//! f32 arithmetic order closely. Ternary matrix products live in `bitnet-kernels`.

use crate::kv_cache::{KvData, KvLayer};
use bitnet_kernels::attention::{attn_scores, attn_weighted_sum};

/// RMSNorm: `w * (x / sqrt(mean(x^2) + eps))`, with the mean of squares accumulated in f64 and the
/// rest in f32 like the reference (`x * rsqrt(var + eps)` then `weight *`).
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), w.len());
    let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let var = (ss / x.len().max(1) as f64) as f32;
    let inv = 1.0f32 / (var + eps).sqrt();
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = wi * (xi * inv);
    }
}

/// RMSNorm of `n` rows of width `w.len()`, in place from `x` into `out`.
pub fn rmsnorm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        rmsnorm(xr, w, eps, or);
    }
}

/// cos/sin of the RoPE angles for one position: `angle_i = pos * theta^(-2i/rope_dim)` in f32, for
/// `i < rope_dim/2` (half-split / NEOX layout, as transformers' `rotate_half`).
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(rope_dim: usize, theta: f32) -> Self {
        let inv_freq = (0..rope_dim / 2)
            .map(|i| 1.0f32 / theta.powf((2 * i) as f32 / rope_dim as f32))
            .collect();
        Rope { inv_freq }
    }

    /// Fills `cos`/`sin` (each `rope_dim/2` long) for position `pos`.
    pub fn angles(&self, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
        let p = pos as f32;
        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(&self.inv_freq) {
            let a = p * f;
            *c = a.cos();
            *s = a.sin();
        }
    }

    pub fn half(&self) -> usize {
        self.inv_freq.len()
    }
}

/// Rotates the first `2 * cos.len()` values of one head in place: `x*cos + rotate_half(x)*sin`.
#[inline]
pub fn rope_head(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let h = cos.len();
    for i in 0..h {
        let x0 = x[i];
        let x1 = x[i + h];
        x[i] = x0 * cos[i] + (-x1) * sin[i];
        x[i + h] = x1 * cos[i] + x0 * sin[i];
    }
}

/// Shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    fn group(&self) -> usize {
        (self.n_heads / self.n_kv_heads.max(1)).max(1)
    }
}

/// One query head against the first `n` cached positions of KV head `kvh`:
/// `o = softmax(K·q / sqrt(d)) · V`, softmax in f32. `sc` is scratch of at least `n` values.
#[allow(clippy::too_many_arguments)] // a hot inner function; a struct would only rename the same eight values
fn attend_head(qh: &[f32], kv: KvLayer<'_>, kvh: usize, n: usize, s: AttnShape, sc: &mut [f32], o: &mut [f32]) {
    let d = s.head_dim;
    let (stride, off) = (kv.row_stride, kvh * kv.head_stride);
    let scale = 1.0f32 / (d as f32).sqrt();
    let sc = &mut sc[..n];
    match kv.data {
        KvData::F32 { k, .. } => attn_scores(qh, k, stride, off, scale, sc),
        KvData::F16 { k, .. } => attn_scores(qh, k, stride, off, scale, sc),
    }
    bitnet_kernels::attention::softmax(sc);
    match kv.data {
        KvData::F32 { v, .. } => attn_weighted_sum(sc, v, stride, off, o),
        KvData::F16 { v, .. } => attn_weighted_sum(sc, v, stride, off, o),
    }
}

/// Runs `head(unit, out_chunk, scores)` for `units` heads of `d` outputs each, on the worker pool
/// when the work is large enough. Each task gets `max_n` score slots of `scratch`, which grows to
/// `tasks * reserve_n` (reserve the cache capacity so that decoding does not reallocate it).
fn run_heads(
    units: usize,
    d: usize,
    max_n: usize,
    reserve_n: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    head: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) {
    let parallel = units * max_n * d >= 1 << 16;
    let tasks = if parallel {
        units.min(bitnet_kernels::pool::num_threads() * 4)
    } else {
        1
    };
    let upt = units.div_ceil(tasks);
    let tasks = units.div_ceil(upt);
    let need = tasks * max_n.max(1);
    if scratch.len() < need {
        scratch.resize(need.max(tasks * reserve_n), 0.0);
    }
    bitnet_kernels::pool::for_each_chunk_pair_mut(
        &mut out[..units * d],
        upt * d,
        &mut scratch[..need],
        max_n.max(1),
        |ti, oc, sc| {
            for (j, o) in oc.chunks_mut(d).enumerate() {
                head(ti * upt + j, o, sc);
            }
        },
    );
}

/// Causal attention of `n_tok` new queries at positions `pos0..pos0+n_tok` against a cache whose
/// rows `0..pos0+n_tok` are filled. `q`/`out` are `[n_tok, n_heads*head_dim]`, `k`/`v` are
/// `[positions, n_kv_heads*head_dim]`. Query head `h` reads KV head `h / (n_heads / n_kv_heads)`.
/// Scores are scaled by `1/sqrt(head_dim)`, softmax in f32.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], pos0: usize, n_tok: usize, s: AttnShape, out: &mut [f32]) {
    let kv = KvLayer::token_major(k, v, s.kv_dim(), s.head_dim);
    attention_with(q, kv, pos0, n_tok, s, out, &mut Vec::new(), 0)
}

/// [`attention`] with caller-owned score scratch, grown to hold `reserve_n` positions per task.
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    q: &[f32],
    kv: KvLayer<'_>,
    pos0: usize,
    n_tok: usize,
    s: AttnShape,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    reserve_n: usize,
) {
    let d = s.head_dim;
    let group = s.group();
    run_heads(
        n_tok * s.n_heads,
        d,
        pos0 + n_tok,
        reserve_n,
        out,
        scratch,
        |i, o, sc| {
            let (t, h) = (i / s.n_heads, i % s.n_heads);
            attend_head(&q[i * d..(i + 1) * d], kv, h / group, pos0 + t + 1, s, sc, o);
        },
    );
}

/// Attention for one new token of each of several sequences (batched decoding): token `t` attends
/// to `kv(t) = (its cache layer, n_positions)`. `q`/`out` are `[n_seqs, n_heads*head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn attention_batch<'a>(
    q: &[f32],
    n_seqs: usize,
    kv: impl Fn(usize) -> (KvLayer<'a>, usize) + Sync,
    max_n: usize,
    s: AttnShape,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    reserve_n: usize,
) {
    let d = s.head_dim;
    let group = s.group();
    run_heads(n_seqs * s.n_heads, d, max_n, reserve_n, out, scratch, |i, o, sc| {
        let (t, h) = (i / s.n_heads, i % s.n_heads);
        let (layer, n) = kv(t);
        attend_head(&q[i * d..(i + 1) * d], layer, h / group, n, s, sc, o);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_unit_weights_gives_unit_rms() {
        let x = [3.0f32, -4.0, 0.0, 5.0];
        let mut o = [0.0; 4];
        rmsnorm(&x, &[1.0; 4], 0.0, &mut o);
        let rms = (o.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6, "{rms}");
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let r = Rope::new(8, 10_000.0);
        let (mut c, mut s) = (vec![0.0; 4], vec![0.0; 4]);
        r.angles(0, &mut c, &mut s);
        let mut x: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let x0 = x.clone();
        rope_head(&mut x, &c, &s);
        assert_eq!(x, x0);
        r.angles(17, &mut c, &mut s);
        rope_head(&mut x, &c, &s);
        let n0: f32 = x0.iter().map(|v| v * v).sum();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
    }

    #[test]
    fn attention_single_position_returns_value() {
        let s = AttnShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
        };
        let q = [1.0, 2.0, 3.0, 4.0];
        let k = [0.5, 0.5];
        let v = [7.0, -1.0];
        let mut o = [0.0; 4];
        attention(&q, &k, &v, 0, 1, s, &mut o);
        assert_eq!(o, [7.0, -1.0, 7.0, -1.0]);
    }
}
