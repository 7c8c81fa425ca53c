//! `bitnet quant-report`: ternarization error per tensor (and per layer on a calibration text) of a model
//! with master weights.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bitnet_tools::quant_report::{self, calib, plot, table, Report};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A Hugging Face folder with master (bf16) weights.
    pub model: PathBuf,
    /// Calibration text: also measure per-layer output error (ternary weights, int8 activations).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Calibration tokens used from the text (BOS included).
    #[arg(long = "calib-tokens", default_value_t = 128)]
    pub calib_tokens: usize,
    /// Print CSV instead of the table.
    #[arg(long = "csv", conflicts_with = "json")]
    pub csv: bool,
    /// Print JSON instead of the table.
    #[arg(long = "json")]
    pub json: bool,
    /// Draw SQNR and sparsity per layer to FILE.svg or FILE.png.
    #[arg(long = "plot")]
    pub plot: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    crate::common::init_threads(a.threads)?;
    let model = crate::common::model_path(&a.model)?;
    let tensors = quant_report::tensor_report(&model, false)?;
    let (layers, n_cal) = match &a.file {
        Some(f) => {
            let tok = bitnet_model::load_tokenizer(&model)?;
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let mut ids = tok.encode(&text, tok.add_bos_default())?;
            ids.truncate(a.calib_tokens.max(1));
            (calib::layer_errors(&model, &ids, false)?, ids.len())
        }
        None => (Vec::new(), 0),
    };
    let r = Report {
        model: a.model.display().to_string(),
        tensors,
        calibration_tokens: n_cal,
        layers,
    };
    if a.csv {
        print!("{}", table::to_csv(&r));
    } else if a.json {
        println!("{}", table::to_json(&r)?);
    } else {
        print!("{}", table::to_table(&r));
    }
    if let Some(p) = &a.plot {
        plot::plot(&r, p)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
