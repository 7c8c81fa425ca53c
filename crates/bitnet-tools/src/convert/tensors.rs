//! Re-encoding the loaded model's tensors into the output's GGML types.
//!
//! Ternary projections keep their codes exactly whatever the source format; only the scale layout
//! changes: I2_S has one f32 scale per tensor, TQ2_0/TQ1_0 one f16 scale per 256 values.

use anyhow::{bail, Context, Result};
use bitnet_gguf::GgmlType;
use bitnet_kernels::{i2s, tq1_0, tq2_0, FloatFormat, FloatMatrix};
use bitnet_model::Linear;
use half::{bf16, f16};

/// The ternary output types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TernaryType {
    I2S,
    TQ2_0,
    TQ1_0,
}

impl TernaryType {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "i2_s" | "i2s" => Some(Self::I2S),
            "tq2_0" => Some(Self::TQ2_0),
            "tq1_0" => Some(Self::TQ1_0),
            _ => None,
        }
    }

    pub fn ggml(self) -> GgmlType {
        match self {
            Self::I2S => GgmlType::I2_S,
            Self::TQ2_0 => GgmlType::TQ2_0,
            Self::TQ1_0 => GgmlType::TQ1_0,
        }
    }

    /// Values a row length must be a multiple of.
    pub fn row_multiple(self) -> usize {
        match self {
            Self::I2S => i2s::BLOCK,
            Self::TQ2_0 => tq2_0::BLOCK,
            Self::TQ1_0 => tq1_0::BLOCK,
        }
    }
}

/// Type of the embedding table / output head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadType {
    F32,
    F16,
    BF16,
    Q8_0,
    /// Whatever the source holds, bytes copied unchanged.
    Source,
}

impl HeadType {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Some(Self::F32),
            "f16" => Some(Self::F16),
            "bf16" => Some(Self::BF16),
            "q8_0" => Some(Self::Q8_0),
            "source" | "keep" => Some(Self::Source),
            _ => None,
        }
    }
}

/// All codes (row-major, -1/0/1) of a projection, and the scale of each 256-value block when the
/// source is block-scaled (TQ), already multiplied by any per-tensor output scale.
pub struct Codes {
    pub codes: Vec<i8>,
    /// Per-tensor scale (I2_S sources and ternarized floats).
    pub tensor_scale: Option<f32>,
    /// Per-256-block scales (TQ sources), row-major.
    pub block_scales: Option<Vec<f32>>,
}

pub fn codes_of(lin: &Linear) -> Codes {
    let w = &lin.w;
    let (rows, cols) = (w.rows(), w.cols());
    let mut codes = vec![0i8; rows * cols];
    for (r, row) in codes.chunks_exact_mut(cols).enumerate() {
        w.row_codes(r, row);
    }
    let os = lin.out_scale.unwrap_or(1.0);
    // Per-tensor-scaled layouts have a scale; block-scaled ones give theirs per row.
    match w.scale() {
        Some(scale) => Codes {
            codes,
            tensor_scale: Some(scale * os),
            block_scales: None,
        },
        None => {
            let nb = cols.div_ceil(w.block_size());
            let mut s = vec![0f32; rows * nb];
            for (r, row) in s.chunks_exact_mut(nb).enumerate() {
                w.row_scales(r, row);
            }
            s.iter_mut().for_each(|v| *v *= os);
            Codes {
                codes,
                tensor_scale: None,
                block_scales: Some(s),
            }
        }
    }
}

/// One per-tensor scale for block-scaled codes: the common scale of the blocks that hold a nonzero
/// code (llama-quantize's blocks all hold the tensor's scale, rounded to f16). When blocks disagree the
/// nonzero-weighted mean is used and `Err(spread)` tells the caller how lossy that is.
pub fn unify_block_scales(codes: &[i8], scales: &[f32], block: usize) -> (f32, Option<f32>) {
    let (mut sum, mut count) = (0f64, 0f64);
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for (vals, &d) in codes.chunks(block).zip(scales) {
        let nz = vals.iter().filter(|&&v| v != 0).count();
        if nz == 0 {
            continue;
        }
        sum += d as f64 * nz as f64;
        count += nz as f64;
        lo = lo.min(d);
        hi = hi.max(d);
    }
    if count == 0.0 {
        return (scales.first().copied().unwrap_or(0.0), None);
    }
    if lo == hi {
        (lo, None)
    } else {
        let mean = (sum / count) as f32;
        (mean, Some((hi - lo) / mean.abs().max(f32::MIN_POSITIVE)))
    }
}

/// Reorders the rows of each of `heads` heads from Hugging Face's half-split order to the
/// interleaved pairs llama.cpp's `llama` arch reads (row `2j + s` of a head takes row `s * d/2 + j`;
/// transformers' `LlamaModel.permute` in the peers' converters). `per_row` values move with each row.
pub fn permute_heads<T: Copy>(v: &mut [T], rows: usize, heads: usize) -> Result<()> {
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) || !v.len().is_multiple_of(rows) {
        bail!("cannot permute {rows} rows into {heads} heads of an even width");
    }
    let per_row = v.len() / rows;
    let hd = rows / heads;
    let half = hd / 2;
    let src = v.to_vec();
    for h in 0..heads {
        for j in 0..half {
            for s in 0..2 {
                let (to, from) = (h * hd + 2 * j + s, h * hd + s * half + j);
                v[to * per_row..(to + 1) * per_row].copy_from_slice(&src[from * per_row..(from + 1) * per_row]);
            }
        }
    }
    Ok(())
}

/// Encodes one projection; with `permute_heads: Some(n)` its rows are reordered for llama.cpp's
/// interleaved RoPE first ([`permute_heads`]). `warn` receives a note when the conversion cannot be
/// exact.
pub fn encode_ternary(
    name: &str,
    lin: &Linear,
    to: TernaryType,
    permute: Option<usize>,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<u8>> {
    let (rows, cols) = (lin.w.rows(), lin.w.cols());
    let m = to.row_multiple();
    if !cols.is_multiple_of(m) {
        bail!(
            "tensor '{name}' has rows of {cols} values ({rows} x {cols}); {} needs the row length to be a \
             multiple of {m}, so this model cannot be stored as {}",
            to.ggml().name(),
            to.ggml().name()
        );
    }
    let mut c = codes_of(lin);
    if let Some(heads) = permute {
        permute_heads(&mut c.codes, rows, heads).with_context(|| format!("tensor '{name}'"))?;
        if let Some(bs) = c.block_scales.as_mut() {
            permute_heads(bs, rows, heads).with_context(|| format!("tensor '{name}'"))?;
        }
    }
    let enc = match to {
        TernaryType::I2S => {
            let scale = match (c.tensor_scale, &c.block_scales) {
                (Some(s), _) => s,
                (None, Some(bs)) => {
                    let (s, spread) = unify_block_scales(&c.codes, bs, tq2_0::BLOCK);
                    if let Some(sp) = spread {
                        warn(format!(
                            "tensor '{name}': its 256-value blocks have different scales (spread {:.2}% of the \
                             mean); I2_S holds one scale per tensor, so the nonzero-weighted mean is used",
                            sp * 100.0
                        ));
                    }
                    s
                }
                (None, None) => 1.0,
            };
            i2s::encode(&c.codes, scale)
        }
        TernaryType::TQ2_0 | TernaryType::TQ1_0 => {
            let nb = rows * cols / tq2_0::BLOCK;
            let scales = match (&c.block_scales, c.tensor_scale) {
                (Some(bs), _) => bs.clone(),
                (None, Some(s)) => vec![s; nb],
                (None, None) => vec![1.0; nb],
            };
            if let Some(bad) = scales.iter().find(|s| f16::from_f32(**s).is_infinite()) {
                bail!(
                    "tensor '{name}': scale {bad} does not fit the f16 block scale of {}",
                    to.ggml().name()
                );
            }
            if to == TernaryType::TQ2_0 {
                tq2_0::encode(&c.codes, &scales)
            } else {
                tq1_0::encode(&c.codes, &scales)
            }
        }
    };
    enc.with_context(|| format!("encoding tensor '{name}' as {}", to.ggml().name()))
}

/// GGML type of a kernels float format.
pub fn ggml_of(f: FloatFormat) -> GgmlType {
    match f {
        FloatFormat::F32 => GgmlType::F32,
        FloatFormat::F16 => GgmlType::F16,
        FloatFormat::BF16 => GgmlType::BF16,
        FloatFormat::Q8_0 => GgmlType::Q8_0,
        FloatFormat::Q6_K => GgmlType::Q6_K,
        FloatFormat::Q4_K => GgmlType::Q4_K,
    }
}

/// Q8_0 blocks of 32 values: f16 scale `d = max|x| / 127`, then `round(x / d)` as i8 (ggml's rule:
/// rounding half away from zero).
pub fn encode_q8_0(x: &[f32], out: &mut Vec<u8>) {
    for blk in x.chunks(32) {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        out.extend(blk.iter().map(|&v| (v * id).round().clamp(-127.0, 127.0) as i8 as u8));
    }
}

/// Encodes the embedding table or output head.
pub fn encode_float(name: &str, m: &FloatMatrix, to: HeadType) -> Result<(GgmlType, Vec<u8>)> {
    let (rows, cols) = (m.rows(), m.cols());
    if to == HeadType::Source {
        let f = m.format();
        let n = f
            .row_bytes(cols)
            .and_then(|rb| rb.checked_mul(rows))
            .with_context(|| format!("tensor '{name}': {rows} x {cols} does not fit {f:?}"))?;
        let data = m.data();
        if data.len() < n {
            bail!("tensor '{name}': {} bytes, {n} expected", data.len());
        }
        return Ok((ggml_of(f), data[..n].to_vec()));
    }
    if to == HeadType::Q8_0 && !cols.is_multiple_of(32) {
        bail!("tensor '{name}' has rows of {cols} values; Q8_0 needs a multiple of 32 (use --head-type f16)");
    }
    let (ty, per) = match to {
        HeadType::F32 => (GgmlType::F32, cols * 4),
        HeadType::F16 => (GgmlType::F16, cols * 2),
        HeadType::BF16 => (GgmlType::BF16, cols * 2),
        HeadType::Q8_0 => (GgmlType::Q8_0, cols / 32 * 34),
        HeadType::Source => unreachable!("handled above"),
    };
    let mut out = Vec::with_capacity(rows * per);
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        m.dequantize_row(r, &mut row);
        match to {
            HeadType::F32 => row.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            HeadType::F16 => row
                .iter()
                .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes())),
            HeadType::BF16 => row
                .iter()
                .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes())),
            HeadType::Q8_0 => encode_q8_0(&row, &mut out),
            HeadType::Source => {}
        }
    }
    Ok((ty, out))
}

/// F32 bytes of a vector (norm weights).
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_kernels::{Bytes, TernaryMatrix};

    #[test]
    fn q8_0_round_trips_through_the_kernels_decoder() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173).collect();
        let mut bytes = Vec::new();
        encode_q8_0(&x, &mut bytes);
        let m = FloatMatrix::new(FloatFormat::Q8_0, 1, 64, Bytes::from_vec(bytes)).unwrap();
        let mut y = vec![0f32; 64];
        m.dequantize_row(0, &mut y);
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= amax / 127.0 * 0.51 + 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn ternary_round_trips_keep_codes_and_scales() {
        let (rows, cols) = (4, 512);
        let codes: Vec<i8> = (0..rows * cols).map(|i| ((i * 7 + i / 3) % 3) as i8 - 1).collect();
        let lin = Linear::new(TernaryMatrix::from_codes(rows, cols, &codes, 0.0371).unwrap());
        let mut warn = |w: String| panic!("unexpected warning {w}");
        let tq2 = encode_ternary("t", &lin, TernaryType::TQ2_0, None, &mut warn).unwrap();
        let l2 = Linear::new(TernaryMatrix::from_tq2_0(rows, cols, Bytes::from_vec(tq2.clone())).unwrap());
        let tq1 = encode_ternary("t", &l2, TernaryType::TQ1_0, None, &mut warn).unwrap();
        let l1 = Linear::new(TernaryMatrix::from_tq1_0(rows, cols, Bytes::from_vec(tq1)).unwrap());
        assert_eq!(codes_of(&l1).codes, codes);
        let back2 = encode_ternary("t", &l1, TernaryType::TQ2_0, None, &mut warn).unwrap();
        assert_eq!(back2, tq2, "TQ2_0 -> TQ1_0 -> TQ2_0 changed bytes");
        let i2 = encode_ternary("t", &l1, TernaryType::I2S, None, &mut warn).unwrap();
        let (got, scale) = {
            let mut c = vec![0i8; rows * cols];
            let s = i2s::decode(&i2, &mut c).unwrap();
            (c, s)
        };
        assert_eq!(got, codes);
        assert_eq!(scale, f16::from_f32(0.0371).to_f32(), "the f16 block scale, exactly");
    }

    #[test]
    fn rejects_rows_a_type_cannot_hold() {
        let codes = vec![1i8; 2 * 384];
        let lin = Linear::new(TernaryMatrix::from_codes(2, 384, &codes, 1.0).unwrap());
        let e = encode_ternary("blk.0.x.weight", &lin, TernaryType::TQ2_0, None, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("blk.0.x.weight") && e.contains("multiple of 256"), "{e}");
        encode_ternary("x", &lin, TernaryType::I2S, None, &mut |_| {}).unwrap();
    }

    #[test]
    fn unify_reports_disagreeing_blocks() {
        let codes = vec![1i8; 512];
        assert_eq!(unify_block_scales(&codes, &[0.5, 0.5], 256), (0.5, None));
        let (s, spread) = unify_block_scales(&codes, &[0.5, 1.0], 256);
        assert!((s - 0.75).abs() < 1e-6 && spread.is_some());
        let mut z = codes.clone();
        z[..256].fill(0);
        assert_eq!(unify_block_scales(&z, &[0.0, 1.0], 256), (1.0, None));
    }
}
