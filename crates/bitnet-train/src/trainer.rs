//! The training loop: gradient accumulation, clipping, AdamW with the two-stage schedule, validation,
//! checkpoints that resume bit for bit, and a progress bar with loss, learning rate and tokens/s.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, HistoryPoint, TrainerState};
use crate::data;
use crate::model::{cross_entropy, ModelDims, Rng, TrainModel};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::schedule::lr_wd;

/// Everything that defines a run (saved in the checkpoint; a resumed run keeps it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub dims: ModelDims,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Tokens per sequence (at most `dims.context`).
    pub seq: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    pub accum: usize,
    /// Optimizer steps in the whole run (the schedule spans them).
    pub steps: u64,
    pub lr: f64,
    pub warmup: u64,
    /// Peak weight decay (stage one).
    pub weight_decay: f64,
    /// Max total gradient L2 norm (0 = no clipping).
    pub clip: f64,
    /// Validation every this many steps (0 = only at the end).
    pub val_every: u64,
    /// Validation windows (of `seq` tokens) evaluated each time.
    pub val_windows: usize,
    /// Checkpoint every this many steps (0 = only at the end).
    pub save_every: u64,
    pub seed: u64,
}

impl TrainOptions {
    pub fn validate(&self) -> Result<()> {
        self.dims.validate()?;
        if self.batch == 0 || self.seq == 0 || self.accum == 0 || self.steps == 0 {
            bail!("batch, sequence length, accumulation and steps must all be positive");
        }
        if self.seq > self.dims.context {
            bail!(
                "sequence length {} exceeds the model context {}",
                self.seq,
                self.dims.context
            );
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || self.weight_decay < 0.0 || self.clip < 0.0 {
            bail!("learning rate must be positive, weight decay and clip non-negative");
        }
        Ok(())
    }
}

/// Mean cross-entropy of `inputs -> labels` and the gradient of every parameter (f32, model order).
pub fn loss_and_grads(
    model: &TrainModel,
    inputs: &[u32],
    labels: &[u32],
    batch: usize,
    seq: usize,
) -> Result<(f32, Vec<Vec<f32>>)> {
    let logits = model.forward(inputs, batch, seq)?;
    let loss = cross_entropy(&logits, labels)?;
    let grads = loss.backward()?;
    let mut out = Vec::with_capacity(model.params.len());
    for p in &model.params {
        let g = match grads.get(p.var.as_tensor()) {
            Some(g) => g.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; p.var.as_tensor().elem_count()],
        };
        out.push(g);
    }
    let l = loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
    Ok((l, out))
}

/// Mean loss over windows, without gradients.
pub fn eval_loss(model: &TrainModel, windows: &[(Vec<u32>, Vec<u32>)], batch: usize) -> Result<f64> {
    if windows.is_empty() {
        bail!("no validation windows (the held-out text is shorter than one sequence)");
    }
    let mut total = 0.0;
    for chunk in windows.chunks(batch.max(1)) {
        let seq = chunk[0].0.len();
        let inputs: Vec<u32> = chunk.iter().flat_map(|w| w.0.iter().copied()).collect();
        let labels: Vec<u32> = chunk.iter().flat_map(|w| w.1.iter().copied()).collect();
        let logits = model.forward(&inputs, chunk.len(), seq)?;
        let l = cross_entropy(&logits, &labels)?.to_scalar::<f32>()?;
        total += f64::from(l) * chunk.len() as f64;
    }
    Ok(total / windows.len() as f64)
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f32,
    pub tokens: u64,
}

/// A model, its optimizer and the run's state.
pub struct Trainer {
    pub opts: TrainOptions,
    pub model: TrainModel,
    pub opt: AdamW,
    pub rng: Rng,
    pub state: TrainerState,
    master: Vec<Vec<f32>>,
    decay: Vec<bool>,
}

impl Trainer {
    /// A fresh run with weights initialised from `opts.seed`.
    pub fn new(opts: TrainOptions) -> Result<Self> {
        opts.validate()?;
        let mut rng = Rng(opts.seed);
        let model = TrainModel::init(opts.dims.clone(), &mut rng)?;
        let state = TrainerState {
            step: 0,
            rng: rng.0,
            adamw: AdamWConfig::default(),
            options: serde_json::to_value(&opts)?,
            history: Vec::new(),
            tokens_seen: 0,
            train_seconds: 0.0,
        };
        Self::from_parts(opts, model, None, state)
    }

    fn from_parts(opts: TrainOptions, model: TrainModel, opt: Option<AdamW>, state: TrainerState) -> Result<Self> {
        let master: Vec<Vec<f32>> = model.values()?.into_iter().map(|v| v.2).collect();
        let sizes: Vec<usize> = master.iter().map(Vec::len).collect();
        let decay = model.params.iter().map(|p| p.decay).collect();
        let opt = opt.unwrap_or_else(|| AdamW::new(state.adamw, &sizes));
        Ok(Trainer {
            rng: Rng(state.rng),
            opts,
            model,
            opt,
            state,
            master,
            decay,
        })
    }

    /// Continues the run saved in `dir` (weights, optimizer, step, RNG, options, history).
    pub fn resume(dir: &Path) -> Result<Self> {
        if let Some(note) = crate::durable::recover(dir)? {
            eprintln!("note: {}: {note}", dir.display());
        }
        if crate::durable::verify(dir)?.is_none() {
            eprintln!(
                "note: {} has no {} (written by an older version): its files are not verified",
                dir.display(),
                crate::durable::MANIFEST
            );
        }
        let sp = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&sp).with_context(|| format!("reading {}", sp.display()))?;
        let st: TrainerState = serde_json::from_str(&text).with_context(|| format!("parsing {}", sp.display()))?;
        let opts: TrainOptions =
            serde_json::from_value(st.options.clone()).with_context(|| format!("{}: 'options'", sp.display()))?;
        opts.validate()?;
        let (values, opt, state) = checkpoint::load_state(dir, &opts.dims)?;
        let model = TrainModel::from_values(opts.dims.clone(), values, candle_core::DType::F32)?;
        Self::from_parts(opts, model, Some(opt), state)
    }

    /// Clips `grads`, takes one AdamW step at `(lr, wd)`, and writes the new weights into the model.
    /// Returns the total gradient norm before clipping.
    pub fn apply(&mut self, mut grads: Vec<Vec<f32>>, lr: f64, wd: f64) -> Result<f32> {
        let norm = if self.opts.clip > 0.0 {
            clip_grad_norm(&mut grads, self.opts.clip).0
        } else {
            crate::optim::total_grad_norm(&grads)
        };
        if !norm.is_finite() {
            bail!(
                "step {}: the gradient norm is {norm} (training diverged; lower the learning rate)",
                self.state.step
            );
        }
        self.opt.update(&mut self.master, &grads, &self.decay, lr, wd);
        for (p, v) in self.model.params.iter().zip(&self.master) {
            let t = Tensor::from_slice(v, p.var.as_tensor().dims(), &candle_core::Device::Cpu)?;
            p.var.set(&t)?;
        }
        Ok(norm)
    }

    /// One optimizer step on `accum` random micro-batches of `train`.
    pub fn step(&mut self, train: &[u32]) -> Result<StepStats> {
        let o = self.opts.clone();
        let (lr, wd) = lr_wd(self.state.step, o.steps, o.warmup, o.lr, o.weight_decay);
        let mut sum: Option<Vec<Vec<f32>>> = None;
        let mut loss = 0.0f64;
        for _ in 0..o.accum {
            let (inputs, labels) = data::random_batch(train, o.batch, o.seq, &mut self.rng)?;
            let (l, g) = loss_and_grads(&self.model, &inputs, &labels, o.batch, o.seq)?;
            loss += f64::from(l);
            match &mut sum {
                None => sum = Some(g),
                Some(s) => s
                    .iter_mut()
                    .zip(g)
                    .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, y)| *x += y)),
            }
        }
        let mut grads = sum.unwrap_or_default();
        if o.accum > 1 {
            let k = 1.0 / o.accum as f32;
            grads.iter_mut().for_each(|g| g.iter_mut().for_each(|x| *x *= k));
        }
        let grad_norm = self.apply(grads, lr, wd)?;
        self.state.step += 1;
        let tokens = (o.batch * o.seq * o.accum) as u64;
        self.state.tokens_seen += tokens;
        self.state.rng = self.rng.0;
        let loss = loss / o.accum as f64;
        if !loss.is_finite() {
            bail!("step {}: the loss is {loss} (training diverged)", self.state.step);
        }
        Ok(StepStats {
            step: self.state.step,
            loss,
            lr,
            grad_norm,
            tokens,
        })
    }

    /// The parameters as `(name, shape, values)` (f32 masters).
    pub fn values(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.model
            .params
            .iter()
            .zip(&self.master)
            .map(|(p, v)| (p.name.clone(), p.var.as_tensor().dims().to_vec(), v.clone()))
            .collect()
    }

    /// Writes a full checkpoint into `dir`; `tokenizer_dir` holds the tokenizer files to copy (may be `dir`).
    pub fn save(&self, dir: &Path, tokenizer_dir: &Path, bos: u32, eos: u32) -> Result<()> {
        self.save_with(dir, tokenizer_dir, bos, eos, None)
    }

    /// [`save`](Self::save), stopping at `crash_at` as a `kill -9` would (for the crash tests). The
    /// checkpoint is replaced as a whole ([`crate::durable`]): the previous one stays resumable until
    /// the new one is complete.
    pub fn save_with(
        &self,
        dir: &Path,
        tokenizer_dir: &Path,
        bos: u32,
        eos: u32,
        crash_at: Option<crate::durable::Stage>,
    ) -> Result<()> {
        let staging = crate::durable::begin(dir, &checkpoint::FILES)?;
        let values = self.values();
        checkpoint::save_weights(&staging, &self.opts.dims, &values, bos, eos)?;
        checkpoint::save_state(&staging, &values, &self.opt, &self.state)?;
        if tokenizer_dir != dir {
            for f in ["tokenizer.json", "tokenizer_config.json"] {
                let src = tokenizer_dir.join(f);
                if src.is_file() {
                    std::fs::copy(&src, staging.join(f)).with_context(|| format!("copying {}", src.display()))?;
                }
            }
        }
        crate::durable::commit(dir, &staging, self.state.step, crash_at)
    }
}

/// How a [`run_loop`] reports and stops.
pub struct LoopControl<'a> {
    /// Checkpoint folder (also holds the tokenizer files).
    pub out: &'a Path,
    pub bos: u32,
    pub eos: u32,
    /// Stop (after saving) once this step is reached, as if interrupted (tests, time budgets).
    pub stop_at: Option<u64>,
    /// Print a log line every this many steps (0 = never).
    pub log_every: u64,
    pub show_progress: bool,
}

/// Trains until `opts.steps` (or `stop_at`), validating and checkpointing as configured.
pub fn run_loop(tr: &mut Trainer, train: &[u32], val: &[(Vec<u32>, Vec<u32>)], c: &LoopControl) -> Result<()> {
    let o = tr.opts.clone();
    let end = c.stop_at.map_or(o.steps, |s| s.min(o.steps));
    let pb = if c.show_progress {
        ProgressBar::new(o.steps)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_position(tr.state.step);
    let t0 = Instant::now();
    let secs0 = tr.state.train_seconds;
    let mut window_tokens = 0u64;
    let mut window_start = Instant::now();
    while tr.state.step < end {
        let s = tr.step(train)?;
        window_tokens += s.tokens;
        let tps = window_tokens as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
        let is_last = s.step == o.steps;
        let val_loss = if (o.val_every > 0 && s.step.is_multiple_of(o.val_every)) || is_last {
            Some(eval_loss(&tr.model, val, o.batch)?)
        } else {
            None
        };
        tr.state.train_seconds = secs0 + t0.elapsed().as_secs_f64();
        tr.state.history.push(HistoryPoint {
            step: s.step,
            loss: s.loss,
            lr: s.lr,
            val_loss,
        });
        pb.set_position(s.step);
        pb.set_message(format!(
            "loss {:.3} lr {:.2e} {:.0} tok/s{}",
            s.loss,
            s.lr,
            tps,
            val_loss.map_or(String::new(), |v| format!(" val {v:.3}"))
        ));
        if (c.log_every > 0 && s.step.is_multiple_of(c.log_every)) || val_loss.is_some() {
            let line = format!(
                "step {:>6} loss {:.4} lr {:.3e} gnorm {:.3} {:.0} tok/s elapsed {:.0}s{}",
                s.step,
                s.loss,
                s.lr,
                s.grad_norm,
                tps,
                tr.state.train_seconds,
                val_loss.map_or(String::new(), |v| format!(" val_loss {v:.4}"))
            );
            if pb.is_hidden() {
                eprintln!("{line}");
            } else {
                pb.println(line);
            }
            window_tokens = 0;
            window_start = Instant::now();
        }
        if o.save_every > 0 && s.step.is_multiple_of(o.save_every) && s.step < end {
            tr.save(c.out, c.out, c.bos, c.eos)?;
        }
    }
    pb.finish_and_clear();
    tr.save(c.out, c.out, c.bos, c.eos)?;
    Ok(())
}
