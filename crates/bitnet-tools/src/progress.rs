//! Progress bars (indicatif) with one look across the tools; hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps labelled `what`. `quiet` hides it (tests, `--quiet`).
pub fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    let pb = if quiet {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden())
    } else {
        ProgressBar::new(len)
    };
    let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}
