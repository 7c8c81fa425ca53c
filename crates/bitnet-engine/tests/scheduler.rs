//! The batch scheduler gives every request exactly what it would get alone (greedy), refuses work beyond
//! its queue at once, and frees a slot when the client drops its channel.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitnet_engine::{
    generate, Event, GenerateOptions, Job, SamplerConfig, Scheduler, SchedulerConfig, StopReason, SubmitError,
};
use bitnet_model::{BitNetModel, InferenceState, LoadOptions};
use bitnet_tokenizer::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn fixture() -> (BitNetModel, Tokenizer) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-a/gguf/bitnet-b158-i2_s.gguf");
    bitnet_model::load(&p, &LoadOptions::default()).expect("fixture model loads")
}

fn greedy(max: usize, ignore_eos: bool) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: max,
        ignore_eos,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
    }
}

/// Collects a job's text and how it ended.
fn collect(mut rx: UnboundedReceiver<Event>) -> (String, Option<bitnet_engine::Finished>) {
    let mut text = String::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done(f) => return (text, Some(f)),
            Event::Error(e) => panic!("generation failed: {e}"),
        }
    }
    (text, None)
}

const PROMPTS: [&str; 8] = [
    "The café in Zürich",
    "Once upon a time",
    "日本 🚀",
    "a",
    "12345678 steps to the sea, and then some more words to make a longer prompt",
    "User: hi<|eot_id|>Assistant: ",
    "It's",
    "The capital of France is",
];

#[test]
fn batched_outputs_equal_single_sequence_outputs() {
    let (model, tok) = fixture();
    let ctx = 256;
    // Alone, with the plain generation loop (what `bitnet generate --temp 0` runs).
    let mut want = Vec::new();
    for (i, p) in PROMPTS.iter().enumerate() {
        let ids = tok.encode(p, true).unwrap();
        let mut st = InferenceState::new(&model, ctx);
        let mut text = String::new();
        // Mix lengths so that sequences leave the batch at different steps.
        let opts = greedy(8 + 5 * i, i % 2 == 0);
        let (new, stats) = generate(&model, &tok, &mut st, &ids, &opts, |_, t| {
            text.push_str(t);
            true
        })
        .unwrap();
        want.push((ids, opts, text, new.len(), stats.stop));
    }
    let (model, tok) = (Arc::new(model), Arc::new(tok));
    let sched = Scheduler::start(
        Arc::clone(&model),
        Arc::clone(&tok),
        SchedulerConfig {
            slots: 3,
            queue: 16,
            ctx,
            // Small, so that prompts span several steps and share them with other requests' decoding.
            prefill_chunk: 3,
        },
    );
    let rxs: Vec<_> = want
        .iter()
        .map(|(ids, opts, ..)| {
            let (tx, rx) = unbounded_channel();
            sched
                .submit(Job {
                    prompt: ids.clone(),
                    opts: opts.clone(),
                    events: tx,
                })
                .unwrap();
            rx
        })
        .collect();
    for (i, rx) in rxs.into_iter().enumerate() {
        let (text, fin) = collect(rx);
        let fin = fin.expect("a Done event");
        let (ids, _, wtext, wn, wstop) = &want[i];
        assert_eq!(&text, wtext, "prompt {i} ({:?})", PROMPTS[i]);
        assert_eq!(fin.completion_tokens, *wn, "prompt {i}");
        assert_eq!(fin.prompt_tokens, ids.len());
        assert_eq!(fin.reason, *wstop, "prompt {i}");
    }
    let st = sched.stats();
    assert_eq!(st.completed_total.load(Ordering::Relaxed), PROMPTS.len() as u64);
    assert!(
        st.decode_batch_tokens_total.load(Ordering::Relaxed) > st.decode_steps_total.load(Ordering::Relaxed),
        "some steps decoded more than one sequence"
    );
}

#[test]
fn full_queue_refuses_and_dropped_client_frees_the_slot() {
    let (model, tok) = fixture();
    let ids = tok.encode("Once upon a time", true).unwrap();
    let sched = Scheduler::start(
        Arc::new(model),
        Arc::new(tok),
        SchedulerConfig {
            slots: 1,
            queue: 1,
            ctx: 4096,
            prefill_chunk: SchedulerConfig::DEFAULT_PREFILL_CHUNK,
        },
    );
    let job = |max| {
        let (tx, rx) = unbounded_channel();
        (
            Job {
                prompt: ids.clone(),
                opts: greedy(max, true),
                events: tx,
            },
            rx,
        )
    };
    // A: long; B: waits; C: refused at once.
    let (a, rx_a) = job(4000);
    let (b, rx_b) = job(4000);
    let (c, _rx_c) = job(4);
    sched.submit(a).unwrap();
    sched.submit(b).unwrap();
    let t0 = Instant::now();
    assert_eq!(
        sched.submit(c).unwrap_err(),
        SubmitError::QueueFull { slots: 1, queue: 1 }
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "refusal is immediate");
    // Dropping both receivers cancels both generations long before their 4000 tokens.
    drop(rx_a);
    drop(rx_b);
    let st = sched.stats();
    let deadline = Instant::now() + Duration::from_secs(20);
    while st.cancelled_total.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(st.cancelled_total.load(Ordering::Relaxed), 2);
    assert_eq!(st.completed_total.load(Ordering::Relaxed), 0, "neither ran to its end");
    // The slot is free again: a new request runs to completion.
    let (d, rx_d) = job(4);
    sched.submit(d).unwrap();
    let (_, fin) = collect(rx_d);
    let fin = fin.unwrap();
    assert_eq!((fin.completion_tokens, fin.reason), (4, StopReason::Length));
}

#[test]
fn stop_strings_and_invalid_prompts() {
    let (model, tok) = fixture();
    let ids = tok.encode("Once upon a time", true).unwrap();
    // What greedy decoding writes, then the same with a stop string taken from its middle.
    let mut st = InferenceState::new(&model, 128);
    let mut full = String::new();
    generate(&model, &tok, &mut st, &ids, &greedy(40, true), |_, t| {
        full.push_str(t);
        true
    })
    .unwrap();
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 10, "greedy text: {full:?}");
    let stop: String = chars[6..9].iter().collect();
    let cut = full.find(&stop).unwrap();
    let sched = Scheduler::start(
        Arc::new(model),
        Arc::new(tok),
        SchedulerConfig {
            slots: 2,
            queue: 2,
            ctx: 128,
            prefill_chunk: SchedulerConfig::DEFAULT_PREFILL_CHUNK,
        },
    );
    let (tx, rx) = unbounded_channel();
    let mut opts = greedy(40, true);
    opts.stop = vec![stop.clone()];
    sched
        .submit(Job {
            prompt: ids.clone(),
            opts,
            events: tx,
        })
        .unwrap();
    let (text, fin) = collect(rx);
    assert_eq!(text, full[..cut], "stop {stop:?}");
    assert_eq!(fin.unwrap().reason, StopReason::StopString);
    // A prompt that does not fit is an error event, not a panic.
    let (tx, mut rx) = unbounded_channel();
    sched
        .submit(Job {
            prompt: vec![1; 200],
            opts: greedy(4, true),
            events: tx,
        })
        .unwrap();
    assert!(matches!(rx.blocking_recv(), Some(Event::Error(_))));
}

/// One bad request fails alone: a prompt with an out-of-range token id gets its error while the
/// requests batched with it finish exactly as they would alone; a dead decoding thread refuses new work
/// at once instead of queueing it forever.
#[test]
fn a_bad_request_fails_alone_and_a_dead_scheduler_refuses_work() {
    let (model, tok) = fixture();
    let ctx = 128;
    let prompts = ["Once upon a time", "The café in Zürich"];
    let want: Vec<String> = prompts
        .iter()
        .map(|p| {
            let ids = tok.encode(p, true).unwrap();
            let mut st = InferenceState::new(&model, ctx);
            let mut text = String::new();
            generate(&model, &tok, &mut st, &ids, &greedy(12, true), |_, t| {
                text.push_str(t);
                true
            })
            .unwrap();
            text
        })
        .collect();
    let vocab = model.cfg.vocab_size as u32;
    let (model, tok) = (Arc::new(model), Arc::new(tok));
    let sched = Scheduler::start(
        Arc::clone(&model),
        Arc::clone(&tok),
        SchedulerConfig {
            slots: 3,
            queue: 8,
            ctx,
            prefill_chunk: 4,
        },
    );
    let submit = |ids: Vec<u32>| {
        let (tx, rx) = unbounded_channel();
        sched
            .submit(Job {
                prompt: ids,
                opts: greedy(12, true),
                events: tx,
            })
            .unwrap();
        rx
    };
    let good0 = submit(tok.encode(prompts[0], true).unwrap());
    let mut bad = submit(vec![1, 2, vocab + 7, 3]);
    let good1 = submit(tok.encode(prompts[1], true).unwrap());
    match bad.blocking_recv() {
        Some(Event::Error(e)) => assert!(e.contains(&format!("token id {}", vocab + 7)), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(collect(good0).0, want[0]);
    assert_eq!(collect(good1).0, want[1]);

    assert!(sched.is_healthy());
    sched.inject_panic_for_tests();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sched.is_healthy() {
        assert!(Instant::now() < deadline, "the scheduler did not report its failure");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (tx, _rx) = unbounded_channel();
    let r = sched.submit(Job {
        prompt: vec![1],
        opts: greedy(1, true),
        events: tx,
    });
    assert_eq!(r.err(), Some(SubmitError::Failed));
}
