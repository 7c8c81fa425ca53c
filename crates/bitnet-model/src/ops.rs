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

/// The query heads `qg` (`hg` heads of `head_dim` values, all reading KV head `kvh`) against the
/// first `n` cached positions: `o_h = softmax(K·q_h / sqrt(d)) · V`, softmax in f32. `sc` is scratch
/// of at least `hg * n` values.
///
/// The heads of a GQA group share their K and V rows, so the kernels take them together and load
/// (and convert) each row once for the whole group: a walk per head read the cache four times over,
/// from memory once one head's K and V outgrew L2.
#[allow(clippy::too_many_arguments)] // a hot inner function; a struct would only rename the same values
fn attend_group(qg: &[f32], kv: KvLayer<'_>, kvh: usize, n: usize, s: AttnShape, sc: &mut [f32], o: &mut [f32]) {
    let d = s.head_dim;
    let hg = qg.len() / d;
    let (stride, off) = (kv.row_stride, kvh * kv.head_stride);
    let scale = 1.0f32 / (d as f32).sqrt();
    let sc = &mut sc[..hg * n];
    match kv.data {
        KvData::F32 { k, .. } => attn_scores(qg, d, k, stride, off, scale, sc),
        KvData::F16 { k, .. } => attn_scores(qg, d, k, stride, off, scale, sc),
    }
    for sh in sc.chunks_exact_mut(n.max(1)) {
        bitnet_kernels::attention::softmax(sh);
    }
    match kv.data {
        KvData::F32 { v, .. } => attn_weighted_sum(sc, v, stride, off, d, o),
        KvData::F16 { v, .. } => attn_weighted_sum(sc, v, stride, off, d, o),
    }
}

/// Query heads per unit of work: a whole GQA group, or part of one when there are too few groups
/// to keep every worker busy (decoding one token with 5 KV heads on 2 threads: halves of groups
/// give 10 equal units, where whole groups would leave one thread idle for a fifth of the time).
fn heads_per_unit(n_tok: usize, s: AttnShape, threads: usize) -> usize {
    let group = s.group();
    let groups = n_tok * s.n_heads / group;
    (1..=group)
        .filter(|p| group.is_multiple_of(*p))
        .find(|&p| {
            let units = groups * p;
            units.is_multiple_of(threads) || units >= 4 * threads
        })
        .map_or(1, |p| group / p)
}

/// Runs the query heads `0..n_tok * n_heads` (of `d` outputs each, token-major) on the worker pool
/// when the work is large enough: each task takes a run of whole units ([`heads_per_unit`]) and
/// calls `run(first_head, out, scores)` once per stretch of its heads that share a KV head, so a
/// task that holds a whole group, or parts of two, reads each KV head once. Each task gets
/// `group * max_n` score slots of `scratch`, which grows to `tasks * group * reserve_n` (reserve the
/// cache capacity so that decoding does not reallocate it).
#[allow(clippy::too_many_arguments)]
fn run_heads(
    n_tok: usize,
    s: AttnShape,
    max_n: usize,
    reserve_n: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    run: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) {
    let (d, group) = (s.head_dim, s.group());
    let threads = bitnet_kernels::pool::num_threads().max(1);
    let hpu = heads_per_unit(n_tok, s, threads);
    let units = n_tok * s.n_heads / hpu;
    let parallel = units * hpu * max_n * d >= 1 << 16;
    let tasks = if !parallel {
        1
    } else if units.is_multiple_of(threads) && units <= 4 * threads {
        threads
    } else {
        units.min(threads * 4)
    };
    let hpt = units.div_ceil(tasks) * hpu;
    let tasks = (units * hpu).div_ceil(hpt);
    let per_task = group.min(hpt) * max_n.max(1);
    let need = tasks * per_task;
    if scratch.len() < need {
        scratch.resize(need.max(tasks * group.min(hpt) * reserve_n), 0.0);
    }
    bitnet_kernels::pool::for_each_chunk_pair_mut(
        &mut out[..units * hpu * d],
        hpt * d,
        &mut scratch[..need],
        per_task,
        |ti, oc, sc| {
            let h0 = ti * hpt;
            let (mut h, end) = (h0, h0 + oc.len() / d);
            while h < end {
                let stop = end.min((h / group + 1) * group);
                run(h, &mut oc[(h - h0) * d..(stop - h0) * d], sc);
                h = stop;
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
    let (d, group) = (s.head_dim, s.group());
    run_heads(n_tok, s, pos0 + n_tok, reserve_n, out, scratch, |i, o, sc| {
        let (t, h) = (i / s.n_heads, i % s.n_heads);
        attend_group(&q[i * d..i * d + o.len()], kv, h / group, pos0 + t + 1, s, sc, o);
    });
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
    let (d, group) = (s.head_dim, s.group());
    run_heads(n_seqs, s, max_n, reserve_n, out, scratch, |i, o, sc| {
        let (t, h) = (i / s.n_heads, i % s.n_heads);
        let (layer, n) = kv(t);
        attend_group(&q[i * d..i * d + o.len()], layer, h / group, n, s, sc, o);
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

    /// Grouped heads, split across tasks in every way the thread count allows, give each head's
    /// own one-head computation bit for bit: GQA groups of 1, 3 and 4, queries at the end of a long
    /// cache (several row blocks) and a causal prefill.
    #[test]
    fn grouped_attention_equals_attention_per_head() {
        use bitnet_kernels::attention::{attn_scores, attn_weighted_sum, softmax};
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut vals = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect()
        };
        for (n_heads, n_kv_heads) in [(4, 4), (6, 2), (8, 2)] {
            let s = AttnShape {
                n_heads,
                n_kv_heads,
                head_dim: 32,
            };
            let (qd, kvd, d) = (n_heads * 32, n_kv_heads * 32, 32);
            for (pos0, n_tok) in [(599, 1), (40, 7)] {
                let n = pos0 + n_tok;
                let (k, v, q) = (vals(n * kvd), vals(n * kvd), vals(n_tok * qd));
                let mut want = vec![0f32; n_tok * qd];
                for t in 0..n_tok {
                    for h in 0..n_heads {
                        let off = (h / (n_heads / n_kv_heads)) * d;
                        let m = pos0 + t + 1;
                        let mut sc = vec![0f32; m];
                        let qh = &q[(t * n_heads + h) * d..(t * n_heads + h + 1) * d];
                        attn_scores(qh, d, &k, kvd, off, 1.0 / (d as f32).sqrt(), &mut sc);
                        softmax(&mut sc);
                        let o = &mut want[(t * n_heads + h) * d..(t * n_heads + h + 1) * d];
                        attn_weighted_sum(&sc, &v, kvd, off, d, o);
                    }
                }
                for threads in 1..=3 {
                    bitnet_kernels::pool::set_num_threads(threads);
                    let mut got = vec![f32::NAN; n_tok * qd];
                    attention(&q, &k, &v, pos0, n_tok, s, &mut got);
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{n_heads}/{n_kv_heads} heads, {n_tok} at {pos0}, {threads} threads"
                    );
                }
            }
        }
    }
}
