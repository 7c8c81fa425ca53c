//! `bitnet tokenize`: token ids of a text as a JSON list on one line.

use anyhow::Result;

use crate::common::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to tokenize (special-token text such as `<|eot_id|>` maps to its id).
    pub text: String,
    /// Do not add the BOS token.
    #[arg(long = "no-bos")]
    pub no_bos: bool,
}

pub fn run(a: Args) -> Result<()> {
    let tok = match &a.model.model {
        // Only the tokenizer is needed: do not load the weights.
        Some(p) if p.as_os_str() != "synth:tiny" => bitnet_model::load_tokenizer(&crate::common::model_path(p)?)?,
        Some(_) => a.model.load()?.1,
        None => a.model.load()?.1,
    };
    let ids = tok.encode(&a.text, !a.no_bos && tok.add_bos_default())?;
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
