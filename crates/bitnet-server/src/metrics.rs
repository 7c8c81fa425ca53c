//! Prometheus text exposition of the server's counters (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use bitnet_engine::SchedulerStats;

/// Upper bounds (seconds) of the time-to-first-token histogram buckets.
const TTFT_BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Counters kept by the HTTP layer (the scheduler keeps the token counters).
#[derive(Default)]
pub struct Metrics {
    /// (route, status code) -> count.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    ttft: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; TTFT_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn record_request(&self, route: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((route.to_string(), status)).or_insert(0) += 1;
    }

    pub fn record_ttft(&self, secs: f64) {
        let mut h = self.ttft.lock().unwrap_or_else(|e| e.into_inner());
        for (i, &b) in TTFT_BUCKETS.iter().enumerate() {
            if secs <= b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The whole exposition. `sched` is None while the model loads.
    /// `sched`: the scheduler's counters, its slots and the context of each slot.
    pub fn render(&self, sched: Option<(&SchedulerStats, usize, usize)>, loaded: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# HELP bitnet_model_loaded Whether the model is loaded and serving.");
        let _ = writeln!(s, "# TYPE bitnet_model_loaded gauge");
        let _ = writeln!(s, "bitnet_model_loaded {}", loaded as u8);
        let _ = writeln!(
            s,
            "# HELP bitnet_http_requests_total HTTP requests by route and status code."
        );
        let _ = writeln!(s, "# TYPE bitnet_http_requests_total counter");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                s,
                "bitnet_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        {
            let h = self.ttft.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(
                s,
                "# HELP bitnet_time_to_first_token_seconds Time from request to first generated token."
            );
            let _ = writeln!(s, "# TYPE bitnet_time_to_first_token_seconds histogram");
            for (i, b) in TTFT_BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "bitnet_time_to_first_token_seconds_bucket{{le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                s,
                "bitnet_time_to_first_token_seconds_bucket{{le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(s, "bitnet_time_to_first_token_seconds_sum {}", h.sum);
            let _ = writeln!(s, "bitnet_time_to_first_token_seconds_count {}", h.count);
        }
        if let Some((st, slots, ctx)) = sched {
            let g = |s: &mut String, name: &str, kind: &str, help: &str, v: String| {
                let _ = writeln!(s, "# HELP {name} {help}");
                let _ = writeln!(s, "# TYPE {name} {kind}");
                let _ = writeln!(s, "{name} {v}");
            };
            let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
            g(
                &mut s,
                "bitnet_slots",
                "gauge",
                "Sequences that can decode at once.",
                slots.to_string(),
            );
            g(
                &mut s,
                "bitnet_active_slots",
                "gauge",
                "Sequences decoding now.",
                st.active.load(Ordering::Relaxed).to_string(),
            );
            g(
                &mut s,
                "bitnet_kv_cache_tokens",
                "gauge",
                "KV cache positions held by the running sequences.",
                st.kv_tokens.load(Ordering::Relaxed).to_string(),
            );
            g(
                &mut s,
                "bitnet_kv_cache_capacity_tokens",
                "gauge",
                "KV cache positions of all slots (slots x context).",
                (slots * ctx).to_string(),
            );
            g(
                &mut s,
                "bitnet_queue_depth",
                "gauge",
                "Requests waiting for a slot.",
                st.queued.load(Ordering::Relaxed).to_string(),
            );
            g(
                &mut s,
                "bitnet_prompt_tokens_total",
                "counter",
                "Prompt tokens processed.",
                ld(&st.prompt_tokens_total),
            );
            g(
                &mut s,
                "bitnet_generated_tokens_total",
                "counter",
                "Tokens generated.",
                ld(&st.generated_tokens_total),
            );
            g(
                &mut s,
                "bitnet_requests_completed_total",
                "counter",
                "Generations that ran to their end.",
                ld(&st.completed_total),
            );
            g(
                &mut s,
                "bitnet_requests_cancelled_total",
                "counter",
                "Generations stopped because the client went away.",
                ld(&st.cancelled_total),
            );
            g(
                &mut s,
                "bitnet_generation_errors_total",
                "counter",
                "Generations that failed.",
                ld(&st.errors_total),
            );
            g(
                &mut s,
                "bitnet_decode_steps_total",
                "counter",
                "Batched decode steps.",
                ld(&st.decode_steps_total),
            );
            g(
                &mut s,
                "bitnet_decode_batch_tokens_total",
                "counter",
                "Sum of decode batch sizes (divide by steps for the mean batch).",
                ld(&st.decode_batch_tokens_total),
            );
            g(
                &mut s,
                "bitnet_model_busy_seconds_total",
                "counter",
                "Time spent in the model (prefill and decode).",
                (st.busy_micros_total.load(Ordering::Relaxed) as f64 / 1e6).to_string(),
            );
            g(
                &mut s,
                "bitnet_decode_tokens_per_second",
                "gauge",
                "Recent aggregate decode throughput (moving average).",
                format!("{:.3}", st.decode_tokens_per_second()),
            );
        }
        s
    }
}
