//! Continuous batching: one thread owns the model and advances every active sequence together with
//! [`BitNetModel::forward_spans`] (the ternary weights are read once per step for the whole batch). A
//! request joins between two steps and leaves as soon as it finishes, so short and long requests share the
//! machine without waiting for each other. Prompts are prefilled in chunks inside the same steps as the
//! running sequences' decoding (at most `prefill_chunk` prompt tokens per step), so a new request neither
//! stalls the others for its whole prompt nor waits for them.
//!
//! Embedding requests ([`EmbedJob`]) share the same queue and thread: their inputs are evaluated in
//! chunks of at most `prefill_chunk` tokens, one chunk after each batched step, so they neither race the
//! decoding thread for the cores nor stall running streams for longer than a prefill chunk does.
//!
//! Bounded on purpose: at most `slots` sequences decode at once and at most `queue` requests wait; a
//! submission beyond that fails at once ([`SubmitError::QueueFull`]) so the server can answer 429 instead
//! of hanging. Each [`Job`] carries its own event channel; when the receiver is dropped (the client went
//! away) the sequence is cancelled at the next step and its slot is free for the next request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use bitnet_model::arch::Pooling;
use bitnet_model::embed::Pooler;
use bitnet_model::{BitNetModel, InferenceState, LogitsWanted, Workspace};
use bitnet_tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::decoding::Decoding;
use crate::generate::{GenerateOptions, StopReason};

/// Sizes of the scheduler.
#[derive(Clone, Copy, Debug)]
pub struct SchedulerConfig {
    /// Sequences decoded together at most (each has its own KV cache of `ctx` positions).
    pub slots: usize,
    /// Requests allowed to wait for a slot; more are refused.
    pub queue: usize,
    /// Context size (KV cache positions) of each slot: prompt + generated tokens must fit.
    pub ctx: usize,
    /// Most prompt tokens evaluated per step (shared by the prompts being prefilled). Larger: faster
    /// prompts; smaller: shorter pauses in the running sequences' streams.
    pub prefill_chunk: usize,
}

impl SchedulerConfig {
    /// Prompt tokens per step unless configured otherwise: a step of 256 prompt tokens takes about a
    /// second and a half on two cores with a 2B model.
    pub const DEFAULT_PREFILL_CHUNK: usize = 256;
}

/// One generation request, with the channel its results go to.
pub struct Job {
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    pub events: UnboundedSender<Event>,
}

/// An embedding request: every input (token ids, each at most the context size) is evaluated and
/// pooled; the reply carries one vector per input (not normalised) or an error.
pub struct EmbedJob {
    pub inputs: Vec<Vec<u32>>,
    pub pooling: Pooling,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// A queued request of either kind.
enum Queued {
    Generate(Job),
    Embed(EmbedJob),
}

/// The embedding request being evaluated: which input, how far, and the vectors so far.
struct ActiveEmbed {
    job: EmbedJob,
    input: usize,
    done_tokens: usize,
    pooler: Option<Pooler>,
    out: Vec<Vec<f32>>,
}

/// What a job's channel receives: text pieces, then exactly one `Done` or `Error`.
#[derive(Clone, Debug)]
pub enum Event {
    /// New text (never empty). Stop tokens and stop strings are never sent.
    Text(String),
    Done(Finished),
    Error(String),
}

/// How a request ended, with its counts and timings.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    pub reason: StopReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Submission to first generated token (queueing + prefill).
    pub ttft_secs: f64,
    /// Submission to the end.
    pub total_secs: f64,
}

/// Why a job was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// Every slot is busy and `queue` requests already wait.
    QueueFull { slots: usize, queue: usize },
    /// The scheduler is shutting down.
    ShuttingDown,
    /// The decoding thread died after an internal error; nothing submitted would run.
    Failed,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::QueueFull { slots, queue } => write!(
                f,
                "the server is busy: all {slots} slots are generating and {queue} requests are already queued"
            ),
            SubmitError::ShuttingDown => write!(f, "the server is shutting down"),
            SubmitError::Failed => write!(f, "the scheduler stopped after an internal error"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// Counters for `/metrics` (monotonic totals and current gauges).
#[derive(Debug, Default)]
pub struct SchedulerStats {
    pub queued: AtomicUsize,
    pub active: AtomicUsize,
    /// KV cache positions held by the running sequences (their context so far).
    pub kv_tokens: AtomicUsize,
    pub prompt_tokens_total: AtomicU64,
    pub generated_tokens_total: AtomicU64,
    pub completed_total: AtomicU64,
    pub cancelled_total: AtomicU64,
    pub errors_total: AtomicU64,
    /// Batched decode steps run, and the sum of their batch sizes (mean batch = ratio).
    pub decode_steps_total: AtomicU64,
    pub decode_batch_tokens_total: AtomicU64,
    /// Time spent in the model (prefill + decode), in microseconds.
    pub busy_micros_total: AtomicU64,
    /// Recent decode throughput in tokens/s (exponential moving average, f64 bits).
    decode_tps_bits: AtomicU64,
}

impl SchedulerStats {
    /// Recent aggregate decode throughput, tokens per second.
    pub fn decode_tokens_per_second(&self) -> f64 {
        f64::from_bits(self.decode_tps_bits.load(Ordering::Relaxed))
    }

    fn record_step(&self, tokens: usize, secs: f64) {
        let now = tokens as f64 / secs.max(1e-9);
        let old = self.decode_tokens_per_second();
        let v = if old == 0.0 { now } else { 0.9 * old + 0.1 * now };
        self.decode_tps_bits.store(v.to_bits(), Ordering::Relaxed);
    }
}

struct Queue {
    jobs: VecDeque<(Queued, Instant)>,
    closed: bool,
}

struct Shared {
    /// Set when the decoding thread died (a panic): the server reports unhealthy.
    failed: std::sync::atomic::AtomicBool,
    inject_panic: std::sync::atomic::AtomicBool,
    queue: Mutex<Queue>,
    wake: Condvar,
    stats: SchedulerStats,
    free_slots: AtomicUsize,
    cfg: SchedulerConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the queue inconsistent (push/pop only).
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The batch scheduler: a decoding thread plus a bounded queue in front of it.
pub struct Scheduler {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Scheduler {
    /// Starts the decoding thread. `slots` and `ctx` are at least 1.
    pub fn start(model: Arc<BitNetModel>, tok: Arc<Tokenizer>, cfg: SchedulerConfig) -> Scheduler {
        let cfg = SchedulerConfig {
            slots: cfg.slots.max(1),
            queue: cfg.queue,
            ctx: cfg.ctx.max(1),
            prefill_chunk: cfg.prefill_chunk.max(1),
        };
        let shared = Arc::new(Shared {
            failed: std::sync::atomic::AtomicBool::new(false),
            inject_panic: std::sync::atomic::AtomicBool::new(false),
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            stats: SchedulerStats::default(),
            free_slots: AtomicUsize::new(cfg.slots),
            cfg,
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("bitnet-scheduler".into())
            .spawn(move || {
                let sh = Arc::clone(&s);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Worker::new(model, tok, s).run()));
                if r.is_err() {
                    // The running sequences' channels closed when the worker unwound; refuse what is
                    // queued and everything after, so that no request waits for a thread that is gone.
                    sh.failed.store(true, Ordering::Release);
                    let mut q = sh.lock();
                    q.closed = true;
                    for (job, _) in q.jobs.drain(..) {
                        let msg = "the scheduler stopped after an internal error".to_string();
                        match job {
                            Queued::Generate(j) => {
                                let _ = j.events.send(Event::Error(msg));
                            }
                            Queued::Embed(j) => {
                                let _ = j.reply.send(Err(msg));
                            }
                        }
                    }
                }
            })
            .ok();
        if thread.is_none() {
            shared.lock().closed = true;
        }
        Scheduler {
            shared,
            thread: Mutex::new(thread),
        }
    }

    /// False once the decoding thread has died: nothing submitted would ever run.
    pub fn is_healthy(&self) -> bool {
        !self.shared.failed.load(Ordering::Acquire) && !self.shared.lock().closed
    }

    /// Makes the decoding thread panic at its next step (tests of the server's failure handling).
    #[doc(hidden)]
    pub fn inject_panic_for_tests(&self) {
        self.shared.inject_panic.store(true, Ordering::Release);
        self.shared.wake.notify_all();
    }

    pub fn config(&self) -> SchedulerConfig {
        self.shared.cfg
    }

    pub fn stats(&self) -> &SchedulerStats {
        &self.shared.stats
    }

    /// Queues a job, or refuses it at once when the queue is full or the scheduler is closing.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        self.enqueue(Queued::Generate(job))
    }

    /// Queues an embedding request (same bounds as [`submit`](Self::submit)).
    pub fn submit_embed(&self, job: EmbedJob) -> Result<(), SubmitError> {
        self.enqueue(Queued::Embed(job))
    }

    fn enqueue(&self, job: Queued) -> Result<(), SubmitError> {
        let mut q = self.shared.lock();
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(SubmitError::Failed);
        }
        if q.closed {
            return Err(SubmitError::ShuttingDown);
        }
        let cfg = self.shared.cfg;
        let room = cfg.queue + self.shared.free_slots.load(Ordering::Acquire);
        if q.jobs.len() >= room {
            return Err(SubmitError::QueueFull {
                slots: cfg.slots,
                queue: cfg.queue,
            });
        }
        q.jobs.push_back((job, Instant::now()));
        self.shared.stats.queued.store(q.jobs.len(), Ordering::Relaxed);
        drop(q);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Stops taking jobs; those queued or running finish. Returns once the decoding thread has ended.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A sequence in a slot.
struct Active {
    job: Job,
    submitted: Instant,
    ttft_secs: f64,
    decoding: Decoding,
    /// Prompt tokens already in the KV cache; the sequence decodes once this reaches the prompt length.
    prefilled: usize,
    /// The token to feed at the next decoding step.
    next: u32,
}

impl Active {
    fn prefilling(&self) -> bool {
        self.prefilled < self.job.prompt.len()
    }
}

struct Worker {
    model: Arc<BitNetModel>,
    tok: Arc<Tokenizer>,
    shared: Arc<Shared>,
    states: Vec<Option<InferenceState>>,
    active: Vec<Option<Active>>,
    ws: Workspace,
    /// The embedding request in progress (one at a time) and its own KV cache.
    embed: Option<ActiveEmbed>,
    embed_state: Option<InferenceState>,
}

impl Worker {
    fn new(model: Arc<BitNetModel>, tok: Arc<Tokenizer>, shared: Arc<Shared>) -> Self {
        let n = shared.cfg.slots;
        Worker {
            model,
            tok,
            shared,
            states: (0..n).map(|_| None).collect(),
            active: (0..n).map(|_| None).collect(),
            ws: Workspace::new(),
            embed: None,
            embed_state: None,
        }
    }

    fn stats(&self) -> &SchedulerStats {
        &self.shared.stats
    }

    fn n_active(&self) -> usize {
        self.active.iter().filter(|a| a.is_some()).count()
    }

    fn run(mut self) {
        loop {
            let new_jobs = {
                let mut q = self.shared.lock();
                while self.n_active() == 0
                    && self.embed.is_none()
                    && q.jobs.is_empty()
                    && !q.closed
                    && !self.shared.inject_panic.load(Ordering::Acquire)
                {
                    q = self.shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                if self.shared.inject_panic.swap(false, Ordering::AcqRel) {
                    drop(q);
                    panic!("injected scheduler panic (test)");
                }
                if q.closed && q.jobs.is_empty() && self.n_active() == 0 && self.embed.is_none() {
                    break;
                }
                // In queue order: generation jobs while slots are free, one embedding job at a time.
                let mut free = self.shared.cfg.slots - self.n_active();
                let mut embed_free = self.embed.is_none();
                let mut jobs = Vec::new();
                while let Some((front, _)) = q.jobs.front() {
                    let fits = match front {
                        Queued::Generate(_) => free > 0,
                        Queued::Embed(_) => embed_free,
                    };
                    if !fits {
                        break;
                    }
                    let Some(item) = q.jobs.pop_front() else { break };
                    match &item.0 {
                        Queued::Generate(_) => free -= 1,
                        Queued::Embed(_) => embed_free = false,
                    }
                    jobs.push(item);
                }
                self.stats().queued.store(q.jobs.len(), Ordering::Relaxed);
                // Reserve the slots now so that `submit` does not count them as free room.
                let taken = jobs.iter().filter(|(j, _)| matches!(j, Queued::Generate(_))).count();
                self.shared.free_slots.fetch_sub(taken, Ordering::AcqRel);
                jobs
            };
            for (job, submitted) in new_jobs {
                match job {
                    Queued::Generate(job) => self.admit(job, submitted),
                    Queued::Embed(job) => {
                        self.embed = Some(ActiveEmbed {
                            job,
                            input: 0,
                            done_tokens: 0,
                            pooler: None,
                            out: Vec::new(),
                        })
                    }
                }
            }
            self.step();
            self.step_embed();
            self.publish_occupancy();
        }
    }

    fn publish_occupancy(&self) {
        let n = self.n_active();
        self.stats().active.store(n, Ordering::Relaxed);
        let kv: usize = (0..self.active.len())
            .filter(|&i| self.active[i].is_some())
            .filter_map(|i| self.states[i].as_ref().map(|s| s.pos))
            .sum();
        self.stats().kv_tokens.store(kv, Ordering::Relaxed);
        self.shared
            .free_slots
            .store(self.shared.cfg.slots - n, Ordering::Release);
    }

    /// Checks a new job and gives it a free slot; its prompt is evaluated by the next steps.
    fn admit(&mut self, job: Job, submitted: Instant) {
        let Some(slot) = self.active.iter().position(|a| a.is_none()) else {
            // Cannot happen (jobs are taken only for free slots); refuse rather than lose the job.
            let _ = job.events.send(Event::Error("no free slot".into()));
            return;
        };
        if job.events.is_closed() {
            self.stats().cancelled_total.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let ctx = self.shared.cfg.ctx;
        let vocab = self.model.cfg.vocab_size;
        if let Some(&bad) = job.prompt.iter().find(|&&t| t as usize >= vocab) {
            self.stats().errors_total.fetch_add(1, Ordering::Relaxed);
            let _ = job.events.send(Event::Error(format!(
                "token id {bad} is out of range (vocabulary size {vocab})"
            )));
            return;
        }
        if job.prompt.is_empty() || job.prompt.len() >= ctx {
            self.stats().errors_total.fetch_add(1, Ordering::Relaxed);
            let _ = job.events.send(Event::Error(format!(
                "the prompt has {} tokens; it must have at least 1 and fewer than the context size {ctx}",
                job.prompt.len()
            )));
            return;
        }
        if self.states[slot].is_none() {
            match InferenceState::try_new(&self.model, ctx) {
                Ok(s) => self.states[slot] = Some(s),
                Err(e) => {
                    self.stats().errors_total.fetch_add(1, Ordering::Relaxed);
                    let _ = job.events.send(Event::Error(format!("{e:#}")));
                    return;
                }
            }
        }
        let Some(state) = self.states[slot].as_mut() else {
            return;
        };
        state.reset();
        let decoding = Decoding::new(&self.tok, &job.opts, &job.prompt);
        self.active[slot] = Some(Active {
            job,
            submitted,
            ttft_secs: 0.0,
            decoding,
            prefilled: 0,
            next: 0,
        });
    }

    /// One step over every active sequence: a decoding step for the running ones and the next prompt
    /// chunk for those being prefilled, in one [`BitNetModel::forward_spans`] call.
    fn step(&mut self) {
        // Drop sequences whose client went away before spending compute on them.
        for slot in 0..self.active.len() {
            if self.active[slot].as_ref().is_some_and(|a| a.job.events.is_closed()) {
                self.finish(slot, StopReason::Cancelled);
            }
        }
        // (slot, span length) in slot order; prompt chunks share the step's prefill budget.
        let mut budget = self.shared.cfg.prefill_chunk;
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut tokens: Vec<u32> = Vec::new();
        for (slot, a) in self.active.iter().enumerate() {
            let Some(a) = a else { continue };
            if a.prefilling() {
                let len = budget.min(a.job.prompt.len() - a.prefilled);
                if len == 0 {
                    continue;
                }
                budget -= len;
                tokens.extend_from_slice(&a.job.prompt[a.prefilled..a.prefilled + len]);
                spans.push((slot, len));
            } else {
                tokens.push(a.next);
                spans.push((slot, 1));
            }
        }
        if spans.is_empty() {
            return;
        }
        let lens: Vec<usize> = spans.iter().map(|&(_, l)| l).collect();
        let t0 = Instant::now();
        let logits = {
            let mut refs: Vec<&mut InferenceState> = Vec::with_capacity(spans.len());
            let mut want = spans.iter().map(|&(s, _)| s).peekable();
            for (i, st) in self.states.iter_mut().enumerate() {
                if want.peek() == Some(&i) {
                    want.next();
                    if let Some(st) = st.as_mut() {
                        refs.push(st);
                    }
                }
            }
            if refs.len() != spans.len() {
                Err(anyhow::anyhow!("internal error: an active slot has no state"))
            } else {
                self.model
                    .forward_spans(&tokens, &mut refs, &lens, &mut self.ws)
                    .map(|l| l.to_vec())
            }
        };
        let secs = t0.elapsed().as_secs_f64();
        let decoding = spans
            .iter()
            .filter(|&&(s, _)| self.active[s].as_ref().is_some_and(|a| !a.prefilling()))
            .count();
        let st = self.stats();
        st.busy_micros_total.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        if decoding > 0 {
            st.decode_steps_total.fetch_add(1, Ordering::Relaxed);
            st.decode_batch_tokens_total
                .fetch_add(decoding as u64, Ordering::Relaxed);
            st.record_step(decoding, secs);
        }
        // One bad sequence fails only itself: when the batch fails, each sequence is run alone and only
        // those that fail on their own get the error.
        let rows: Vec<Option<Vec<f32>>> = match logits {
            Ok(l) => {
                let vocab = l.len() / spans.len().max(1);
                l.chunks_exact(vocab.max(1)).map(|r| Some(r.to_vec())).collect()
            }
            Err(_) if spans.len() > 1 => self.isolate(&spans, &tokens),
            Err(e) => {
                self.fail(spans[0].0, format!("{e:#}"));
                vec![None]
            }
        };
        for (row, &(slot, len)) in spans.iter().enumerate() {
            let Some(row_logits) = rows.get(row).and_then(|r| r.as_deref()) else {
                continue;
            };
            let context_left = self.states[slot].as_ref().is_some_and(|s| s.pos < s.cache.capacity());
            let Some(a) = self.active[slot].as_mut() else { continue };
            let step = if a.prefilling() {
                a.prefilled += len;
                if a.prefilling() {
                    continue;
                }
                // The prompt is in: this row is the first token's distribution.
                self.shared
                    .stats
                    .prompt_tokens_total
                    .fetch_add(a.job.prompt.len() as u64, Ordering::Relaxed);
                a.ttft_secs = a.submitted.elapsed().as_secs_f64();
                if a.decoding.exhausted() {
                    Ok(crate::decoding::Step {
                        token: None,
                        text: String::new(),
                        finished: Some(StopReason::Length),
                    })
                } else {
                    // After the prompt the cache holds fewer than ctx positions: the token fits.
                    a.decoding.step(row_logits, true)
                }
            } else {
                a.decoding.step(row_logits, context_left)
            };
            self.apply_step(slot, step);
        }
    }
    /// Evaluates the next chunk (at most `prefill_chunk` tokens) of the embedding request in progress;
    /// replies once every input is pooled.
    fn step_embed(&mut self) {
        let Some(e) = self.embed.as_mut() else { return };
        if e.job.reply.is_closed() {
            self.shared.stats.cancelled_total.fetch_add(1, Ordering::Relaxed);
            self.embed = None;
            return;
        }
        let ctx = self.shared.cfg.ctx;
        let result: anyhow::Result<bool> = (|| {
            if self.embed_state.is_none() {
                self.embed_state = Some(InferenceState::try_new(&self.model, ctx)?);
            }
            let Some(st) = self.embed_state.as_mut() else {
                anyhow::bail!("internal error: no embedding state");
            };
            let Some(ids) = e.job.inputs.get(e.input) else {
                return Ok(true);
            };
            if ids.is_empty() || ids.len() > ctx {
                anyhow::bail!(
                    "input {} has {} tokens; it must have at least 1 and at most the context size {ctx}",
                    e.input,
                    ids.len()
                );
            }
            if e.done_tokens == 0 {
                st.reset();
                e.pooler = Some(Pooler::new(e.job.pooling, self.model.cfg.hidden_size));
            }
            let end = (e.done_tokens + self.shared.cfg.prefill_chunk).min(ids.len());
            let t0 = Instant::now();
            let rows = self.model.forward(&ids[e.done_tokens..end], st, LogitsWanted::Hidden)?;
            if let Some(p) = e.pooler.as_mut() {
                p.push(rows);
            }
            self.shared
                .stats
                .busy_micros_total
                .fetch_add((t0.elapsed().as_secs_f64() * 1e6) as u64, Ordering::Relaxed);
            e.done_tokens = end;
            if end == ids.len() {
                self.shared
                    .stats
                    .prompt_tokens_total
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
                if let Some(p) = e.pooler.take() {
                    e.out.push(p.finish());
                }
                e.input += 1;
                e.done_tokens = 0;
            }
            Ok(e.input == e.job.inputs.len())
        })();
        match result {
            Ok(false) => {}
            Ok(true) => {
                if let Some(e) = self.embed.take() {
                    self.shared.stats.completed_total.fetch_add(1, Ordering::Relaxed);
                    let _ = e.job.reply.send(Ok(e.out));
                }
            }
            Err(err) => {
                if let Some(e) = self.embed.take() {
                    self.shared.stats.errors_total.fetch_add(1, Ordering::Relaxed);
                    let _ = e.job.reply.send(Err(format!("{err:#}")));
                }
            }
        }
    }

    /// Ends the sequence in `slot` with an error sent to its client.
    fn fail(&mut self, slot: usize, msg: String) {
        if let Some(a) = self.active[slot].take() {
            self.stats().errors_total.fetch_add(1, Ordering::Relaxed);
            let _ = a.job.events.send(Event::Error(msg));
        }
    }

    /// Runs each span of a failed batch on its own: the logits of those that succeed, and an error for
    /// the others (their sequences end).
    fn isolate(&mut self, spans: &[(usize, usize)], tokens: &[u32]) -> Vec<Option<Vec<f32>>> {
        let mut out = Vec::with_capacity(spans.len());
        let mut t0 = 0;
        for &(slot, len) in spans {
            let toks = &tokens[t0..t0 + len];
            t0 += len;
            let r = match self.states[slot].as_mut() {
                Some(st) => self
                    .model
                    .forward_spans(toks, &mut [st], &[len], &mut self.ws)
                    .map(|l| l.to_vec()),
                None => Err(anyhow::anyhow!("internal error: an active slot has no state")),
            };
            match r {
                Ok(l) => out.push(Some(l)),
                Err(e) => {
                    self.fail(slot, format!("{e:#}"));
                    out.push(None);
                }
            }
        }
        out
    }

    /// Sends a step's text and either schedules its token or ends the sequence.
    fn apply_step(&mut self, slot: usize, step: anyhow::Result<crate::decoding::Step>) {
        let Some(a) = self.active[slot].as_mut() else { return };
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                self.shared.stats.errors_total.fetch_add(1, Ordering::Relaxed);
                let _ = a.job.events.send(Event::Error(format!("{e:#}")));
                self.active[slot] = None;
                return;
            }
        };
        if step.token.is_some() {
            self.shared.stats.generated_tokens_total.fetch_add(1, Ordering::Relaxed);
        }
        if !step.text.is_empty() && a.job.events.send(Event::Text(step.text)).is_err() {
            self.finish(slot, StopReason::Cancelled);
            return;
        }
        match (step.finished, step.token) {
            (Some(r), _) => self.finish(slot, r),
            (None, Some(t)) => a.next = t,
            (None, None) => self.finish(slot, StopReason::EndOfSequence),
        }
    }

    fn finish(&mut self, slot: usize, reason: StopReason) {
        let Some(a) = self.active[slot].take() else { return };
        let st = &self.shared.stats;
        if reason == StopReason::Cancelled {
            st.cancelled_total.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Held-back text was already released by the step that finished (and must not be after a stop
        // string).
        st.completed_total.fetch_add(1, Ordering::Relaxed);
        let _ = a.job.events.send(Event::Done(Finished {
            reason,
            prompt_tokens: a.job.prompt.len(),
            completion_tokens: a.decoding.generated(),
            ttft_secs: a.ttft_secs,
            total_secs: a.submitted.elapsed().as_secs_f64(),
        }));
    }
}
