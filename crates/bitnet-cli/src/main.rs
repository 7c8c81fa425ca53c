//! `bitnet`: run, inspect and measure BitNet b1.58 ternary models. Flags follow llama.cpp's names.

mod cmd;
mod common;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bitnet",
    version,
    about = "Run, inspect and measure BitNet b1.58 (ternary) language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text after a prompt, printing tokens as they come.
    Generate(cmd::generate::Args),
    /// Chat with a model in the terminal (streams answers, keeps the conversation).
    Chat(cmd::chat::Args),
    /// Serve an OpenAI-compatible HTTP API (chat and text completions, continuous batching).
    Serve(cmd::serve::Args),
    /// Embeddings of texts with a BitNet embedding model (JSON lines or a .npy matrix).
    Embed(cmd::embed::Args),
    /// Write the logits of every position of a token sequence to a NumPy .npy file.
    Logits(cmd::logits::Args),
    /// Measure prefill, decode, long-context and batched throughput (llama-bench-style table).
    Bench(cmd::bench::Args),
    /// Print the token ids of a text as a JSON list.
    Tokenize(cmd::tokenize::Args),
    /// Print a model's architecture, hyperparameters, tokenizer and tensors.
    Inspect(cmd::inspect::Args),
    /// Write a random-weight model with the tensor layout of a real one (for demos and benchmarks).
    Synth(cmd::synth::Args),
    /// Convert a model (HF folder or GGUF) to a GGUF with I2_S, TQ2_0 or TQ1_0 ternary weights.
    Convert(cmd::convert::Args),
    /// Perplexity of a text (llama-perplexity's method), with KL divergence against saved logits.
    Perplexity(cmd::perplexity::Args),
    /// Ternarization error per tensor and per layer of a model with bf16 master weights.
    QuantReport(cmd::quant_report::Args),
    /// Train a small BitNet b1.58 model on CPU (quantization-aware), or write the demo corpus.
    Train(cmd::train::Args),
    /// Download a model (hf:ORG/REPO, with :FILE and @REVISION optional) into the Hugging Face cache.
    Pull(cmd::hub::PullArgs),
    /// The models in the Hugging Face cache: repositories, revisions, files, sizes.
    List(cmd::hub::ListArgs),
    /// Remove a repository (hf:ORG/REPO) from the Hugging Face cache.
    Rm(cmd::hub::RmArgs),
    /// Internal: renders chat templates for `chat` and `serve` in a memory-capped process.
    #[command(name = "__chat-template-worker", hide = true)]
    ChatTemplateWorker {
        /// Address-space limit in bytes.
        memory_bytes: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Generate(a) => cmd::generate::run(a),
        Command::Chat(a) => cmd::chat::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Embed(a) => cmd::embed::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Tokenize(a) => cmd::tokenize::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Pull(a) => cmd::hub::pull(a),
        Command::List(a) => cmd::hub::list(a),
        Command::Rm(a) => cmd::hub::rm(a),
        Command::Perplexity(a) => cmd::perplexity::run(a),
        Command::QuantReport(a) => cmd::quant_report::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::ChatTemplateWorker { memory_bytes } => {
            bitnet_tokenizer::chat_template::sandbox::serve_worker(memory_bytes).map_err(anyhow::Error::from)
        }
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
