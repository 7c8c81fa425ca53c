//! Interrupting a run and resuming it from its checkpoint gives exactly the loss trajectory of an
//! uninterrupted run (weights, AdamW moments, step, RNG and schedule all restored).

use std::path::PathBuf;

use anyhow::Result;
use bitnet_train::data;
use bitnet_train::model::{ModelDims, Rng};
use bitnet_train::trainer::{run_loop, LoopControl, TrainOptions, Trainer};

fn opts() -> TrainOptions {
    TrainOptions {
        dims: ModelDims {
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 64,
            context: 32,
            rope_theta: 10000.0,
            rms_eps: 1e-5,
        },
        batch: 4,
        seq: 16,
        accum: 2,
        steps: 8,
        lr: 3e-3,
        warmup: 2,
        weight_decay: 0.1,
        clip: 1.0,
        val_every: 2,
        val_windows: 4,
        save_every: 0,
        seed: 5,
    }
}

fn ctl(out: &std::path::Path, stop_at: Option<u64>) -> LoopControl<'_> {
    LoopControl {
        out,
        bos: 0,
        eos: 1,
        stop_at,
        log_every: 0,
        show_progress: false,
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bitnet-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn interrupted_and_resumed_run_follows_the_same_trajectory() -> Result<()> {
    // A learnable stream: each token mostly follows its predecessor + 1.
    let mut r = Rng(9);
    let mut stream = vec![0u32];
    for _ in 0..4000 {
        let last = *stream.last().unwrap_or(&0);
        stream.push(if r.below(5) == 0 {
            r.below(64) as u32
        } else {
            (last + 1) % 64
        });
    }
    let (train, val_stream) = stream.split_at(3000);
    let val = data::val_windows(val_stream, 16, 4);

    let d1 = tmp("straight");
    let mut a = Trainer::new(opts())?;
    run_loop(&mut a, train, &val, &ctl(&d1, None))?;

    let d2 = tmp("interrupted");
    let mut b = Trainer::new(opts())?;
    run_loop(&mut b, train, &val, &ctl(&d2, Some(3)))?;
    assert_eq!(b.state.step, 3);
    drop(b);
    let mut c = Trainer::resume(&d2)?;
    assert_eq!(c.state.step, 3);
    run_loop(&mut c, train, &val, &ctl(&d2, None))?;

    assert_eq!(a.state.history.len(), 8);
    assert_eq!(a.state.history, c.state.history, "resumed trajectory differs");
    assert_eq!(a.values(), c.values());
    // Training made progress on this easy stream.
    let first = a.state.history[0].loss;
    let last = a.state.history[7].loss;
    assert!(last < first, "loss did not decrease: {first} -> {last}");
    let _ = std::fs::remove_dir_all(&d1);
    let _ = std::fs::remove_dir_all(&d2);
    Ok(())
}

/// A save killed at any point (as `kill -9` would: no cleanup) leaves a checkpoint that resumes: the
/// previous one, or the new one when it was complete. A damaged file is refused by the manifest.
#[test]
fn a_save_killed_at_any_point_leaves_a_resumable_checkpoint() -> Result<()> {
    use bitnet_train::durable::{self, Stage};
    let mut r = Rng(3);
    let stream: Vec<u32> = (0..2000).map(|_| r.below(64) as u32).collect();
    let val = data::val_windows(&stream[1500..], 16, 4);
    for stage in [Stage::Staging, Stage::Staged, Stage::BetweenRenames, Stage::Swapped] {
        let d = tmp(&format!("crash-{stage:?}"));
        let mut t = Trainer::new(opts())?;
        run_loop(&mut t, &stream[..1500], &val, &ctl(&d, Some(2)))?;
        std::fs::write(d.join("notes.txt"), "kept across saves")?;
        assert_eq!(Trainer::resume(&d)?.state.step, 2);
        // One more step, then a save that dies at `stage`.
        run_loop(&mut t, &stream[..1500], &val, &ctl(&d, Some(3)))?;
        t.state.step = 4;
        t.save_with(&d, &d, 0, 1, Some(stage))?;
        let resumed = Trainer::resume(&d)?;
        let step = resumed.state.step;
        match stage {
            // Before the swap began: the previous checkpoint (step 3) is still the one in place.
            Stage::Staging | Stage::Staged => assert_eq!(step, 3, "{stage:?}"),
            // Between the renames the staged checkpoint is complete and is put in place; after them
            // it already is.
            Stage::BetweenRenames | Stage::Swapped => assert_eq!(step, 4, "{stage:?}"),
        }
        assert!(durable::is_complete(&d), "{stage:?}");
        assert_eq!(std::fs::read_to_string(d.join("notes.txt"))?, "kept across saves");
        assert!(!durable::staging_dir(&d)?.exists(), "{stage:?}: staging left behind");
        let _ = std::fs::remove_dir_all(&d);
    }
    // Damage one file: resume refuses it, naming the file.
    let d = tmp("damaged");
    let mut t = Trainer::new(opts())?;
    run_loop(&mut t, &stream[..1500], &val, &ctl(&d, Some(2)))?;
    let p = d.join("optimizer.safetensors");
    let mut bytes = std::fs::read(&p)?;
    let n = bytes.len();
    bytes[n - 1] ^= 0xFF;
    std::fs::write(&p, bytes)?;
    let e = format!("{:#}", Trainer::resume(&d).err().expect("damaged checkpoint refused"));
    assert!(
        e.contains("optimizer.safetensors") && e.contains("checkpoint.json"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&d);
    Ok(())
}
