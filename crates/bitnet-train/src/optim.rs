//! AdamW and gradient clipping with PyTorch's exact float32 arithmetic (`torch.optim.AdamW`,
//! single-tensor path; `clip_grad_norm_`), so a step matches the reference to the last ulp or two.

use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters (the learning rate and weight decay come per step from the schedule).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        // BitNet b1.58's betas.
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
        }
    }
}

/// Optimizer state of one parameter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Moments {
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
}

/// AdamW over a fixed list of parameters.
#[derive(Clone, Debug)]
pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Steps taken so far.
    pub step: u64,
    pub state: Vec<Moments>,
}

impl AdamW {
    /// Fresh state for parameters of the given sizes.
    pub fn new(cfg: AdamWConfig, sizes: &[usize]) -> Self {
        AdamW {
            cfg,
            step: 0,
            state: sizes
                .iter()
                .map(|&n| Moments {
                    exp_avg: vec![0.0; n],
                    exp_avg_sq: vec![0.0; n],
                })
                .collect(),
        }
    }

    /// One update of every parameter: `params[i] -= ...` with gradient `grads[i]` (already clipped),
    /// learning rate `lr`, and weight decay `wd` for the parameters whose `decay[i]` is true.
    ///
    /// Mirrors torch: decoupled decay first (`p *= 1 - lr*wd`), `m = lerp(m, g, 1-b1)`,
    /// `v = v*b2 + ((1-b2)*g)*g`, `p += (-lr/bc1 * m) / (sqrt(v)/sqrt(bc2) + eps)`, with every
    /// float64 scalar rounded to float32 before the float32 element-wise operation.
    pub fn update(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], decay: &[bool], lr: f64, wd: f64) {
        assert_eq!(params.len(), self.state.len(), "AdamW: parameter count changed");
        assert_eq!(grads.len(), self.state.len(), "AdamW: gradient count differs");
        self.step += 1;
        let t = self.step as i32;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let neg_step = (-(lr / bc1)) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let eps = c.eps as f32;
        let w1 = (1.0 - c.beta1) as f32;
        let b2 = c.beta2 as f32;
        let one_minus_b2 = (1.0 - c.beta2) as f32;
        let decay_factor = (1.0 - lr * wd) as f32;
        #[allow(clippy::type_complexity)] // the zipped (param, grad, moments, decay) item of the loop below
        let work = |((p, g), (st, &dec)): ((&mut Vec<f32>, &Vec<f32>), (&mut Moments, &bool))| {
            let apply_wd = dec && wd != 0.0;
            for i in 0..p.len() {
                let gi = g[i];
                let mut pi = p[i];
                if apply_wd {
                    pi *= decay_factor;
                }
                let m = &mut st.exp_avg[i];
                // torch.lerp with weight < 0.5: self + weight * (end - self).
                *m += w1 * (gi - *m);
                let v = &mut st.exp_avg_sq[i];
                *v = *v * b2 + (one_minus_b2 * gi) * gi;
                let denom = v.sqrt() / bc2_sqrt + eps;
                pi += (neg_step * *m) / denom;
                p[i] = pi;
            }
        };
        use rayon::prelude::*;
        params
            .par_iter_mut()
            .zip(grads.par_iter())
            .zip(self.state.par_iter_mut().zip(decay.par_iter()))
            .for_each(work);
    }
}

/// Total L2 norm of all gradients as torch computes it: the norm of the per-parameter norms, float32.
pub fn total_grad_norm(grads: &[Vec<f32>]) -> f32 {
    let norms: Vec<f32> = grads
        .iter()
        .map(|g| g.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt() as f32)
        .collect();
    norms.iter().map(|&n| f64::from(n) * f64::from(n)).sum::<f64>().sqrt() as f32
}

/// Scales every gradient by `min(max_norm / (total + 1e-6), 1)` (float32, also when it is 1, like
/// torch); returns `(total norm before clipping, coefficient)`.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: f64) -> (f32, f32) {
    let total = total_grad_norm(grads);
    let coef = ((max_norm as f32) / (total + 1e-6f32)).min(1.0);
    for g in grads.iter_mut() {
        g.iter_mut().for_each(|x| *x *= coef);
    }
    (total, coef)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_about_lr_times_sign() {
        let mut opt = AdamW::new(AdamWConfig::default(), &[3]);
        let mut p = vec![vec![1.0f32, -2.0, 0.5]];
        let g = vec![vec![0.3f32, -0.01, 0.0]];
        opt.update(&mut p, &g, &[false], 1e-3, 0.1);
        assert!((p[0][0] - (1.0 - 1e-3)).abs() < 1e-6);
        assert!((p[0][1] - (-2.0 + 1e-3)).abs() < 1e-6);
        assert_eq!(p[0][2], 0.5);
    }

    #[test]
    fn decay_only_where_asked() {
        let mut opt = AdamW::new(AdamWConfig::default(), &[1, 1]);
        let mut p = vec![vec![2.0f32], vec![2.0f32]];
        opt.update(&mut p, &[vec![0.0], vec![0.0]], &[true, false], 0.1, 0.5);
        assert!((p[0][0] - 2.0 * 0.95).abs() < 1e-6);
        assert_eq!(p[1][0], 2.0);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut g = vec![vec![3.0f32], vec![4.0f32]];
        let (total, coef) = clip_grad_norm(&mut g, 1.0);
        assert!((total - 5.0).abs() < 1e-6);
        assert!((coef - 0.2).abs() < 1e-6);
        assert!((g[0][0] - 0.6).abs() < 1e-6 && (g[1][0] - 0.8).abs() < 1e-6);
        let mut small = vec![vec![0.1f32]];
        assert_eq!(clip_grad_norm(&mut small, 1.0).1, 1.0);
    }
}
