//! Random-weight models with the exact tensor names, types and metadata of real BitNet files: the
//! tiny demo model the CLI runs when no `-m` is given, and `--shape 2b4t`, laid out like Microsoft's
//! official `ggml-model-i2_s.gguf`, so benchmarks need no download and the same file can be run in
//! bitnet.cpp.
//!
//! The vocabulary is byte-level BPE (the 256 byte tokens plus random merges) followed by Llama-3's
//! special tokens; weights are random ternary codes with scales that keep activations in range.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use bitnet_gguf::{GgmlType, GgufWriter};
use bitnet_kernels::i2s;
use half::f16;

use bitnet_model::arch::{self, gguf_layer, Family, LayerTensor, ModelTensor};
use bitnet_model::gguf_meta::{write_metadata, Layout, TokenizerMeta};
use bitnet_model::{FfnActivation, ModelConfig};

/// Model sizes `bitnet synth` can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// hidden 256, 4 layers, vocab 2048: a few MB, runs instantly.
    Tiny,
    /// BitNet b1.58 2B-4T: hidden 2560, FFN 6912, 30 layers, 20/5 heads, vocab 128256.
    B2b4t,
    /// Falcon3-1B-Instruct-1.58bit's shape (the Llama family: `llama` arch, no sub-norms, SiLU,
    /// untied F16 head): hidden 2048, FFN 8192, 18 layers, 8/4 heads of 256, vocab 131072.
    Falcon3_1b,
}

struct Dims {
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    /// Llama-3 reserves the last 256 ids for special tokens; the tiny model uses 10, like the fixtures.
    specials: usize,
    context: usize,
    family: Family,
}

impl Shape {
    pub fn parse(s: &str) -> Option<Shape> {
        match s.to_ascii_lowercase().as_str() {
            "tiny" => Some(Shape::Tiny),
            "2b4t" | "2b" | "2b-4t" | "bitnet-2b4t" => Some(Shape::B2b4t),
            "falcon3-1b" | "falcon3" => Some(Shape::Falcon3_1b),
            _ => None,
        }
    }

    fn dims(self) -> Dims {
        match self {
            Shape::Tiny => Dims {
                hidden: 256,
                ffn: 768,
                layers: 4,
                heads: 4,
                kv_heads: 2,
                vocab: 2048,
                specials: 10,
                context: 2048,
                family: Family::BitNetB158,
            },
            Shape::B2b4t => Dims {
                hidden: 2560,
                ffn: 6912,
                layers: 30,
                heads: 20,
                kv_heads: 5,
                vocab: 128256,
                specials: 256,
                context: 4096,
                family: Family::BitNetB158,
            },
            Shape::Falcon3_1b => Dims {
                hidden: 2048,
                ffn: 8192,
                layers: 18,
                heads: 8,
                kv_heads: 4,
                vocab: 131072,
                specials: 256,
                context: 8192,
                family: Family::Llama158,
            },
        }
    }
}

/// SplitMix64: enough randomness for weights, reproducible from the seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Approximately normal (sum of four uniforms, variance-corrected).
    fn normal(&mut self) -> f32 {
        let mut s = 0.0f32;
        for _ in 0..4 {
            s += (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        }
        (s - 2.0) * 1.732_050_8
    }
}

/// GPT-2's byte-to-character map used by byte-level BPE vocabularies.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut map = vec!['\0'; 256];
    for &b in &printable {
        map[b as usize] = char::from_u32(b).unwrap_or('?');
    }
    let mut extra = 0u32;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            map[b as usize] = char::from_u32(256 + extra).unwrap_or('?');
            extra += 1;
            printable.push(b);
        }
    }
    map
}

/// Llama-3's special token names, in id order.
fn special_names(n: usize) -> Vec<String> {
    let fixed = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|reserved_special_token_2|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
    ];
    (0..n)
        .map(|i| {
            fixed
                .get(i)
                .map_or_else(|| format!("<|reserved_special_token_{}|>", i - 7), |s| s.to_string())
        })
        .collect()
}

/// Byte tokens, then merged tokens until `n_regular`, each merge joining two earlier tokens.
fn vocabulary(n_regular: usize, g: &mut Gen) -> (Vec<String>, Vec<String>) {
    let mut tokens: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    let mut seen: HashSet<String> = tokens.iter().cloned().collect();
    let mut merges = Vec::new();
    // Favour letters and the space marker so that merged tokens look like word pieces.
    let common: Vec<usize> = "etaoinshrdlucmfwypvbgkqjxz "
        .bytes()
        .map(|b| if b == b' ' { 'Ġ' as usize } else { b as usize })
        .collect();
    let space = tokens.iter().position(|t| t == "Ġ").unwrap_or(32);
    let pick = |g: &mut Gen, len: usize| -> usize {
        let r = g.next();
        if r.is_multiple_of(3) {
            let c = common[(r >> 8) as usize % common.len()];
            if c == 'Ġ' as usize {
                space
            } else {
                c
            }
        } else {
            // Prefer recent, longer tokens.
            let lo = len.saturating_sub(len / 2 + 1);
            lo + (r >> 8) as usize % (len - lo)
        }
    };
    let mut attempts = 0usize;
    while tokens.len() < n_regular && attempts < n_regular * 50 {
        attempts += 1;
        let a = pick(g, tokens.len());
        let b = pick(g, tokens.len());
        let t = format!("{}{}", tokens[a], tokens[b]);
        if t.chars().count() > 16 || seen.contains(&t) {
            continue;
        }
        merges.push(format!("{} {}", tokens[a], tokens[b]));
        seen.insert(t.clone());
        tokens.push(t);
    }
    while tokens.len() < n_regular {
        // Unreachable in practice; fill with unmergeable placeholders so the ids stay dense.
        tokens.push(format!("<unused{}>", tokens.len()));
    }
    (tokens, merges)
}

/// The chat template of BitNet b1.58 2B-4T (`User: ...<|eot_id|>Assistant: `).
pub const BITNET_CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{{ message['role'] | capitalize + ': ' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}";

/// Builds the GGUF in memory.
pub fn synth_writer(shape: Shape, seed: u64) -> Result<GgufWriter> {
    let d = shape.dims();
    let mut g = Gen(seed ^ 0x5EED_B17E);
    let head_dim = d.hidden / d.heads;
    let mut w = GgufWriter::new();
    let cfg = ModelConfig {
        arch: arch::BITNET_B158.to_string(),
        hidden_size: d.hidden,
        intermediate_size: d.ffn,
        num_layers: d.layers,
        num_heads: d.heads,
        num_kv_heads: d.kv_heads,
        head_dim,
        rope_dim: head_dim,
        vocab_size: d.vocab,
        context_length: d.context,
        rope_theta: 500_000.0,
        rms_eps: 1e-5,
        ffn_act: if d.family == Family::Llama158 {
            FfnActivation::Silu
        } else {
            FfnActivation::Relu2
        },
        ffn_act_reason: String::new(),
        ffn_act_guessed: false,
        family: d.family,
        family_reason: "synthesized BitNet b1.58 model".to_string(),
        rope_layout: bitnet_model::arch::RopeLayout::HalfSplit,
        pooling: None,
    };
    let n_regular = d.vocab - d.specials;
    let (mut tokens, merges) = vocabulary(n_regular, &mut g);
    tokens.extend(special_names(d.specials));
    let tokenizer = TokenizerMeta {
        model: "gpt2".to_string(),
        tokens,
        scores: Some(vec![0.0; d.vocab]),
        token_types: Some((0..d.vocab).map(|i| if i < n_regular { 1 } else { 3 }).collect()),
        merges,
        bos: Some(n_regular as u32),
        eos: Some((n_regular + 1) as u32),
        add_bos: Some(true),
        chat_template: Some(BITNET_CHAT_TEMPLATE.to_string()),
        ..TokenizerMeta::default()
    };
    let name = match shape {
        Shape::B2b4t => "bitnet2b",
        Shape::Falcon3_1b => "falcon3-1b-synth",
        Shape::Tiny => "bitnet-synth-tiny",
    };
    write_metadata(&mut w, Layout::BitnetCpp, &cfg, name, &tokenizer)?;

    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let norm =
        |g: &mut Gen, n: usize| -> Vec<u8> { f32_bytes(&(0..n).map(|_| 1.0 + 0.1 * g.normal()).collect::<Vec<_>>()) };
    // Random ternary codes (about a third zeros, like trained BitNet weights), scaled so a unit-RMS input
    // gives a unit-RMS output.
    let ternary = |g: &mut Gen, rows: usize, cols: usize| -> Result<Vec<u8>> {
        let mut codes = vec![0i8; rows * cols];
        for c in codes.iter_mut() {
            *c = (g.next() % 3) as i8 - 1;
        }
        let scale = 1.0 / ((2.0 / 3.0) * cols as f32).sqrt();
        Ok(i2s::encode(&codes, scale)?)
    };
    let (h, qd, kvd, ffn) = (
        d.hidden as u64,
        (d.heads * head_dim) as u64,
        (d.kv_heads * head_dim) as u64,
        d.ffn as u64,
    );
    let emb: Vec<u8> = (0..d.vocab * d.hidden)
        .flat_map(|_| f16::from_f32(g.normal()).to_le_bytes())
        .collect();
    w.add_tensor(ModelTensor::Embedding.gguf(), &[h, d.vocab as u64], GgmlType::F16, emb)?;
    if d.family == Family::Llama158 {
        // Falcon3 unties its head: a second F16 matrix of the same shape.
        let head: Vec<u8> = (0..d.vocab * d.hidden)
            .flat_map(|_| f16::from_f32(g.normal()).to_le_bytes())
            .collect();
        w.add_tensor(ModelTensor::Head.gguf(), &[h, d.vocab as u64], GgmlType::F16, head)?;
    }
    let sub_norms = d.family.block().sub_norms;
    // Final norm scaled so logits have a standard deviation of a few units.
    let fnorm: Vec<f32> = (0..d.hidden)
        .map(|_| (1.0 + 0.1 * g.normal()) * 3.0 / (d.hidden as f32).sqrt())
        .collect();
    w.add_tensor(ModelTensor::FinalNorm.gguf(), &[h], GgmlType::F32, f32_bytes(&fnorm))?;
    for i in 0..d.layers {
        let n = |t: LayerTensor| gguf_layer(i, t);
        w.add_tensor(n(LayerTensor::AttnNorm), &[h], GgmlType::F32, norm(&mut g, d.hidden))?;
        w.add_tensor(
            n(LayerTensor::Q),
            &[h, qd],
            GgmlType::I2_S,
            ternary(&mut g, qd as usize, d.hidden)?,
        )?;
        w.add_tensor(
            n(LayerTensor::K),
            &[h, kvd],
            GgmlType::I2_S,
            ternary(&mut g, kvd as usize, d.hidden)?,
        )?;
        w.add_tensor(
            n(LayerTensor::V),
            &[h, kvd],
            GgmlType::I2_S,
            ternary(&mut g, kvd as usize, d.hidden)?,
        )?;
        if sub_norms {
            w.add_tensor(
                n(LayerTensor::AttnSubNorm),
                &[qd],
                GgmlType::F32,
                norm(&mut g, qd as usize),
            )?;
        }
        w.add_tensor(
            n(LayerTensor::O),
            &[qd, h],
            GgmlType::I2_S,
            ternary(&mut g, d.hidden, qd as usize)?,
        )?;
        w.add_tensor(n(LayerTensor::FfnNorm), &[h], GgmlType::F32, norm(&mut g, d.hidden))?;
        w.add_tensor(
            n(LayerTensor::Gate),
            &[h, ffn],
            GgmlType::I2_S,
            ternary(&mut g, d.ffn, d.hidden)?,
        )?;
        w.add_tensor(
            n(LayerTensor::Up),
            &[h, ffn],
            GgmlType::I2_S,
            ternary(&mut g, d.ffn, d.hidden)?,
        )?;
        if sub_norms {
            w.add_tensor(n(LayerTensor::FfnSubNorm), &[ffn], GgmlType::F32, norm(&mut g, d.ffn))?;
        }
        w.add_tensor(
            n(LayerTensor::Down),
            &[ffn, h],
            GgmlType::I2_S,
            ternary(&mut g, d.hidden, d.ffn)?,
        )?;
    }
    Ok(w)
}

/// The synthesized model as GGUF bytes.
pub fn synth_gguf_bytes(shape: Shape, seed: u64) -> Result<Vec<u8>> {
    Ok(synth_writer(shape, seed)?.to_bytes()?)
}

/// Writes the synthesized model to `path` (atomically: temporary file, then rename).
pub fn write_gguf(shape: Shape, seed: u64, path: &Path) -> Result<()> {
    synth_writer(shape, seed)?.write_to_path(path)?;
    Ok(())
}
