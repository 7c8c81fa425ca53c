//! Helpers shared by the fixture tests: paths, reference files, and the agreement metrics the fixture
//! README prescribes (mean KL of the softmax, top-1 agreement where the reference is decisive).
#![allow(dead_code)]

use std::path::PathBuf;

use bitnet_model::{load, BitNetModel, FfnActivation, InferenceState, LoadOptions, LogitsWanted};
use bitnet_tokenizer::Tokenizer;
use bitnet_tools::npy;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-a")
        .join(rel)
}

pub fn json(rel: &str) -> serde_json::Value {
    let p = fixture(rel);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// `[rows, cols]` float32 reference array.
pub fn npy2(rel: &str) -> (usize, usize, Vec<f32>) {
    let (shape, data) = npy::read_f32(&fixture(rel)).expect("reading reference npy");
    assert_eq!(shape.len(), 2, "{rel}: expected 2-D, got {shape:?}");
    (shape[0], shape[1], data)
}

pub fn load_fixture(rel: &str, act: Option<FfnActivation>) -> (BitNetModel, Tokenizer) {
    load(&fixture(rel), &LoadOptions { ffn_act: act }).unwrap_or_else(|e| panic!("loading {rel}: {e:#}"))
}

/// Logits `[ids.len(), vocab]` of one forward pass over `ids`.
pub fn all_logits(m: &BitNetModel, ids: &[u32]) -> Vec<f32> {
    let mut st = InferenceState::new(m, ids.len());
    m.forward(ids, &mut st, LogitsWanted::All).expect("forward").to_vec()
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// KL(softmax(reference) || softmax(ours)) of one position.
pub fn kl(reference: &[f32], ours: &[f32]) -> f64 {
    let (lr, lo) = (log_softmax(reference), log_softmax(ours));
    lr.iter().zip(&lo).map(|(a, b)| a.exp() * (a - b)).sum()
}

pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Gap between the largest and the second largest value.
pub fn top_gap(x: &[f32]) -> f32 {
    let a = argmax(x);
    let second = x
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != a)
        .map(|(_, &v)| v)
        .fold(f32::NEG_INFINITY, f32::max);
    x[a] - second
}

/// Agreement of two `[n, vocab]` logit arrays.
#[derive(Debug)]
pub struct Agreement {
    pub kl_mean: f64,
    pub kl_max: f64,
    pub rel_all: f32,
    pub top1_all: f64,
    /// Positions where the reference's top-1/top-2 gap exceeds the threshold but top-1 differs.
    pub decisive_mismatches: Vec<usize>,
}

pub fn agreement(reference: &[f32], ours: &[f32], vocab: usize, gap_threshold: f32) -> Agreement {
    assert_eq!(reference.len(), ours.len(), "logit arrays differ in size");
    let n = reference.len() / vocab;
    let (mut kls, mut top1, mut bad) = (Vec::new(), 0usize, Vec::new());
    let ref_max = reference.iter().fold(0f32, |a, &b| a.max(b.abs()));
    let diff_max = reference
        .iter()
        .zip(ours)
        .fold(0f32, |a, (&r, &o)| a.max((r - o).abs()));
    for p in 0..n {
        let (r, o) = (
            &reference[p * vocab..(p + 1) * vocab],
            &ours[p * vocab..(p + 1) * vocab],
        );
        kls.push(kl(r, o));
        let same = argmax(r) == argmax(o);
        top1 += same as usize;
        if !same && top_gap(r) > gap_threshold {
            bad.push(p);
        }
    }
    Agreement {
        kl_mean: kls.iter().sum::<f64>() / n as f64,
        kl_max: kls.iter().cloned().fold(0.0, f64::max),
        rel_all: diff_max / ref_max,
        top1_all: top1 as f64 / n as f64,
        decisive_mismatches: bad,
    }
}

/// Greedy decoding with the KV cache: the prefix in one forward pass, then one token at a time.
pub fn greedy(m: &BitNetModel, prefix: &[u32], n: usize) -> Vec<u32> {
    let mut st = InferenceState::new(m, prefix.len() + n + 1);
    let mut logits = m
        .forward(prefix, &mut st, LogitsWanted::Last)
        .expect("prefill")
        .to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = argmax(&logits) as u32;
        out.push(t);
        logits = m.forward(&[t], &mut st, LogitsWanted::Last).expect("decode").to_vec();
    }
    out
}

/// Index of the first step where the reference's top-1/top-2 gap is below `threshold` (greedy
/// continuations may legitimately diverge from there on).
pub fn fragile_from(gaps: &[f32], threshold: f32) -> usize {
    gaps.iter().position(|&g| g < threshold).unwrap_or(gaps.len())
}

/// A file of another fixture set (`llama-b158-a`, `bitnet-1bitllm-a`, `embed-qwen3-a`).
pub fn fixture_in(set: &str, rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(set)
        .join(rel)
}

pub fn json_in(set: &str, rel: &str) -> serde_json::Value {
    let p = fixture_in(set, rel);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `[rows, cols]` float32 array of another fixture set.
pub fn npy2_in(set: &str, rel: &str) -> (usize, usize, Vec<f32>) {
    let (shape, data) = npy::read_f32(&fixture_in(set, rel)).expect("reading reference npy");
    assert_eq!(shape.len(), 2, "{rel}: expected 2-D, got {shape:?}");
    (shape[0], shape[1], data)
}

pub fn load_in(set: &str, rel: &str) -> (BitNetModel, Tokenizer) {
    load(&fixture_in(set, rel), &LoadOptions::default()).unwrap_or_else(|e| panic!("loading {set}/{rel}: {e:#}"))
}
