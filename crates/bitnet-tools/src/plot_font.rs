//! The font for plots' text. plotters' pure-Rust text path (ab_glyph) has no font built in, so a system
//! TrueType font is loaded at run time (`BITNET_PLOT_FONT=/path/to/font.ttf` names one explicitly). Shared
//! by `quant-report --plot` and `bitnet train --plot`.

use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::style::FontStyle;

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a system TrueType font as plotters' "sans-serif" (once per process). Every plot with text
/// calls this first; without it plotters' ab_glyph text path fails with `FontUnavailable`.
pub fn register_sans_serif() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut candidates: Vec<String> = Vec::new();
        if let Ok(p) = std::env::var("BITNET_PLOT_FONT") {
            candidates.push(p);
        }
        candidates.extend(FONT_CANDIDATES.iter().map(|s| s.to_string()));
        for c in &candidates {
            if let Ok(bytes) = std::fs::read(c) {
                let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "no TrueType font found for the plot's text (looked for {}); set BITNET_PLOT_FONT=/path/to/font.ttf",
            FONT_CANDIDATES.join(", ")
        ))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}
