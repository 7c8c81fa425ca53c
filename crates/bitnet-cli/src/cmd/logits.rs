//! `bitnet logits`: the logits of every position, as float32 `[tokens, vocab]` in a .npy file.

use std::path::PathBuf;

use anyhow::{bail, Result};
use bitnet_model::{InferenceState, LogitsWanted};
use bitnet_tools::npy;

use crate::common::{parse_token_list, ModelArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Token ids, e.g. `1014,253,451` (no BOS is added).
    #[arg(long = "tokens", conflicts_with = "prompt")]
    pub tokens: Option<String>,
    /// Text to tokenize instead (BOS added as the model prescribes).
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Output .npy file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let (model, tok) = a.model.load()?;
    let ids = match (&a.tokens, &a.prompt) {
        (Some(t), _) => parse_token_list(t)?,
        (None, Some(p)) => tok.encode(p, tok.add_bos_default())?,
        (None, None) => bail!("give the input with --tokens or -p"),
    };
    if ids.is_empty() {
        bail!("no tokens to evaluate");
    }
    let mut state = InferenceState::try_new(&model, ids.len())?;
    let logits = model.forward(&ids, &mut state, LogitsWanted::All)?;
    let vocab = model.head.rows();
    npy::write_f32(&a.output, &[ids.len(), vocab], logits)?;
    eprintln!("wrote logits [{}, {vocab}] to {}", ids.len(), a.output.display());
    Ok(())
}
