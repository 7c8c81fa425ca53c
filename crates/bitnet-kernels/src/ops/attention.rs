//! Attention as one operation over the worker pool: the query heads of every token, grouped by the
//! KV head they read, are split into tasks here (the model describes the network, not threads), and
//! each task runs the attention kernels of [`crate::attention`] on its heads.

use crate::attention::{attn_scores, attn_weighted_sum};
use crate::pool;

/// K and V of one layer: the row of position `j` of KV head `h` starts at
/// `j * row_stride + h * head_stride` in `k` and in `v`, and holds `head_dim` values.
#[derive(Clone, Copy, Debug)]
pub struct KvLayer<'a> {
    pub data: KvData<'a>,
    pub row_stride: usize,
    pub head_stride: usize,
}

/// The values of a [`KvLayer`].
#[derive(Clone, Copy, Debug)]
pub enum KvData<'a> {
    F32 {
        k: &'a [f32],
        v: &'a [f32],
    },
    /// f16 bit patterns.
    F16 {
        k: &'a [u16],
        v: &'a [u16],
    },
}

impl<'a> KvLayer<'a> {
    /// Rows of all heads side by side (`[position, n_kv_heads * head_dim]`, as the projections
    /// produce them).
    pub fn token_major(k: &'a [f32], v: &'a [f32], kv_dim: usize, head_dim: usize) -> Self {
        KvLayer {
            data: KvData::F32 { k, v },
            row_stride: kv_dim,
            head_stride: head_dim,
        }
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
        crate::attention::softmax(sh);
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

/// Score rows for the attention tasks, reused across calls: it grows to hold `reserve_n`
/// positions per task the first time (reserve the cache capacity so that decoding does not
/// reallocate it as the context grows).
#[derive(Debug, Default)]
pub struct AttnScratch {
    scores: Vec<f32>,
    reserve_n: usize,
}

impl AttnScratch {
    /// Scratch that reserves room for `reserve_n` positions per task when it first grows.
    pub fn new(reserve_n: usize) -> Self {
        AttnScratch {
            scores: Vec::new(),
            reserve_n,
        }
    }

    /// Raises the positions reserved per task (for the next growth).
    pub fn reserve(&mut self, reserve_n: usize) {
        self.reserve_n = self.reserve_n.max(reserve_n);
    }
}

/// Runs the query heads `0..n_tok * n_heads` (of `d` outputs each, token-major) on the worker pool
/// when the work is large enough: each task takes a run of whole units ([`heads_per_unit`]) and
/// calls `run(first_head, out, scores)` once per stretch of its heads that share a KV head, so a
/// task that holds a whole group, or parts of two, reads each KV head once. Each task gets
/// `group * max_n` score slots of `scratch`.
fn run_heads(
    n_tok: usize,
    s: AttnShape,
    max_n: usize,
    out: &mut [f32],
    scratch: &mut AttnScratch,
    run: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) {
    let reserve_n = scratch.reserve_n;
    let scratch = &mut scratch.scores;
    let (d, group) = (s.head_dim, s.group());
    let threads = pool::num_threads().max(1);
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
    pool::for_each_chunk_pair_mut(
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
    attention_with(q, kv, pos0, n_tok, s, out, &mut AttnScratch::default())
}

/// [`attention`] over a cache layer with caller-owned score scratch.
pub fn attention_with(
    q: &[f32],
    kv: KvLayer<'_>,
    pos0: usize,
    n_tok: usize,
    s: AttnShape,
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    let (d, group) = (s.head_dim, s.group());
    run_heads(n_tok, s, pos0 + n_tok, out, scratch, |i, o, sc| {
        let (t, h) = (i / s.n_heads, i % s.n_heads);
        attend_group(&q[i * d..i * d + o.len()], kv, h / group, pos0 + t + 1, s, sc, o);
    });
}

/// Attention for one new token of each of several sequences (batched decoding): token `t` attends
/// to `kv(t) = (its cache layer, n_positions)`. `q`/`out` are `[n_seqs, n_heads*head_dim]`.
/// `max_n` bounds the positions any sequence attends to.
pub fn attention_batch<'a>(
    q: &[f32],
    n_seqs: usize,
    kv: impl Fn(usize) -> (KvLayer<'a>, usize) + Sync,
    max_n: usize,
    s: AttnShape,
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    let (d, group) = (s.head_dim, s.group());
    run_heads(n_seqs, s, max_n, out, scratch, |i, o, sc| {
        let (t, h) = (i / s.n_heads, i % s.n_heads);
        let (layer, n) = kv(t);
        attend_group(&q[i * d..i * d + o.len()], layer, h / group, n, s, sc, o);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
        use crate::attention::softmax;
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
                    pool::set_num_threads(threads);
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
