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
    /// Write the logits of every position of a token sequence to a NumPy .npy file.
    Logits(cmd::logits::Args),
    /// Print the token ids of a text as a JSON list.
    Tokenize(cmd::tokenize::Args),
    /// Print a model's architecture, hyperparameters, tokenizer and tensors.
    Inspect(cmd::inspect::Args),
    /// Write a random-weight model with the tensor layout of a real one (for demos and benchmarks).
    Synth(cmd::synth::Args),
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Generate(a) => cmd::generate::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Tokenize(a) => cmd::tokenize::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Synth(a) => cmd::synth::run(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
