//! `--plot FILE.svg|png`: SQNR and sparsity per layer (plotters).
//!
//! Text needs a TrueType font: see [`crate::plot_font`].

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{per_layer_mean, Report};

/// A labelled, coloured line of (layer, value) points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

fn e<E: std::fmt::Display>(x: E) -> anyhow::Error {
    anyhow!("drawing the plot: {x}")
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, r: &Report) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(e)?;
    let (upper, lower) = root.split_vertically(root.dim_in_pixel().1 / 2);
    let sqnr = per_layer_mean(&r.tensors, |t| t.sqnr_db.min(1e3));
    let sqnr_min: Vec<(usize, f64)> = (0..sqnr.len())
        .map(|l| {
            let m = r
                .tensors
                .iter()
                .filter(|t| t.layer == l)
                .map(|t| t.sqnr_db.min(1e3))
                .fold(f64::INFINITY, f64::min);
            (l, m)
        })
        .collect();
    let zeros = per_layer_mean(&r.tensors, |t| 100.0 * t.zero_fraction);
    let n = sqnr.len().max(1) as f64;
    let mut all: Vec<f64> = sqnr.iter().chain(&sqnr_min).map(|p| p.1).collect();
    all.extend(r.layers.iter().map(|l| l.sqnr_total_db).filter(|v| v.is_finite()));
    all.extend(r.layers.iter().map(|l| l.sqnr_weights_db).filter(|v| v.is_finite()));
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = all.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() {
        (lo.floor() - 1.0, hi.ceil() + 1.0)
    } else {
        (0.0, 1.0)
    };

    let mut c = ChartBuilder::on(&upper)
        .caption(
            format!("Ternarization SQNR per layer - {}", r.model),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5..n - 0.5, lo..hi)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("layer")
        .y_desc("SQNR (dB)")
        .x_labels(sqnr.len().clamp(2, 32))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(e)?;
    let series: Vec<Series> = {
        let pts = |v: &[(usize, f64)]| v.iter().map(|&(l, y)| (l as f64, y)).collect::<Vec<_>>();
        let mut s = vec![
            ("weights, mean of the layer's 7 tensors", BLUE, pts(&sqnr)),
            (
                "weights, worst tensor of the layer",
                RGBColor(0, 150, 200),
                pts(&sqnr_min),
            ),
        ];
        if !r.layers.is_empty() {
            let ly = |f: fn(&super::LayerError) -> f64| {
                r.layers
                    .iter()
                    .map(|l| (l.layer as f64, f(l).min(1e3)))
                    .collect::<Vec<_>>()
            };
            s.push((
                "layer output, ternary weights",
                RGBColor(220, 120, 0),
                ly(|l| l.sqnr_weights_db),
            ));
            s.push(("layer output, ternary W + int8 acts", RED, ly(|l| l.sqnr_total_db)));
        }
        s
    };
    for (label, color, pts) in series {
        c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(e)?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(e)?;

    let zhi = zeros.iter().map(|p| p.1).fold(0.0, f64::max);
    let zlo = zeros.iter().map(|p| p.1).fold(100.0, f64::min);
    let pad = ((zhi - zlo) * 0.2).max(1.0);
    let mut z = ChartBuilder::on(&lower)
        .caption("Sparsity per layer (zero codes, % of weights)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5..n - 0.5, (zlo - pad).max(0.0)..(zhi + pad).min(100.0))
        .map_err(e)?;
    z.configure_mesh()
        .x_desc("layer")
        .y_desc("zeros (%)")
        .x_labels(zeros.len().clamp(2, 32))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(e)?;
    let zp: Vec<(f64, f64)> = zeros.iter().map(|&(l, y)| (l as f64, y)).collect();
    z.draw_series(LineSeries::new(zp.clone(), GREEN.stroke_width(2)))
        .map_err(e)?;
    z.draw_series(zp.into_iter().map(|p| Circle::new(p, 3, GREEN.filled())))
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Draws the report to `path` (`.svg` or `.png`, by extension).
pub fn plot(r: &Report, path: &Path) -> Result<()> {
    if r.tensors.is_empty() {
        bail!("nothing to plot: the report has no tensors");
    }
    crate::plot_font::register_sans_serif()?;
    let ext = path
        .extension()
        .and_then(|x| x.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let size = (1000u32, 760u32);
    match ext.as_str() {
        "svg" => draw(SVGBackend::new(path, size).into_drawing_area(), r),
        "png" => draw(BitMapBackend::new(path, size).into_drawing_area(), r),
        _ => bail!("--plot {}: use a .svg or .png file name", path.display()),
    }
    .with_context(|| format!("writing {}", path.display()))
}
