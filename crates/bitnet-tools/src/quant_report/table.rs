//! The report as a terminal table, CSV or JSON.

use std::fmt::Write as _;

use super::Report;

fn db(v: f64) -> String {
    if v.is_infinite() {
        "inf".to_string()
    } else {
        format!("{v:.2}")
    }
}

/// A fixed-width table for the terminal.
pub fn to_table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ternarization error of {} (absmean per tensor, as the engine loads it)",
        r.model
    );
    let _ = writeln!(
        s,
        "{:<40} {:>11} {:>10} {:>7} {:>11} {:>9} {:>8}",
        "tensor", "shape", "scale", "zeros%", "MSE", "SQNR dB", "cosine"
    );
    for t in &r.tensors {
        let _ = writeln!(
            s,
            "{:<40} {:>11} {:>10.6} {:>7.2} {:>11.4e} {:>9} {:>8.5}",
            t.name,
            format!("{}x{}", t.rows, t.cols),
            t.scale,
            100.0 * t.zero_fraction,
            t.mse,
            db(t.sqnr_db),
            t.cosine
        );
    }
    if !r.layers.is_empty() {
        let _ = writeln!(
            s,
            "\nlayer output error on {} calibration tokens (teacher-forced; branch output layer(x) - x)",
            r.calibration_tokens
        );
        let _ = writeln!(
            s,
            "{:>5} {:>22} {:>22} {:>22} {:>12}",
            "layer", "SQNR dB ternary W", "SQNR dB int8 acts", "SQNR dB total", "cos total"
        );
        for l in &r.layers {
            let _ = writeln!(
                s,
                "{:>5} {:>22} {:>22} {:>22} {:>12.6}",
                l.layer,
                db(l.sqnr_weights_db),
                db(l.sqnr_acts_db),
                db(l.sqnr_total_db),
                l.cosine_total
            );
        }
    }
    s
}

/// CSV: one row per tensor; with calibration, the layer's figures are repeated on its tensors' rows.
pub fn to_csv(r: &Report) -> String {
    let mut s = String::from(
        "tensor,layer,proj,rows,cols,scale,zero_fraction,mse,sqnr_db,cosine,layer_sqnr_weights_db,layer_sqnr_acts_db,layer_sqnr_total_db\n",
    );
    for t in &r.tensors {
        let l = r.layers.iter().find(|l| l.layer == t.layer);
        let f = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            t.name,
            t.layer,
            t.proj,
            t.rows,
            t.cols,
            t.scale,
            t.zero_fraction,
            t.mse,
            t.sqnr_db,
            t.cosine,
            f(l.map(|l| l.sqnr_weights_db)),
            f(l.map(|l| l.sqnr_acts_db)),
            f(l.map(|l| l.sqnr_total_db)),
        );
    }
    s
}

/// JSON (infinite SQNR, an exactly ternary tensor, becomes null).
pub fn to_json(r: &Report) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(r)?)
}
