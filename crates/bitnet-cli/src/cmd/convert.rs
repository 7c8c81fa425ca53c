//! `bitnet convert`: a model (Hugging Face folder or GGUF) to a GGUF with I2_S, TQ2_0 or TQ1_0 weights.

use std::path::PathBuf;

use anyhow::Result;
use bitnet_model::FfnActivation;
use bitnet_tokenizer::chat_template::ChatTemplate;
use bitnet_tools::convert::{convert, ConvertOptions, HeadType, TernaryType};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input: a Hugging Face folder (bf16 masters or the packed release) or a .gguf file.
    pub input: PathBuf,
    /// Output .gguf file (written atomically).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Ternary type: i2_s (bitnet.cpp's official layout), tq2_0 or tq1_0 (llama.cpp's `bitnet` arch).
    #[arg(long = "type", value_parser = parse_type, default_value = "i2_s")]
    pub to: TernaryType,
    /// Type of the embedding table / output head: f16 (as the official file), f32, bf16, q8_0, or source
    /// (the input's bytes unchanged).
    #[arg(long = "head-type", value_parser = parse_head, default_value = "f16")]
    pub head_type: HeadType,
    /// Override the FFN activation the input implies (relu2 for BitNet b1.58, silu for 1bitLLM).
    #[arg(long = "ffn-act", value_parser = parse_act)]
    pub ffn_act: Option<FfnActivation>,
    /// Set tokenizer.ggml.pre (default: copied, or llama-bpe for Llama-3 tokenizers).
    #[arg(long = "pre")]
    pub pre: Option<String>,
    /// Replace the chat template: a file holding Jinja, or a built-in name (bitnet, llama3, chatml). Fixes
    /// files whose template is missing or wrong (bitnet.cpp's converter writes `BITNETAssistant:`).
    #[arg(long = "chat-template")]
    pub chat_template: Option<String>,
    /// general.name of the output (default: the input's, or its file/folder name).
    #[arg(long = "name")]
    pub name: Option<String>,
    /// Overwrite OUTPUT if it exists.
    #[arg(long = "force")]
    pub force: bool,
}

fn parse_type(s: &str) -> Result<TernaryType, String> {
    TernaryType::parse(s).ok_or_else(|| format!("unknown type '{s}' (expected i2_s, tq2_0 or tq1_0)"))
}

fn parse_head(s: &str) -> Result<HeadType, String> {
    HeadType::parse(s).ok_or_else(|| format!("unknown head type '{s}' (expected f16, f32, bf16, q8_0 or source)"))
}

fn parse_act(s: &str) -> Result<FfnActivation, String> {
    FfnActivation::parse(s).ok_or_else(|| format!("unknown activation '{s}' (expected relu2 or silu)"))
}

pub fn run(a: Args) -> Result<()> {
    bitnet_tools::safe_write::install_interrupt_cleanup();
    let chat_template = match &a.chat_template {
        Some(spec) => Some(ChatTemplate::source_of_spec(spec)?),
        None => None,
    };
    let opts = ConvertOptions {
        to: a.to,
        head_type: a.head_type,
        ffn_act: a.ffn_act,
        pre: a.pre,
        chat_template,
        name: a.name,
        force: a.force,
        quiet: false,
    };
    let input = crate::common::model_path(&a.input)?;
    let s = convert(&input, &a.output, &opts)?;
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!("tokenizer.ggml.pre: {}", s.pre_reason);
    eprintln!(
        "wrote {} (arch {}, {} tensors, {} bytes)",
        a.output.display(),
        s.arch,
        s.n_tensors,
        s.n_bytes
    );
    Ok(())
}
