//! Per-layer error on a calibration text, teacher-forced: every layer gets the input the full-precision
//! model gives it, and runs three ways:
//!
//! 1. master weights, float activations (the full-precision reference);
//! 2. ternary weights (`codes * scale`), float activations;
//! 3. ternary weights, int8 per-token activations (the engine's own kernels: what inference computes).
//!
//! What is compared is the layer's branch output `layer(x) - x` (attention and FFN contributions), since
//! the residual stream itself would hide the error.

use std::path::Path;

use anyhow::{Context, Result};
use bitnet_kernels::ops::attention::{attention, AttnShape};
use bitnet_model::arch::RopeLayout;
use bitnet_model::load_hf::{self, Checkpoint};
use bitnet_model::ops;
use bitnet_model::{BitNetModel, Layer, Linear, QuantScratch};
use rayon::prelude::*;

use super::{projections, sqnr_cos, LayerError};
use crate::progress;

/// A dense f32 matrix `[rows, cols]`.
struct Dense {
    rows: usize,
    cols: usize,
    w: Vec<f32>,
}

impl Dense {
    /// `y[t, r] = dot(x[t, :], w[r, :])` for `n` rows of `x`.
    fn matmul(&self, x: &[f32], n: usize, y: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        y[..n * rows].par_chunks_mut(rows).enumerate().for_each(|(t, yr)| {
            let xr = &x[t * cols..(t + 1) * cols];
            for (r, o) in yr.iter_mut().enumerate() {
                let wr = &self.w[r * cols..(r + 1) * cols];
                *o = wr.iter().zip(xr).map(|(a, b)| a * b).sum();
            }
        });
    }
}

/// How a layer's projections are computed.
enum Mode<'a> {
    Float([&'a Dense; 7]),
    Engine,
}

fn masters(ck: &Checkpoint, layer: usize, dims: (usize, usize, usize, usize)) -> Result<Vec<Dense>> {
    let (h, qd, kvd, ffn) = dims;
    projections(h, qd, kvd, ffn)
        .iter()
        .map(|&(hf, _, rows, cols)| {
            let name = format!("model.layers.{layer}.{hf}.weight");
            let m = ck.float_matrix(&name, rows, cols)?;
            let mut w = vec![0f32; rows * cols];
            for (r, row) in w.chunks_exact_mut(cols).enumerate() {
                m.dequantize_row(r, row);
            }
            Ok(Dense { rows, cols, w })
        })
        .collect()
}

fn ternary_dense(lin: &Linear) -> Dense {
    let (rows, cols) = (lin.w.rows(), lin.w.cols());
    let mut w = vec![0f32; rows * cols];
    let mut codes = vec![0i8; cols];
    let mut scales = vec![0f32; cols.div_ceil(lin.w.block_size())];
    let os = lin.out_scale.unwrap_or(1.0);
    for r in 0..rows {
        lin.w.row_codes(r, &mut codes);
        lin.w.row_scales(r, &mut scales);
        let bs = lin.w.block_size();
        for (j, (o, &c)) in w[r * cols..(r + 1) * cols].iter_mut().zip(&codes).enumerate() {
            *o = c as f32 * scales[j / bs] * os;
        }
    }
    Dense { rows, cols, w }
}

fn seven(v: &[Dense]) -> [&Dense; 7] {
    std::array::from_fn(|j| &v[j])
}

fn linears(l: &Layer) -> [&Linear; 7] {
    [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
}

/// One layer on `n` tokens at positions `0..n`; returns the branch output `layer(x) - x`.
fn layer_branch(model: &BitNetModel, l: &Layer, x: &[f32], n: usize, mode: &Mode) -> Vec<f32> {
    let c = &model.cfg;
    let (h, qd, kvd, ffn) = (c.hidden_size, c.num_heads * c.head_dim, c.kv_dim(), c.intermediate_size);
    let lins = linears(l);
    let mut scratch = QuantScratch::default();
    let mut proj = |i: usize, inp: &[f32], out: &mut [f32]| match mode {
        Mode::Float(d) => match &lins[i].in_norm {
            // The projection's own input norm, then the float product.
            Some(nm) => {
                let mut normed = vec![0f32; inp.len()];
                ops::rmsnorm_rows(inp, &nm.w, nm.eps, &mut normed);
                d[i].matmul(&normed, n, out)
            }
            None => d[i].matmul(inp, n, out),
        },
        Mode::Engine => lins[i].forward(inp, n, &mut scratch, out),
    };
    let mut xn = vec![0f32; n * h];
    ops::rmsnorm_rows(x, &l.attn_norm, c.rms_eps, &mut xn);
    let (mut q, mut k, mut v) = (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
    proj(0, &xn, &mut q);
    proj(1, &xn, &mut k);
    proj(2, &xn, &mut v);
    if let Some(qn) = &l.q_norm {
        q.chunks_exact_mut(c.head_dim)
            .for_each(|hd| ops::rmsnorm_in_place(hd, qn, c.rms_eps));
    }
    if let Some(kn) = &l.k_norm {
        k.chunks_exact_mut(c.head_dim)
            .for_each(|hd| ops::rmsnorm_in_place(hd, kn, c.rms_eps));
    }
    let half = model.rope.half();
    let (mut cs, mut sn) = (vec![0f32; half], vec![0f32; half]);
    let rope = |head: &mut [f32], cs: &[f32], sn: &[f32]| match c.rope_layout {
        RopeLayout::HalfSplit => ops::rope_head(head, cs, sn),
        RopeLayout::Interleaved => ops::rope_head_interleaved(head, cs, sn),
    };
    for t in 0..n {
        model.rope.angles(t, &mut cs, &mut sn);
        for hq in q[t * qd..(t + 1) * qd].chunks_exact_mut(c.head_dim) {
            rope(hq, &cs, &sn);
        }
        for hk in k[t * kvd..(t + 1) * kvd].chunks_exact_mut(c.head_dim) {
            rope(hk, &cs, &sn);
        }
    }
    let shape = AttnShape {
        n_heads: c.num_heads,
        n_kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
    };
    let mut attn = vec![0f32; n * qd];
    attention(&q, &k, &v, 0, n, shape, &mut attn);
    let mut an = attn.clone();
    if let Some(sub) = &l.attn_sub_norm {
        ops::rmsnorm_rows(&attn, sub, c.rms_eps, &mut an);
    }
    let mut o = vec![0f32; n * h];
    proj(3, &an, &mut o);
    let x1: Vec<f32> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
    let mut xn2 = vec![0f32; n * h];
    ops::rmsnorm_rows(&x1, &l.ffn_norm, c.rms_eps, &mut xn2);
    let (mut g, mut u) = (vec![0f32; n * ffn], vec![0f32; n * ffn]);
    proj(4, &xn2, &mut g);
    proj(5, &xn2, &mut u);
    let hid: Vec<f32> = g.iter().zip(&u).map(|(&a, &b)| c.ffn_act.apply(a) * b).collect();
    let mut hn = hid.clone();
    if let Some(sub) = &l.ffn_sub_norm {
        ops::rmsnorm_rows(&hid, sub, c.rms_eps, &mut hn);
    }
    let mut d = vec![0f32; n * h];
    proj(6, &hn, &mut d);
    // branch = o + d  (layer(x) = x + o + d)
    o.iter().zip(&d).map(|(a, b)| a + b).collect()
}

/// Branch output `layer(x) - x` of layer `li` as the engine computes it (ternary weights, int8 activations).
pub fn engine_branch(model: &BitNetModel, li: usize, x: &[f32], n: usize) -> Vec<f32> {
    layer_branch(model, &model.layers[li], x, n, &Mode::Engine)
}

/// Branch output of layer `li` with the ternary weights as floats (`codes * scale`) and float activations.
pub fn ternary_float_branch(model: &BitNetModel, li: usize, x: &[f32], n: usize) -> Vec<f32> {
    let l = &model.layers[li];
    let tern: Vec<Dense> = linears(l).iter().map(|lin| ternary_dense(lin)).collect();
    layer_branch(model, l, x, n, &Mode::Float(seven(&tern)))
}

/// Runs the calibration tokens through every layer three ways (see the module docs).
pub fn layer_errors(model_dir: &Path, tokens: &[u32], quiet: bool) -> Result<Vec<LayerError>> {
    let (model, _) = load_hf::load(model_dir, None)?;
    let ck = Checkpoint::open(model_dir)?;
    let c = &model.cfg;
    let n = tokens.len();
    let h = c.hidden_size;
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
        anyhow::bail!("calibration token {bad} is outside the vocabulary ({})", c.vocab_size);
    }
    let dims = (h, c.num_heads * c.head_dim, c.kv_dim(), c.intermediate_size);
    let mut x = vec![0f32; n * h];
    for (t, &id) in tokens.iter().enumerate() {
        model.embed.dequantize_row(id as usize, &mut x[t * h..(t + 1) * h]);
    }
    let pb = progress::bar(c.num_layers as u64, "layers", quiet);
    let mut out = Vec::with_capacity(c.num_layers);
    for (i, l) in model.layers.iter().enumerate() {
        let fp = masters(&ck, i, dims).with_context(|| format!("master weights of layer {i}"))?;
        let tern: Vec<Dense> = linears(l).iter().map(|lin| ternary_dense(lin)).collect();
        let b_fp = layer_branch(&model, l, &x, n, &Mode::Float(seven(&fp)));
        let b_tw = layer_branch(&model, l, &x, n, &Mode::Float(seven(&tern)));
        let b_ti = layer_branch(&model, l, &x, n, &Mode::Engine);
        let (sqnr_weights_db, _) = sqnr_cos(&b_fp, &b_tw);
        let (sqnr_acts_db, _) = sqnr_cos(&b_tw, &b_ti);
        let (sqnr_total_db, cosine_total) = sqnr_cos(&b_fp, &b_ti);
        out.push(LayerError {
            layer: i,
            sqnr_weights_db,
            sqnr_acts_db,
            sqnr_total_db,
            cosine_total,
        });
        // Teacher forcing: the next layer sees the full-precision stream.
        x.iter_mut().zip(&b_fp).for_each(|(a, b)| *a += b);
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(out)
}
