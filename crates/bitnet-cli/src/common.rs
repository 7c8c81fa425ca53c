//! Flags shared by the commands that load a model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bitnet_model::{BitNetModel, FfnActivation, LoadOptions};
use bitnet_tokenizer::Tokenizer;
use clap::Args;

/// The demo model shipped in the binary (`models/bitnet-demo-i2_s.gguf`, made by `scripts/train-demo.sh`).
static DEMO_MODEL: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/bitnet-demo-i2_s.gguf"
));

/// The local path of a model argument: a path as it is, or `hf:ORG/REPO[:FILE][@REVISION]` fetched
/// into the Hugging Face cache first (with a progress bar per file; nothing is fetched when it is
/// cached, or with HF_HUB_OFFLINE=1).
pub fn model_path(p: &Path) -> Result<PathBuf> {
    let Some(r) = p.to_str().and_then(bitnet_hub::ModelRef::parse) else {
        return Ok(p.to_path_buf());
    };
    let r = r?;
    let hub = bitnet_hub::Hub::from_env();
    let mut bar: Option<(String, indicatif::ProgressBar)> = None;
    let path = hub.fetch(&r, &mut |pr| {
        if bar.as_ref().map(|(f, _)| f.as_str()) != Some(pr.file) {
            if let Some((_, b)) = bar.take() {
                b.finish_and_clear();
            }
            let b = indicatif::ProgressBar::new(pr.total.unwrap_or(0));
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(pr.file.to_string());
            bar = Some((pr.file.to_string(), b));
        }
        if let Some((_, b)) = &bar {
            b.set_position(pr.done);
        }
    })?;
    if let Some((_, b)) = bar {
        b.finish_and_clear();
    }
    eprintln!("{r}: {}", path.display());
    Ok(path)
}

/// `-m`, `--ffn-act`, `-t`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a .gguf file, a Hugging Face folder, or hf:ORG/REPO (with :FILE and @REVISION optional;
    /// downloaded into the Hugging Face cache). Without it, the built-in demo model (a tiny BitNet
    /// trained on synthetic stories; see README); `synth:tiny` synthesizes a random-weight model.
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Override the FFN activation the file implies (relu2 for BitNet b1.58 2B-4T, silu for 1bitLLM).
    #[arg(long = "ffn-act", value_parser = parse_act)]
    pub ffn_act: Option<FfnActivation>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Output head type: `file` (as stored; lossless, the default) or `q8_0` (requantized at load: fewer
    /// bytes per token, faster decode, slightly different logits).
    #[arg(long = "head-type", value_parser = ["file", "q8_0"], default_value = "file")]
    pub head_type: String,
    /// KV cache type: `f32` (exact, the default) or `f16` (half the memory and faster long-context
    /// decoding; what bitnet.cpp and llama.cpp use; llama.cpp's -ctk/-ctv).
    #[arg(long = "cache-type", visible_alias = "ctk", value_parser = ["f32", "f16"], default_value = "f32")]
    pub cache_type: String,
}

fn parse_act(s: &str) -> Result<FfnActivation, String> {
    FfnActivation::parse(s).ok_or_else(|| format!("unknown activation '{s}' (expected relu2 or silu)"))
}

impl ModelArgs {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions { ffn_act: self.ffn_act }
    }

    /// Sets up the thread pool and loads the model (or synthesizes the demo model).
    pub fn load(&self) -> Result<(BitNetModel, Tokenizer)> {
        init_threads(self.threads)?;
        let t0 = Instant::now();
        let (model, tok) = match &self.model {
            Some(p) if p.as_os_str() == "synth:tiny" => {
                let bytes = bitnet_tools::synth::synth_gguf_bytes(bitnet_tools::synth::Shape::Tiny, 1)?;
                let g = bitnet_gguf::GgufFile::from_bytes(bytes, "synth:tiny")?;
                bitnet_model::load_gguf::from_gguf(&g, self.ffn_act)?
            }
            Some(p) => bitnet_model::load(&model_path(p)?, &self.load_options())?,
            None => {
                eprintln!(
                    "note: no -m given: using the built-in demo model (a tiny BitNet trained by `bitnet train` on \
                     synthetic children's stories and Q/A; see README)"
                );
                let g = bitnet_gguf::GgufFile::from_bytes(DEMO_MODEL.to_vec(), "demo:bitnet-demo-i2_s.gguf")?;
                bitnet_model::load_gguf::from_gguf(&g, self.ffn_act)?
            }
        };
        let mut model = model;
        if self.head_type == "q8_0" {
            model.requantize_head_q8_0()?;
        }
        model.kv_type = bitnet_model::KvType::parse(&self.cache_type)
            .ok_or_else(|| anyhow::anyhow!("--cache-type: unknown type '{}'", self.cache_type))?;
        let c = &model.cfg;
        eprintln!(
            "loaded {} ({} layers, hidden {}, vocab {}, ffn {}) in {:.2} s, {} threads",
            c.arch,
            c.num_layers,
            c.hidden_size,
            c.vocab_size,
            c.ffn_act,
            t0.elapsed().as_secs_f64(),
            bitnet_kernels::pool::num_threads()
        );
        Ok((model, tok))
    }

    /// [`load`](Self::load) for commands that generate or score text: an embedding model is refused
    /// with a message that says what it is and what to run instead.
    pub fn load_language_model(&self, command: &str) -> Result<(BitNetModel, Tokenizer)> {
        let (model, tok) = self.load()?;
        if model.cfg.family.is_embedding() {
            bail!(
                "bitnet {command} needs a language model, but this is an embedding model ({}); it turns texts \
                 into vectors: use `bitnet embed -m MODEL TEXT...` or `POST /v1/embeddings` of `bitnet serve`",
                model.cfg.family.describe()
            );
        }
        Ok((model, tok))
    }
}

/// Sizes the worker pools (`-t`): the kernels' persistent pool that runs the forward pass, and rayon's
/// global pool (used for one-off work such as loading).
pub fn init_threads(threads: Option<usize>) -> Result<()> {
    let n = match threads {
        Some(0) => bail!("-t/--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    bitnet_kernels::pool::set_num_threads(n);
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("starting the worker threads")?;
    Ok(())
}

/// Parses `--tokens 1,2,3` (also accepts a JSON list `[1, 2, 3]`).
pub fn parse_token_list(s: &str) -> Result<Vec<u32>> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    t.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<u32>().with_context(|| format!("'{x}' is not a token id")))
        .collect()
}

/// The worker process chat templates render in: this executable (`bitnet __chat-template-worker`),
/// its memory capped (see `bitnet_tokenizer::chat_template::sandbox`). `BITNET_TEMPLATE_SANDBOX=0`
/// renders in this process instead (for debugging a template; a hostile one can then exhaust memory).
pub fn template_sandbox() -> Option<std::sync::Arc<bitnet_tokenizer::chat_template::sandbox::Sandbox>> {
    use bitnet_tokenizer::chat_template::sandbox::{Sandbox, SandboxLimits};
    if std::env::var("BITNET_TEMPLATE_SANDBOX").is_ok_and(|v| v == "0") {
        return None;
    }
    let s = Sandbox::this_executable(SandboxLimits::default());
    if s.is_none() {
        eprintln!("warning: this executable's path is unknown; chat templates render without a memory cap");
    }
    s
}
