//! Trains the demo model without the CLI (same pipeline and settings as `scripts/train-demo.sh`, which
//! uses `bitnet train`): `cargo run --release -p bitnet-train --example train_demo -- WORK_DIR STEPS`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bitnet_train::model::ModelDims;
use bitnet_train::pipeline::{run, RunSpec};
use bitnet_train::trainer::TrainOptions;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let work = PathBuf::from(args.next().unwrap_or_else(|| "target/demo-train".into()));
    let steps: u64 = args.next().unwrap_or_else(|| "1000".into()).parse().context("STEPS")?;
    std::fs::create_dir_all(&work)?;
    let corpus = work.join("corpus.txt");
    std::fs::write(&corpus, bitnet_train::corpus::generate(1, 40000))?;
    let dims = ModelDims {
        hidden: 256,
        intermediate: 768,
        layers: 5,
        heads: 4,
        kv_heads: 2,
        vocab: 1024,
        context: 256,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
    };
    let opts = TrainOptions {
        dims,
        batch: 16,
        seq: 128,
        accum: 1,
        steps,
        lr: 3e-3,
        warmup: 50,
        weight_decay: 0.1,
        clip: 1.0,
        val_every: 100,
        val_windows: 32,
        save_every: 100,
        seed: 1,
    };
    let s = run(&RunSpec {
        corpus: vec![corpus],
        tokenizer: None,
        vocab_size: 1024,
        out: work.join("ckpt"),
        resume: std::env::var_os("RESUME").is_some(),
        opts,
        val_every_doc: 20,
        plot: Some(PathBuf::from("models/bitnet-demo-loss.svg")),
        gguf: Some(PathBuf::from("models/bitnet-demo-i2_s.gguf")),
        stop_at: None,
        log_every: 20,
        show_progress: false,
    })?;
    eprintln!("{s:#?}");
    Ok(())
}
