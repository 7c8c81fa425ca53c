//! Module-level exactness: each module of the hf-bf16 model is fed the input that transformers recorded
//! (`reference/trace/*.npy`, teacher forcing) and must reproduce the recorded output to 1e-5 relative.
//! This isolates every operation from the int8 rounding-tie cascade that end-to-end logits suffer.

mod common;
use common::*;

use bitnet_kernels::ops::attention::{attention, AttnShape};
use bitnet_model::ops;
use bitnet_model::QuantScratch;
use bitnet_tools::npy;

const TOL: f32 = 1e-5;

fn trace(name: &str) -> Vec<f32> {
    npy::read_f32(&fixture(&format!("reference/trace/{name}.npy")))
        .expect("trace file")
        .1
}

fn rel(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len());
    let m = reference.iter().fold(0f32, |a, &b| a.max(b.abs())).max(1e-30);
    ours.iter().zip(reference).fold(0f32, |a, (x, y)| a.max((x - y).abs())) / m
}

fn check(what: &str, ours: &[f32], reference: &[f32]) {
    let r = rel(ours, reference);
    eprintln!("{what}: rel {r:.2e}");
    assert!(r < TOL, "{what}: relative error {r:e} >= {TOL:e}");
}

#[test]
fn every_module_matches_the_transformers_trace() {
    let (m, _) = load_fixture("hf-bf16", None);
    let c = m.cfg.clone();
    let ids = ids(&json("reference/input.json")["ids"]);
    let n = ids.len();
    let (h, qd, kvd, ffn) = (c.hidden_size, c.num_heads * c.head_dim, c.kv_dim(), c.intermediate_size);
    let mut qs = QuantScratch::default();
    // Embedding lookup feeds layer 0.
    let mut x = vec![0.0f32; n * h];
    for (t, &id) in ids.iter().enumerate() {
        m.embed.dequantize_row(id as usize, &mut x[t * h..(t + 1) * h]);
    }
    for (i, l) in m.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let t = |s: &str| trace(&format!("{p}.{s}"));
        let mut o = vec![0.0f32; n * h];
        ops::rmsnorm_rows(&x, &l.attn_norm, c.rms_eps, &mut o);
        check(&format!("{p}.input_layernorm"), &o, &t("input_layernorm"));
        let xin = t("input_layernorm");
        let mut q = vec![0.0f32; n * qd];
        l.wq.forward(&xin, n, &mut qs, &mut q);
        check(&format!("{p}.q_proj"), &q, &t("self_attn.q_proj"));
        let mut k = vec![0.0f32; n * kvd];
        l.wk.forward(&xin, n, &mut qs, &mut k);
        check(&format!("{p}.k_proj"), &k, &t("self_attn.k_proj"));
        let mut v = vec![0.0f32; n * kvd];
        l.wv.forward(&xin, n, &mut qs, &mut v);
        check(&format!("{p}.v_proj"), &v, &t("self_attn.v_proj"));
        // Attention (RoPE + softmax + values) from the traced q/k/v.
        let (mut q, mut k, v) = (t("self_attn.q_proj"), t("self_attn.k_proj"), t("self_attn.v_proj"));
        let half = c.rope_dim / 2;
        let (mut cs, mut sn) = (vec![0.0; half], vec![0.0; half]);
        for pos in 0..n {
            m.rope.angles(pos, &mut cs, &mut sn);
            for hd in q[pos * qd..(pos + 1) * qd].chunks_exact_mut(c.head_dim) {
                ops::rope_head(hd, &cs, &sn);
            }
            for hd in k[pos * kvd..(pos + 1) * kvd].chunks_exact_mut(c.head_dim) {
                ops::rope_head(hd, &cs, &sn);
            }
        }
        let mut a = vec![0.0f32; n * qd];
        let shape = AttnShape {
            n_heads: c.num_heads,
            n_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
        };
        attention(&q, &k, &v, 0, n, shape, &mut a);
        check(&format!("{p}.attention"), &a, &t("self_attn.attn_sub_norm.in"));
        let mut an = vec![0.0f32; n * qd];
        ops::rmsnorm_rows(
            &t("self_attn.attn_sub_norm.in"),
            l.attn_sub_norm.as_ref().expect("sub-norm"),
            c.rms_eps,
            &mut an,
        );
        check(&format!("{p}.attn_sub_norm"), &an, &t("self_attn.attn_sub_norm"));
        let mut op = vec![0.0f32; n * h];
        l.wo.forward(&t("self_attn.attn_sub_norm"), n, &mut qs, &mut op);
        check(&format!("{p}.o_proj"), &op, &t("self_attn.o_proj"));
        let r: Vec<f32> = x.iter().zip(t("self_attn.o_proj")).map(|(a, b)| a + b).collect();
        ops::rmsnorm_rows(&r, &l.ffn_norm, c.rms_eps, &mut o);
        check(
            &format!("{p}.post_attention_layernorm"),
            &o,
            &t("post_attention_layernorm"),
        );
        let hin = t("post_attention_layernorm");
        let mut g = vec![0.0f32; n * ffn];
        l.w_gate.forward(&hin, n, &mut qs, &mut g);
        check(&format!("{p}.gate_proj"), &g, &t("mlp.gate_proj"));
        let mut u = vec![0.0f32; n * ffn];
        l.w_up.forward(&hin, n, &mut qs, &mut u);
        check(&format!("{p}.up_proj"), &u, &t("mlp.up_proj"));
        let act: Vec<f32> = t("mlp.gate_proj")
            .iter()
            .zip(t("mlp.up_proj"))
            .map(|(&g, u)| c.ffn_act.apply(g) * u)
            .collect();
        check(&format!("{p}.relu2(gate)*up"), &act, &t("mlp.ffn_sub_norm.in"));
        let mut mn = vec![0.0f32; n * ffn];
        ops::rmsnorm_rows(
            &t("mlp.ffn_sub_norm.in"),
            l.ffn_sub_norm.as_ref().expect("sub-norm"),
            c.rms_eps,
            &mut mn,
        );
        check(&format!("{p}.ffn_sub_norm"), &mn, &t("mlp.ffn_sub_norm"));
        let mut d = vec![0.0f32; n * h];
        l.w_down.forward(&t("mlp.ffn_sub_norm"), n, &mut qs, &mut d);
        check(&format!("{p}.down_proj"), &d, &t("mlp.down_proj"));
        x = trace(&p);
    }
    let mut o = vec![0.0f32; n * h];
    ops::rmsnorm_rows(&x, &m.final_norm, c.rms_eps, &mut o);
    check("model.norm", &o, &trace("model.norm"));
}
