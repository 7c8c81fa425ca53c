//! The two-stage learning-rate and weight-decay schedule of BitNet b1.58 (2B-4T technical report):
//! after a linear warm-up, stage one decays the learning rate along a cosine from its peak while weight
//! decay follows a cosine from its peak (0.1); halfway through, the "cooldown" stage drops the learning
//! rate abruptly and decays it further along a cosine, with weight decay switched off.

/// Learning rate and weight decay for update number `step` (0-based) of `total`.
pub fn lr_wd(step: u64, total: u64, warmup: u64, peak_lr: f64, peak_wd: f64) -> (f64, f64) {
    let total = total.max(1);
    let half = (total / 2).max(1);
    let cos = |frac: f64| 0.5 * (1.0 + (std::f64::consts::PI * frac.clamp(0.0, 1.0)).cos());
    if step < half {
        // Stage 1: peak -> 0.5 peak (cosine) after warm-up; weight decay peak -> 0 (cosine).
        let lr = if step < warmup {
            peak_lr * (step + 1) as f64 / warmup as f64
        } else {
            let frac = (step - warmup.min(step)) as f64 / (half - warmup.min(half - 1)).max(1) as f64;
            peak_lr * (0.5 + 0.5 * cos(frac))
        };
        (lr, peak_wd * cos(step as f64 / half as f64))
    } else {
        // Stage 2: abrupt drop to 0.3 peak, cosine to 0.03 peak; no weight decay.
        let frac = (step - half) as f64 / (total - half).max(1) as f64;
        (peak_lr * (0.03 + 0.27 * cos(frac)), 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_stages() {
        let (lr0, wd0) = lr_wd(0, 1000, 10, 1e-3, 0.1);
        assert!((lr0 - 1e-4).abs() < 1e-12 && (wd0 - 0.1).abs() < 1e-9);
        let (lr_peak, _) = lr_wd(9, 1000, 10, 1e-3, 0.1);
        assert!((lr_peak - 1e-3).abs() < 1e-12);
        let (lr_a, wd_a) = lr_wd(499, 1000, 10, 1e-3, 0.1);
        let (lr_b, wd_b) = lr_wd(500, 1000, 10, 1e-3, 0.1);
        assert!(lr_a > 4.9e-4 && lr_b < 3.01e-4 && lr_b > 2.9e-4, "{lr_a} {lr_b}");
        assert!(wd_a < 1e-3 && wd_b == 0.0);
        let (lr_end, _) = lr_wd(999, 1000, 10, 1e-3, 0.1);
        assert!(lr_end < 3.1e-5);
    }
}
