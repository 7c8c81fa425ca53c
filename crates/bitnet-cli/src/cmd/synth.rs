//! `bitnet synth`: a random-weight model file with a real model's layout.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bitnet_tools::synth::{self, Shape};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// tiny (a few MB, for demos and tests), 2b4t (the shape and metadata of BitNet b1.58 2B-4T) or
    /// falcon3-1b (Falcon3-1B-1.58bit's shape: the Llama family, `llama` arch, untied head).
    #[arg(long = "shape", default_value = "tiny")]
    pub shape: String,
    /// Output .gguf file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Seed of the random weights.
    #[arg(long = "seed", default_value_t = 1)]
    pub seed: u64,
}

pub fn run(a: Args) -> Result<()> {
    let shape =
        Shape::parse(&a.shape).with_context(|| format!("unknown --shape '{}' (tiny, 2b4t or falcon3-1b)", a.shape))?;
    synth::write_gguf(shape, a.seed, &a.output)?;
    eprintln!("wrote {}", a.output.display());
    Ok(())
}
