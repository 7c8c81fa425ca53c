//! `bitnet inspect`.

use std::path::PathBuf;

use anyhow::Result;
use bitnet_model::{FfnActivation, LoadOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .gguf file, a Hugging Face folder, or hf:ORG/REPO (with :FILE and @REVISION optional).
    pub model: PathBuf,
    /// Show the FFN activation as it would be with this override.
    #[arg(long = "ffn-act", value_parser = |s: &str| FfnActivation::parse(s).ok_or_else(|| format!("unknown activation '{s}'")))]
    pub ffn_act: Option<FfnActivation>,
}

pub fn run(a: Args) -> Result<()> {
    let report = bitnet_model::inspect::inspect(
        &crate::common::model_path(&a.model)?,
        &LoadOptions { ffn_act: a.ffn_act },
    )?;
    print!("{report}");
    Ok(())
}
