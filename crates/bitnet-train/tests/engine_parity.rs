//! A model trained by `bitnet-train`, saved as a Hugging Face folder and exported to GGUF I2_S, gives
//! in the inference engine (`bitnet-model`) the logits of the training forward pass: same top-1 token
//! wherever the margin is clear and a tiny mean KL divergence (int8 rounding ties can flip a code; see
//! tests/fixtures/tiny-a/README.md). The GGUF tokenizer also encodes like the HF one.

use std::path::PathBuf;

use anyhow::Result;
use bitnet_model::{InferenceState, LoadOptions, LogitsWanted};
use bitnet_train::checkpoint::round_bf16;
use bitnet_train::model::{ModelDims, TrainModel};
use bitnet_train::trainer::{run_loop, LoopControl, TrainOptions, Trainer};
use bitnet_train::{corpus, data, export, tokenizer};
use candle_core::DType;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bitnet-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// Mean KL(ref || got) over rows, and the number of clear-margin rows whose top-1 differs.
fn compare(reference: &[f32], got: &[f32], vocab: usize) -> (f64, usize) {
    let mut kl = 0.0;
    let mut bad = 0;
    let rows = reference.len() / vocab;
    for r in 0..rows {
        let (a, b) = (&reference[r * vocab..(r + 1) * vocab], &got[r * vocab..(r + 1) * vocab]);
        let (la, lb) = (log_softmax(a), log_softmax(b));
        kl += la.iter().zip(&lb).map(|(p, q)| p.exp() * (p - q)).sum::<f64>();
        let mut idx: Vec<usize> = (0..vocab).collect();
        idx.sort_by(|&i, &j| a[j].total_cmp(&a[i]));
        let top_b = (0..vocab).max_by(|&i, &j| b[i].total_cmp(&b[j])).unwrap_or(0);
        if a[idx[0]] - a[idx[1]] > 0.3 && top_b != idx[0] {
            bad += 1;
        }
    }
    (kl / rows as f64, bad)
}

#[test]
fn trained_model_runs_in_the_engine_with_training_logits() -> Result<()> {
    let dir = tmp("parity");
    let docs = data::documents(&corpus::generate(11, 600));
    let (train_docs, val_docs) = data::split_docs(docs, 10);
    tokenizer::train_bpe(&train_docs, 400, &dir)?;
    let tok = bitnet_tokenizer::Tokenizer::from_hf_dir(&dir)?;
    let train = data::encode_stream(&tok, &train_docs)?;
    let val_stream = data::encode_stream(&tok, &val_docs)?;
    let opts = TrainOptions {
        dims: ModelDims {
            hidden: 128,
            intermediate: 256,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: tok.vocab_size(),
            context: 64,
            rope_theta: 10000.0,
            rms_eps: 1e-5,
        },
        batch: 8,
        seq: 32,
        accum: 1,
        steps: 25,
        lr: 3e-3,
        warmup: 5,
        weight_decay: 0.1,
        clip: 1.0,
        val_every: 0,
        val_windows: 4,
        save_every: 0,
        seed: 3,
    };
    let mut tr = Trainer::new(opts.clone())?;
    let val = data::val_windows(&val_stream, 32, 4);
    let ctl = LoopControl {
        out: &dir,
        bos: tok.bos_id().unwrap_or(0),
        eos: tok.eos_id().unwrap_or(1),
        stop_at: None,
        log_every: 0,
        show_progress: false,
    };
    run_loop(&mut tr, &train, &val, &ctl)?;
    let first = tr.state.history[0].loss;
    let last = tr.state.history.last().map_or(f64::NAN, |h| h.loss);
    assert!(last < first - 0.5, "training did not learn: {first} -> {last}");

    // What the checkpoint holds: bf16-rounded masters.
    let values: Vec<_> = tr
        .values()
        .into_iter()
        .map(|(n, s, v)| (n, s, round_bf16(&v)))
        .collect();
    let gguf = dir.join("model-i2_s.gguf");
    export::write_gguf(&opts.dims, &values, &dir.join("tokenizer.json"), "parity", &gguf)?;
    let ours = TrainModel::from_values(opts.dims.clone(), values, DType::F32)?;
    let ids: Vec<u32> = val_stream[..48].to_vec();
    let want = ours.forward(&ids, 1, ids.len())?.flatten_all()?.to_vec1::<f32>()?;
    let vocab = opts.dims.vocab;

    for path in [dir.clone(), gguf.clone()] {
        let (model, etok) = bitnet_model::load(&path, &LoadOptions::default())?;
        assert_eq!(model.cfg.vocab_size, vocab);
        let mut st = InferenceState::new(&model, 64);
        let got = model.forward(&ids, &mut st, LogitsWanted::All)?.to_vec();
        let (kl, bad) = compare(&want, &got, vocab);
        assert!(
            kl < 2e-3 && bad == 0,
            "{}: mean KL {kl:e}, {bad} top-1 flips",
            path.display()
        );
        let text = "Lily saw an owl at the park. User: What is two plus three?<|eot_id|>";
        assert_eq!(
            etok.encode(text, true)?,
            tok.encode(text, true)?,
            "{}: tokenizer",
            path.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
