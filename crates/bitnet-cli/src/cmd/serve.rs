//! `bitnet serve`: the OpenAI-compatible HTTP server (see the `bitnet-server` crate for the routes).

use anyhow::{bail, Result};

use crate::common::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long = "host", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long = "port", default_value_t = 8080)]
    pub port: u16,
    /// Context size of each slot (default: the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Requests decoded together in one batch (slots).
    #[arg(long = "parallel", visible_alias = "np", default_value_t = 8)]
    pub parallel: usize,
    /// Most prompt tokens evaluated per step, shared by the prompts being read; they run in the same
    /// steps as the other requests' decoding (chunked prefill). Smaller: shorter pauses in other streams.
    #[arg(short = 'b', long = "batch-size", default_value_t = bitnet_engine::SchedulerConfig::DEFAULT_PREFILL_CHUNK)]
    pub batch_size: usize,
    /// Requests that may wait for a free slot; beyond that the server answers 429 at once.
    #[arg(long = "queue", default_value_t = 64)]
    pub queue: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health (default: the BITNET_API_KEY
    /// environment variable, so the key need not appear in the process list).
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// The model name clients use (default: the model file's name).
    #[arg(short = 'a', long = "alias")]
    pub alias: Option<String>,
    /// Chat template: a built-in name (bitnet, llama3, chatml) or a file holding a Jinja template.
    #[arg(long = "chat-template")]
    pub chat_template: Option<String>,
    /// Browser origins allowed to call the server besides loopback ones (comma-separated, e.g.
    /// `https://app.example.com`; `*` allows any). Requests without an Origin header (curl, SDKs) are
    /// always allowed.
    #[arg(long = "allowed-origins", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Host names answered besides localhost names when bound to loopback (comma-separated; `*` allows
    /// any): the DNS-rebinding defence.
    #[arg(long = "allowed-hosts", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Seconds a client has to send each request's headers (also how long an idle keep-alive connection
    /// stays open).
    #[arg(long = "header-timeout", default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds a client has to send a request body.
    #[arg(long = "body-timeout", default_value_t = 60.0)]
    pub body_timeout: f64,
    /// Seconds in-flight requests may take to finish after SIGTERM (new connections are refused at
    /// once, /health answers 503); then the remaining connections are closed and the server exits 0.
    #[arg(long = "drain-timeout", default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Most open connections (default: the open-file limit minus 128, at most 8192). At the cap the
    /// oldest connection that has not sent a request is closed to make room.
    #[arg(long = "max-connections")]
    pub max_connections: Option<usize>,
    /// Largest accepted request body, in bytes.
    #[arg(long = "max-body-bytes", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
}

fn seconds(flag: &str, v: f64) -> Result<std::time::Duration> {
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        bail!("{flag} must be a number of seconds in (0, 86400], got {v}");
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

pub fn run(a: Args) -> Result<()> {
    if a.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if a.ctx_size == Some(0) {
        bail!("--ctx-size must be at least 1");
    }
    let name = a.alias.clone().unwrap_or_else(|| match &a.model.model {
        Some(p) => p
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .or_else(|| p.file_name().and_then(|s| s.to_str()))
            .unwrap_or("bitnet")
            .to_string(),
        None => "bitnet-demo".to_string(),
    });
    let cfg = bitnet_server::ServerConfig {
        model_name: name,
        api_key: a
            .api_key
            .clone()
            .or_else(|| std::env::var("BITNET_API_KEY").ok())
            .filter(|k| !k.is_empty()),
        slots: a.parallel,
        queue: a.queue,
        prefill_chunk: a.batch_size,
        ctx: a.ctx_size,
        max_body_bytes: a.max_body_bytes,
        chat_template: a.chat_template.clone(),
        template_sandbox: crate::common::template_sandbox(),
        guard: bitnet_server::guard::Guard {
            allowed_origins: a.allowed_origins.clone(),
            allowed_hosts: a.allowed_hosts.clone(),
            loopback: true,
        },
        limits: bitnet_server::listener::ConnLimits {
            header_timeout: seconds("--header-timeout", a.header_timeout)?,
            body_timeout: seconds("--body-timeout", a.body_timeout)?,
            drain_timeout: seconds("--drain-timeout", a.drain_timeout)?,
            max_connections: a
                .max_connections
                .unwrap_or_else(bitnet_server::listener::default_max_connections)
                .max(1),
        },
    };
    let model = a.model.clone();
    let host = if a.host.contains(':') && !a.host.starts_with('[') {
        format!("[{}]", a.host)
    } else {
        a.host.clone()
    };
    bitnet_server::run_blocking(&format!("{host}:{}", a.port), cfg, Box::new(move || model.load()))
}
