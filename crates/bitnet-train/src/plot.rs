//! The loss curve as an SVG (plotters): training loss per step, validation loss where measured, and the
//! unigram baseline as a reference line.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::checkpoint::HistoryPoint;

/// Draws `history` into `path`. `baseline` (nats/token) is drawn as a dashed-looking grey line.
pub fn plot_loss(history: &[HistoryPoint], baseline: Option<f64>, path: &Path) -> Result<()> {
    if history.is_empty() {
        return Err(anyhow!("no training steps to plot"));
    }
    let max_step = history.iter().map(|h| h.step).max().unwrap_or(1).max(1);
    let mut ymax = history.iter().map(|h| h.loss).fold(0.0f64, f64::max);
    if let Some(b) = baseline {
        ymax = ymax.max(b);
    }
    let ymin = history
        .iter()
        .flat_map(|h| [Some(h.loss), h.val_loss])
        .flatten()
        .fold(f64::INFINITY, f64::min)
        .min(ymax)
        .max(0.0);
    bitnet_tools::plot_font::register_sans_serif()?;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("bitnet train: loss (nats/token)", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..max_step as f64, (ymin * 0.9)..(ymax * 1.05))
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(LineSeries::new(history.iter().map(|h| (h.step as f64, h.loss)), &BLUE))
        .map_err(|x| e(&x))?
        .label("train (batch)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    let val: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|h| h.val_loss.map(|v| (h.step as f64, v)))
        .collect();
    if !val.is_empty() {
        chart
            .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    if let Some(b) = baseline {
        chart
            .draw_series(LineSeries::new(vec![(0.0, b), (max_step as f64, b)], &BLACK.mix(0.4)))
            .map_err(|x| e(&x))?
            .label("unigram baseline")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
