//! The per-token float operations of the forward pass (norms, RoPE), written to follow the reference's
//! f32 arithmetic order closely. The operations that split their work across threads (matrix
//! products, attention) live in [`bitnet_kernels::ops`].

/// RMSNorm: `w * (x / sqrt(mean(x^2) + eps))`, with the mean of squares accumulated in f64 and the
/// rest in f32 like the reference (`x * rsqrt(var + eps)` then `weight *`).
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), w.len());
    let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let var = (ss / x.len().max(1) as f64) as f32;
    let inv = 1.0f32 / (var + eps).sqrt();
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = wi * (xi * inv);
    }
}

/// [`rmsnorm`] in place (the same arithmetic).
pub fn rmsnorm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), w.len());
    let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let var = (ss / x.len().max(1) as f64) as f32;
    let inv = 1.0f32 / (var + eps).sqrt();
    for (xi, &wi) in x.iter_mut().zip(w) {
        *xi = wi * (*xi * inv);
    }
}

/// RMSNorm of `n` rows of width `w.len()`, in place from `x` into `out`.
pub fn rmsnorm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        rmsnorm(xr, w, eps, or);
    }
}

/// cos/sin of the RoPE angles for one position: `angle_i = pos * theta^(-2i/rope_dim)` in f32, for
/// `i < rope_dim/2` (half-split / NEOX layout, as transformers' `rotate_half`).
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(rope_dim: usize, theta: f32) -> Self {
        let inv_freq = (0..rope_dim / 2)
            .map(|i| 1.0f32 / theta.powf((2 * i) as f32 / rope_dim as f32))
            .collect();
        Rope { inv_freq }
    }

    /// Fills `cos`/`sin` (each `rope_dim/2` long) for position `pos`.
    pub fn angles(&self, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
        let p = pos as f32;
        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(&self.inv_freq) {
            let a = p * f;
            *c = a.cos();
            *s = a.sin();
        }
    }

    pub fn half(&self) -> usize {
        self.inv_freq.len()
    }
}

/// Rotates the first `2 * cos.len()` values of one head in place: `x*cos + rotate_half(x)*sin`.
#[inline]
pub fn rope_head(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let h = cos.len();
    for i in 0..h {
        let x0 = x[i];
        let x1 = x[i + h];
        x[i] = x0 * cos[i] + (-x1) * sin[i];
        x[i + h] = x1 * cos[i] + x0 * sin[i];
    }
}

/// [`rope_head`] for heads whose rotated pairs are adjacent (`2i`, `2i+1`: llama.cpp's NORM RoPE,
/// used by GGUF `llama` files whose q/k rows the converter permuted). On permuted rows it computes
/// the same values, in the same f32 operations, as [`rope_head`] on the original rows.
#[inline]
pub fn rope_head_interleaved(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for (i, pair) in x[..2 * cos.len()].chunks_exact_mut(2).enumerate() {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = x0 * cos[i] + (-x1) * sin[i];
        pair[1] = x1 * cos[i] + x0 * sin[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_unit_weights_gives_unit_rms() {
        let x = [3.0f32, -4.0, 0.0, 5.0];
        let mut o = [0.0; 4];
        rmsnorm(&x, &[1.0; 4], 0.0, &mut o);
        let rms = (o.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6, "{rms}");
    }

    #[test]
    fn interleaved_rope_on_permuted_rows_equals_half_split() {
        // The GGUF converters' permutation: within a head, row j of the first half goes to 2j and
        // row j of the second half to 2j + 1.
        let r = Rope::new(8, 10_000.0);
        let (mut c, mut s) = (vec![0.0; 4], vec![0.0; 4]);
        r.angles(23, &mut c, &mut s);
        let x: Vec<f32> = (0..8).map(|i| (i as f32 * 0.37).sin()).collect();
        let perm = |v: &[f32]| -> Vec<f32> { (0..8).map(|k| v[(k % 2) * 4 + k / 2]).collect() };
        let mut a = x.clone();
        rope_head(&mut a, &c, &s);
        let mut b = perm(&x);
        rope_head_interleaved(&mut b, &c, &s);
        assert_eq!(b, perm(&a));
    }

    #[test]
    fn rmsnorm_in_place_equals_rmsnorm() {
        let x: Vec<f32> = (0..13).map(|i| i as f32 * 0.7 - 3.0).collect();
        let w: Vec<f32> = (0..13).map(|i| 1.0 + i as f32 * 0.01).collect();
        let mut o = vec![0.0; 13];
        rmsnorm(&x, &w, 1e-6, &mut o);
        let mut y = x.clone();
        rmsnorm_in_place(&mut y, &w, 1e-6);
        assert_eq!(o, y);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let r = Rope::new(8, 10_000.0);
        let (mut c, mut s) = (vec![0.0; 4], vec![0.0; 4]);
        r.angles(0, &mut c, &mut s);
        let mut x: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let x0 = x.clone();
        rope_head(&mut x, &c, &s);
        assert_eq!(x, x0);
        r.angles(17, &mut c, &mut s);
        rope_head(&mut x, &c, &s);
        let n0: f32 = x0.iter().map(|v| v * v).sum();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
    }
}
