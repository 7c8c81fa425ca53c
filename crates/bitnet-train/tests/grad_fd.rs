//! The STE gradient is the gradient of the straight-through surrogate: on a tiny random model (float64),
//! autograd's gradient of the last `down_proj` master weight equals the gradient w.r.t. its quantized
//! weight made a leaf, and both match central finite differences of `W_q -> L(W_q)` (nothing is
//! quantized downstream of the last projection, so the surrogate is smooth there).

use std::collections::HashMap;

use anyhow::{Context, Result};
use bitnet_train::model::{cross_entropy, ModelDims, Rng, TrainModel};
use bitnet_train::quant::weight_quant;
use candle_core::{DType, Tensor, Var};

fn dims() -> ModelDims {
    ModelDims {
        hidden: 64,
        intermediate: 128,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        vocab: 40,
        context: 16,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
    }
}

#[test]
fn ste_gradient_matches_finite_differences_of_the_surrogate() -> Result<()> {
    let mut rng = Rng(42);
    let m32 = TrainModel::init(dims(), &mut rng)?;
    let model = m32.to_dtype(DType::F64)?;
    let (b, t) = (2, 8);
    let ids: Vec<u32> = (0..b * (t + 1)).map(|_| rng.below(40) as u32).collect();
    let inputs: Vec<u32> = (0..b)
        .flat_map(|r| ids[r * (t + 1)..r * (t + 1) + t].to_vec())
        .collect();
    let labels: Vec<u32> = (0..b)
        .flat_map(|r| ids[r * (t + 1) + 1..(r + 1) * (t + 1)].to_vec())
        .collect();
    let name = "model.layers.1.mlp.down_proj.weight";
    let w = model.param(name)?;

    // STE gradient of the master weight.
    let loss = cross_entropy(&model.forward(&inputs, b, t)?, &labels)?;
    let g_ste = loss
        .backward()?
        .get(w)
        .context("no gradient for down_proj")?
        .flatten_all()?
        .to_vec1::<f64>()?;

    // Gradient w.r.t. the quantized weight as a leaf.
    let wq0 = weight_quant(w)?.detach();
    let leaf = Var::from_tensor(&wq0)?;
    let ov: HashMap<String, &Tensor> = [(name.to_string(), leaf.as_tensor())].into_iter().collect();
    let loss2 = cross_entropy(&model.forward_with(&inputs, b, t, &ov)?, &labels)?;
    assert_eq!(loss.to_scalar::<f64>()?, loss2.to_scalar::<f64>()?);
    let g_leaf = loss2
        .backward()?
        .get(leaf.as_tensor())
        .context("no gradient for the leaf")?
        .flatten_all()?
        .to_vec1::<f64>()?;
    assert_eq!(
        g_ste, g_leaf,
        "STE gradient must be the gradient w.r.t. the quantized weight"
    );

    // Central differences of the surrogate at a spread of entries.
    let base = wq0.flatten_all()?.to_vec1::<f64>()?;
    let shape = wq0.dims().to_vec();
    let gmax = g_ste.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(gmax > 0.0);
    let h = 1e-5;
    let loss_at = |v: Vec<f64>| -> Result<f64> {
        let t_ = Tensor::from_vec(v, shape.as_slice(), &candle_core::Device::Cpu)?;
        let ov: HashMap<String, &Tensor> = [(name.to_string(), &t_)].into_iter().collect();
        Ok(cross_entropy(&model.forward_with(&inputs, b, t, &ov)?, &labels)?.to_scalar::<f64>()?)
    };
    let mut checked = 0;
    for k in 0..24 {
        let idx = (k * 977 + 13) % base.len();
        let mut plus = base.clone();
        plus[idx] += h;
        let mut minus = base.clone();
        minus[idx] -= h;
        let fd = (loss_at(plus)? - loss_at(minus)?) / (2.0 * h);
        let err = (fd - g_ste[idx]).abs();
        assert!(
            err <= 1e-6 * gmax,
            "entry {idx}: finite difference {fd:e} vs STE {:e}",
            g_ste[idx]
        );
        checked += 1;
    }
    assert_eq!(checked, 24);
    Ok(())
}
