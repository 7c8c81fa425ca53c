//! The ternary decoder of every family: weights and the forward pass, in one file.
//!
//! Per layer: `x += o_proj(attn_sub_norm(attention(rope(q), rope(k), v)))` with q/k/v projections of
//! `attn_norm(x)`, then `x += down(ffn_sub_norm(act(gate(h)) * up(h)))` with `h = ffn_norm(x)`. Every
//! projection is ternary and quantizes its input to int8 per token (absmax, round half to even).
//! The output head is float (the tied embedding, or its own matrix).
//!
//! What differs between families is data, not code ([`crate::arch::BlockTraits`]): the sub-norms
//! are optional (BitNet b1.58 and 1bitLLM have them, Llama-architecture models do not), a
//! projection may carry its own input RMSNorm ([`Linear::in_norm`], BitNet embedding models), q/k
//! heads may be RMS-normed before RoPE (Qwen3), RoPE pairs dimensions half-split or interleaved
//! ([`crate::arch::RopeLayout`]), and embedding models return pooled hidden states
//! ([`LogitsWanted::Hidden`]) instead of logits.

use anyhow::{bail, Result};
use bitnet_kernels::{quantize_row_i8, FloatMatrix, TernaryMatrix};

use crate::arch::RopeLayout;
use crate::config::ModelConfig;
use crate::kv_cache::{KvCache, KvType};
use crate::ops::{self, Rope};
use bitnet_kernels::ops::attention::{self, AttnScratch, AttnShape};
use bitnet_kernels::ops::matmul;

/// A ternary projection, optionally followed by a per-tensor output scale (llama.cpp's
/// `blk.N.<proj>.scale` tensors of the `bitnet` architecture).
#[derive(Debug)]
pub struct Linear {
    pub w: TernaryMatrix,
    pub out_scale: Option<f32>,
    /// An RMSNorm applied to the input before it is quantized (BitNet embedding models give every
    /// projection its own).
    pub in_norm: Option<Norm>,
}

/// RMSNorm weights and epsilon.
#[derive(Clone, Debug)]
pub struct Norm {
    pub w: Vec<f32>,
    pub eps: f32,
}

impl Linear {
    /// Wraps `w` as it is.
    pub fn new(w: TernaryMatrix) -> Self {
        Linear {
            w,
            out_scale: None,
            in_norm: None,
        }
    }

    /// Wraps `w` in the layout this CPU's kernels read fastest ([`TernaryMatrix::for_cpu`]:
    /// Triple5 where AVX-512 VBMI + VNNI are present, TQ1_0 as TQ2_0 elsewhere). What the loaders
    /// use.
    pub fn for_cpu(w: TernaryMatrix) -> Self {
        Linear::new(w.for_cpu())
    }

    /// `y = W · quant_i8(norm(x))` for `n_tok` rows of `x` (`norm` = [`Linear::in_norm`] when the
    /// projection has one), using `s` as scratch.
    pub fn forward(&self, x: &[f32], n_tok: usize, s: &mut QuantScratch, y: &mut [f32]) {
        let cols = self.w.cols();
        match &self.in_norm {
            Some(nm) => {
                let mut normed = std::mem::take(&mut s.normed);
                normed.resize(n_tok * cols, 0.0);
                ops::rmsnorm_rows(&x[..n_tok * cols], &nm.w, nm.eps, &mut normed);
                s.quantize(&normed, n_tok, cols);
                s.normed = normed;
            }
            None => s.quantize(x, n_tok, cols),
        }
        self.forward_quantized(n_tok, s, y);
    }

    /// `y = W · xq` for the `n_tok` rows that [`QuantScratch::quantize`] last wrote to `s` (so that
    /// projections of the same input, q/k/v and gate/up, quantize it once).
    ///
    /// # Panics
    /// If `s` does not hold `n_tok` rows of this matrix's width.
    pub fn forward_quantized(&self, n_tok: usize, s: &mut QuantScratch, y: &mut [f32]) {
        forward_many([self], n_tok, s, [y]);
    }
}

/// [`Linear::forward_quantized`] for several projections of the same quantized input at once (one
/// pool operation for q/k/v, one for gate/up). `ys[k]` receives `[n_tok, ls[k].rows]`.
fn forward_many<const K: usize>(ls: [&Linear; K], n_tok: usize, s: &mut QuantScratch, ys: [&mut [f32]; K]) {
    let cols = ls[0].w.cols();
    assert!(
        ls.iter().all(|l| l.w.cols() == cols) && s.xs.len() >= n_tok && s.xq.len() >= n_tok * cols,
        "projections of different widths, or the scratch holds fewer than {n_tok} quantized rows of {cols}"
    );
    let mut k = 0;
    let mut ys = ys.map(|y| {
        k += 1;
        &mut y[..n_tok * ls[k - 1].w.rows()]
    });
    let ws = ls.map(|l| &l.w);
    let QuantScratch { xq, xs, tmp, .. } = s;
    let views = ys.each_mut().map(|y| &mut **y);
    matmul::ternary_many(ws, &xq[..n_tok * cols], &xs[..n_tok], views, tmp);
    for (l, y) in ls.iter().zip(ys.iter_mut()) {
        if let Some(sc) = l.out_scale {
            y.iter_mut().for_each(|v| *v *= sc);
        }
    }
}

/// Buffers for activation quantization and blocked products, reused across calls.
#[derive(Default, Debug)]
pub struct QuantScratch {
    pub xq: Vec<i8>,
    pub xs: Vec<f32>,
    pub tmp: Vec<f32>,
    /// The input after a projection's own RMSNorm.
    pub normed: Vec<f32>,
}

impl QuantScratch {
    /// Quantizes `n_tok` rows of `cols` values of `x` to int8 (per-token absmax) into `xq` / `xs`.
    pub fn quantize(&mut self, x: &[f32], n_tok: usize, cols: usize) {
        self.xq.resize(n_tok * cols, 0);
        self.xs.resize(n_tok, 0.0);
        for t in 0..n_tok {
            self.xs[t] = quantize_row_i8(&x[t * cols..(t + 1) * cols], &mut self.xq[t * cols..(t + 1) * cols]);
        }
    }
}

/// One transformer block. The optional norms are those of [`crate::arch::BlockTraits`].
#[derive(Debug)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    /// Per-head RMSNorm of queries and keys before RoPE (Qwen3).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub attn_sub_norm: Option<Vec<f32>>,
    pub wo: Linear,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub ffn_sub_norm: Option<Vec<f32>>,
    pub w_down: Linear,
}

impl Layer {
    /// The seven projections.
    pub fn projections(&self) -> [&Linear; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }

    /// Every norm weight of the layer (for parameter counts).
    fn norm_params(&self) -> usize {
        let opt = |v: &Option<Vec<f32>>| v.as_ref().map_or(0, |v| v.len());
        self.attn_norm.len()
            + self.ffn_norm.len()
            + opt(&self.q_norm)
            + opt(&self.k_norm)
            + opt(&self.attn_sub_norm)
            + opt(&self.ffn_sub_norm)
            + self
                .projections()
                .iter()
                .map(|l| l.in_norm.as_ref().map_or(0, |n| n.w.len()))
                .sum::<usize>()
    }
}

/// A loaded model: configuration and weights (ternary weights stay packed, usually mmapped).
#[derive(Debug)]
pub struct BitNetModel {
    pub cfg: ModelConfig,
    pub embed: FloatMatrix,
    pub layers: Vec<Layer>,
    pub final_norm: Vec<f32>,
    /// The output head: the embedding matrix again when tied.
    pub head: FloatMatrix,
    /// Whether the file ties the head to the embedding (still true after `--head-type q8_0` gives the
    /// head a requantized copy of the table).
    pub tied_head: bool,
    pub rope: Rope,
    /// Element type of the KV caches that [`InferenceState::try_new`] creates (`--cache-type`).
    pub kv_type: KvType,
}

/// Which positions' logits a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsWanted {
    /// Only the last token's (generation).
    Last,
    /// Every token's (scoring, perplexity, `bitnet logits`).
    All,
    /// None: only fill the KV cache.
    None,
    /// The final-normed hidden state of every token instead of logits (`[n, hidden]`; embedding
    /// models pool these).
    Hidden,
}

/// Per-sequence state: the KV cache, the next position, and reusable buffers.
#[derive(Debug)]
pub struct InferenceState {
    pub cache: KvCache,
    pub pos: usize,
    ws: Workspace,
}

/// Activation buffers and logits of a forward call, reused across calls so steady-state decoding does
/// not allocate. Each [`InferenceState`] has one; batched decoding takes one of its own.
#[derive(Default, Debug)]
pub struct Workspace {
    buf: Buffers,
    logits: Vec<f32>,
}

impl Workspace {
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Default, Debug)]
struct Buffers {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// Attention scores, one row of cache-capacity length per parallel task.
    scores: AttnScratch,
    /// Sequence index (within the call) and position of each token.
    tok_seq: Vec<(usize, usize)>,
    quant: QuantScratch,
}

impl InferenceState {
    /// A fresh sequence whose cache holds `ctx` positions.
    ///
    /// # Panics
    /// If the cache cannot be allocated; use [`try_new`](Self::try_new) for a `ctx` from outside.
    pub fn new(model: &BitNetModel, ctx: usize) -> Self {
        Self::try_new(model, ctx).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`new`](Self::new), or an error (naming the context size) when the KV cache cannot be allocated.
    pub fn try_new(model: &BitNetModel, ctx: usize) -> Result<Self> {
        let c = &model.cfg;
        Ok(InferenceState {
            cache: KvCache::try_new(c.num_layers, c.kv_dim(), c.head_dim, ctx, model.kv_type)?,
            pos: 0,
            ws: Workspace::default(),
        })
    }

    /// Forgets the sequence (keeps the allocations).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Drops positions `n..` so that generation continues from position `n`.
    pub fn truncate(&mut self, n: usize) {
        self.pos = self.pos.min(n);
    }
}

/// Which sequences the tokens of one forward call belong to.
enum Seqs<'a, 'b> {
    /// All tokens continue one sequence, at consecutive positions from `pos`.
    One { cache: &'a mut KvCache, pos: usize },
    /// Span `i` is `lens[i]` consecutive tokens continuing sequence `i` from its position (`lens: None`:
    /// one token each, batched decoding). Prefill chunks and decoding steps of different sequences
    /// thus share one pass over the weights.
    Spans {
        states: &'a mut [&'b mut InferenceState],
        lens: Option<&'a [usize]>,
    },
}

impl Seqs<'_, '_> {
    fn span_len(lens: Option<&[usize]>, i: usize) -> usize {
        lens.map_or(1, |l| l[i])
    }
}

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

impl BitNetModel {
    /// Bytes of weights one decode step reads: every ternary matrix, the output head, one embedding
    /// row (what decoding speed is measured against).
    pub fn weight_bytes_per_token(&self) -> f64 {
        let mut b = 0usize;
        for l in &self.layers {
            for lin in l.projections() {
                b += lin.w.data().len();
            }
        }
        b += self.head.data().len();
        b += self.embed.data().len() / self.embed.rows().max(1);
        b as f64
    }

    /// Parameters: ternary weights, embedding, head when untied, norms.
    pub fn param_count(&self) -> f64 {
        let mut p = 0usize;
        for l in &self.layers {
            for lin in l.projections() {
                p += lin.w.rows() * lin.w.cols();
            }
            p += l.norm_params();
        }
        p += self.embed.rows() * self.embed.cols() + self.final_norm.len();
        if !self.tied_head {
            p += self.head.rows() * self.head.cols();
        }
        p as f64
    }

    /// Requantizes the output head to Q8_0 (`--head-type q8_0`): about half the bytes of an F16 head
    /// read per token, for slightly different logits. The embedding lookup keeps the file's table, so a
    /// tied model holds both (the extra memory is the Q8_0 copy). A head that is already Q8_0 is kept.
    pub fn requantize_head_q8_0(&mut self) -> Result<()> {
        if self.head.format() != bitnet_kernels::FloatFormat::Q8_0 {
            self.head = self
                .head
                .to_q8_0()
                .map_err(|e| anyhow::anyhow!("--head-type q8_0: output head: {e}"))?;
        }
        Ok(())
    }

    /// Runs `tokens` at positions `state.pos..`, appends them to the cache, and returns the wanted
    /// logits (`[n, vocab]`: n = 1 for `Last`, `tokens.len()` for `All`).
    pub fn forward<'s>(
        &self,
        tokens: &[u32],
        state: &'s mut InferenceState,
        wanted: LogitsWanted,
    ) -> Result<&'s [f32]> {
        let n = tokens.len();
        let pos = state.pos;
        if n == 0 {
            bail!("no tokens to evaluate");
        }
        if pos + n > state.cache.capacity() {
            bail!(
                "context is full: {pos} tokens in the cache + {n} new > context size {} (raise -c/--ctx-size)",
                state.cache.capacity()
            );
        }
        let InferenceState { cache, ws, .. } = state;
        self.run(tokens, Seqs::One { cache, pos }, ws, wanted)?;
        state.pos = pos + n;
        Ok(&state.ws.logits[..self.logits_len(n, wanted)])
    }

    /// One decoding step for several independent sequences at once: `tokens[i]` is appended to
    /// `states[i]` (each at its own position). The ternary weights are read once for the whole batch.
    /// Returns the logits `[n, vocab]`, row `i` for sequence `i`.
    pub fn forward_batch<'w>(
        &self,
        tokens: &[u32],
        states: &mut [&mut InferenceState],
        ws: &'w mut Workspace,
    ) -> Result<&'w [f32]> {
        if tokens.len() != states.len() {
            bail!("forward_batch: {} tokens for {} sequences", tokens.len(), states.len());
        }
        self.spans(tokens, states, None, ws)
    }

    /// Several sequences advanced together, each by its own number of tokens: sequence `i` takes the
    /// next `lens[i]` tokens of `tokens` (spans in order) at its own positions. Prompt chunks of new
    /// requests and single decoding steps of running ones thus share one pass over the weights
    /// (continuous batching with chunked prefill). Returns the logits of each span's last token,
    /// `[states.len(), vocab]`. Results equal running each sequence alone.
    pub fn forward_spans<'w>(
        &self,
        tokens: &[u32],
        states: &mut [&mut InferenceState],
        lens: &[usize],
        ws: &'w mut Workspace,
    ) -> Result<&'w [f32]> {
        if lens.len() != states.len() {
            bail!(
                "forward_spans: {} span lengths for {} sequences",
                lens.len(),
                states.len()
            );
        }
        if let Some(i) = lens.iter().position(|&l| l == 0) {
            bail!("forward_spans: span {i} has no tokens");
        }
        let total = lens.iter().try_fold(0usize, |a, &l| a.checked_add(l));
        if total != Some(tokens.len()) {
            bail!(
                "forward_spans: span lengths do not add up to the {} tokens",
                tokens.len()
            );
        }
        self.spans(tokens, states, Some(lens), ws)
    }

    fn spans<'w>(
        &self,
        tokens: &[u32],
        states: &mut [&mut InferenceState],
        lens: Option<&[usize]>,
        ws: &'w mut Workspace,
    ) -> Result<&'w [f32]> {
        if tokens.is_empty() || states.is_empty() {
            bail!("no tokens to evaluate");
        }
        for (i, s) in states.iter().enumerate() {
            let n = Seqs::span_len(lens, i);
            if s.pos + n > s.cache.capacity() {
                bail!(
                    "sequence {i}: context is full: {} tokens in the cache + {n} new > context size {}",
                    s.pos,
                    s.cache.capacity()
                );
            }
        }
        self.run(tokens, Seqs::Spans { states, lens }, ws, LogitsWanted::All)?;
        for (i, s) in states.iter_mut().enumerate() {
            s.pos += Seqs::span_len(lens, i);
        }
        Ok(&ws.logits[..self.head.rows() * states.len()])
    }

    fn logits_len(&self, n: usize, wanted: LogitsWanted) -> usize {
        match wanted {
            LogitsWanted::None => 0,
            LogitsWanted::Last => self.head.rows(),
            LogitsWanted::All => self.head.rows() * n,
            LogitsWanted::Hidden => self.cfg.hidden_size * n,
        }
    }

    /// The forward pass proper. Positions come from `seqs`; K/V are appended to the caches.
    fn run(&self, tokens: &[u32], mut seqs: Seqs<'_, '_>, ws: &mut Workspace, wanted: LogitsWanted) -> Result<()> {
        let c = &self.cfg;
        let n = tokens.len();
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            bail!("token id {bad} is out of range (vocabulary size {})", c.vocab_size);
        }
        let (h, qd, kvd, ffn) = (c.hidden_size, c.num_heads * c.head_dim, c.kv_dim(), c.intermediate_size);
        let b = &mut ws.buf;
        b.tok_seq.clear();
        match &seqs {
            Seqs::One { pos, .. } => b.tok_seq.extend((0..n).map(|t| (0, pos + t))),
            Seqs::Spans { states, lens } => {
                for (i, s) in states.iter().enumerate() {
                    b.tok_seq.extend((0..Seqs::span_len(*lens, i)).map(|o| (i, s.pos + o)));
                }
            }
        }
        if b.tok_seq.len() != n {
            bail!("internal error: {} token positions for {n} tokens", b.tok_seq.len());
        }
        let x = grow(&mut b.x, n * h);
        for (t, &id) in tokens.iter().enumerate() {
            self.embed.dequantize_row(id as usize, &mut x[t * h..(t + 1) * h]);
        }
        // RoPE angles of each token's position, shared by all layers.
        let half = self.rope.half();
        grow(&mut b.cos, n * half);
        grow(&mut b.sin, n * half);
        for t in 0..n {
            let p = b.tok_seq[t].1;
            self.rope.angles(
                p,
                &mut b.cos[t * half..(t + 1) * half],
                &mut b.sin[t * half..(t + 1) * half],
            );
        }
        let shape = AttnShape {
            n_heads: c.num_heads,
            n_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
        };
        let (rope_layout, hd) = (c.rope_layout, c.head_dim);
        for (li, l) in self.layers.iter().enumerate() {
            let x = &mut b.x[..n * h];
            let xn = grow(&mut b.xn, n * h.max(qd));
            ops::rmsnorm_rows(x, &l.attn_norm, c.rms_eps, &mut xn[..n * h]);
            grow(&mut b.q, n * qd);
            grow(&mut b.k, n * kvd);
            grow(&mut b.v, n * kvd);
            if l.wq.in_norm.is_some() || l.wk.in_norm.is_some() || l.wv.in_norm.is_some() {
                // Each projection normalizes and quantizes the input its own way.
                l.wq.forward(&b.xn[..n * h], n, &mut b.quant, &mut b.q);
                l.wk.forward(&b.xn[..n * h], n, &mut b.quant, &mut b.k);
                l.wv.forward(&b.xn[..n * h], n, &mut b.quant, &mut b.v);
            } else {
                b.quant.quantize(&b.xn[..n * h], n, h);
                forward_many([&l.wq, &l.wk, &l.wv], n, &mut b.quant, [&mut b.q, &mut b.k, &mut b.v]);
            }
            if let Some(qn) = &l.q_norm {
                b.q[..n * qd]
                    .chunks_exact_mut(hd)
                    .for_each(|head| ops::rmsnorm_in_place(head, qn, c.rms_eps));
            }
            if let Some(kn) = &l.k_norm {
                b.k[..n * kvd]
                    .chunks_exact_mut(hd)
                    .for_each(|head| ops::rmsnorm_in_place(head, kn, c.rms_eps));
            }
            for t in 0..n {
                let (cs, sn) = (&b.cos[t * half..(t + 1) * half], &b.sin[t * half..(t + 1) * half]);
                let heads = b.q[t * qd..(t + 1) * qd]
                    .chunks_exact_mut(hd)
                    .chain(b.k[t * kvd..(t + 1) * kvd].chunks_exact_mut(hd));
                for head in heads {
                    match rope_layout {
                        RopeLayout::HalfSplit => ops::rope_head(head, cs, sn),
                        RopeLayout::Interleaved => ops::rope_head_interleaved(head, cs, sn),
                    }
                }
            }
            let attn = grow(&mut b.attn, n * qd);
            match &mut seqs {
                Seqs::One { cache, pos } => {
                    cache.store(li, *pos, &b.k[..n * kvd], &b.v[..n * kvd]);
                    let kv = cache.layer(li, *pos + n);
                    b.scores.reserve(cache.capacity());
                    attention::attention_with(&b.q[..n * qd], kv, *pos, n, shape, attn, &mut b.scores);
                }
                Seqs::Spans { states, lens } => {
                    let mut t0 = 0;
                    for (i, s) in states.iter_mut().enumerate() {
                        let len = Seqs::span_len(*lens, i);
                        let (k, v) = (&b.k[t0 * kvd..(t0 + len) * kvd], &b.v[t0 * kvd..(t0 + len) * kvd]);
                        s.cache.store(li, s.pos, k, v);
                        t0 += len;
                    }
                    let states: &[&mut InferenceState] = states;
                    let tok_seq = &b.tok_seq;
                    let max_n = tok_seq.iter().map(|&(_, p)| p + 1).max().unwrap_or(1);
                    let reserve = states.iter().map(|s| s.cache.capacity()).max().unwrap_or(1);
                    // Token t at position p attends to positions 0..=p of its own sequence (causal
                    // within a prefill chunk: later tokens of the chunk are in the cache but not read).
                    let kv = |t: usize| {
                        let (i, p) = tok_seq[t];
                        (states[i].cache.layer(li, p + 1), p + 1)
                    };
                    b.scores.reserve(reserve);
                    attention::attention_batch(&b.q[..n * qd], n, kv, max_n, shape, attn, &mut b.scores);
                }
            }
            let proj = grow(&mut b.proj, n * h);
            match &l.attn_sub_norm {
                Some(sub) => {
                    ops::rmsnorm_rows(&b.attn[..n * qd], sub, c.rms_eps, &mut b.xn[..n * qd]);
                    l.wo.forward(&b.xn, n, &mut b.quant, proj);
                }
                None => l.wo.forward(&b.attn, n, &mut b.quant, proj),
            }
            for (xi, pi) in b.x[..n * h].iter_mut().zip(&b.proj[..n * h]) {
                *xi += pi;
            }
            ops::rmsnorm_rows(&b.x[..n * h], &l.ffn_norm, c.rms_eps, &mut b.xn[..n * h]);
            grow(&mut b.gate, n * ffn);
            grow(&mut b.up, n * ffn);
            if l.w_gate.in_norm.is_some() || l.w_up.in_norm.is_some() {
                l.w_gate.forward(&b.xn[..n * h], n, &mut b.quant, &mut b.gate);
                l.w_up.forward(&b.xn[..n * h], n, &mut b.quant, &mut b.up);
            } else {
                b.quant.quantize(&b.xn[..n * h], n, h);
                forward_many([&l.w_gate, &l.w_up], n, &mut b.quant, [&mut b.gate, &mut b.up]);
            }
            let act = c.ffn_act;
            for (g, u) in b.gate[..n * ffn].iter_mut().zip(&b.up[..n * ffn]) {
                *g = act.apply(*g) * u;
            }
            match &l.ffn_sub_norm {
                Some(sub) => {
                    // ffn_sub_norm output reuses `up` (same width).
                    ops::rmsnorm_rows(&b.gate[..n * ffn], sub, c.rms_eps, &mut b.up[..n * ffn]);
                    l.w_down.forward(&b.up, n, &mut b.quant, &mut b.proj[..n * h]);
                }
                None => l.w_down.forward(&b.gate, n, &mut b.quant, &mut b.proj[..n * h]),
            }
            for (xi, pi) in b.x[..n * h].iter_mut().zip(&b.proj[..n * h]) {
                *xi += pi;
            }
        }
        // The rows whose logits are wanted, final-normed into xn.
        let m = match (&seqs, wanted) {
            (_, LogitsWanted::None) => return Ok(()),
            (_, LogitsWanted::Hidden) => {
                let out = grow(&mut ws.logits, n * h);
                ops::rmsnorm_rows(&b.x[..n * h], &self.final_norm, c.rms_eps, out);
                return Ok(());
            }
            (Seqs::Spans { states, lens }, _) => {
                let xn = grow(&mut b.xn, states.len() * h);
                let mut end = 0;
                for i in 0..states.len() {
                    end += Seqs::span_len(*lens, i);
                    let row = &b.x[(end - 1) * h..end * h];
                    ops::rmsnorm_rows(row, &self.final_norm, c.rms_eps, &mut xn[i * h..(i + 1) * h]);
                }
                states.len()
            }
            (Seqs::One { .. }, LogitsWanted::Last) => {
                let xn = grow(&mut b.xn, h);
                ops::rmsnorm_rows(&b.x[(n - 1) * h..n * h], &self.final_norm, c.rms_eps, xn);
                1
            }
            (Seqs::One { .. }, LogitsWanted::All) => {
                let xn = grow(&mut b.xn, n * h);
                ops::rmsnorm_rows(&b.x[..n * h], &self.final_norm, c.rms_eps, xn);
                n
            }
        };
        let vocab = self.head.rows();
        let logits = grow(&mut ws.logits, m * vocab);
        matmul::float(&self.head, &b.xn[..m * h], m, logits, &mut b.quant.tmp);
        Ok(())
    }
}
