//! Model tools behind `bitnet convert`, `bitnet perplexity`, `bitnet quant-report`, `bitnet synth`,
//! `bitnet logits` and `bitnet bench`.
//!
//! * [`convert`]: any model we read (Hugging Face bf16 masters or packed release, any GGUF) to a GGUF
//!   with I2_S (bitnet.cpp's official layout), TQ2_0 or TQ1_0 (llama.cpp's `bitnet` layout) weights,
//!   written atomically ([`safe_write`]).
//! * [`perplexity`]: llama-perplexity's chunked method, plus KL divergence against saved logits ([`kl`]).
//! * [`quant_report`]: how much each tensor and layer loses when bf16 masters are ternarized.
//! * [`synth`]: random-weight models with the official file's tensor names, types and metadata.
//! * [`npy`]: NumPy `.npy` files (logits out, reference values in).
//! * [`membw`]: the machine's read bandwidth, next to which `bitnet bench` reports decode.

pub mod convert;
pub mod kl;
pub mod membw;
pub mod npy;
pub mod perplexity;
pub mod plot_font;
pub mod progress;
pub mod quant_report;
pub mod safe_write;
pub mod synth;
