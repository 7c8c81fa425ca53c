//! Model tools behind `bitnet convert`, `bitnet perplexity` and `bitnet quant-report`.
//!
//! * [`convert`]: any model we read (Hugging Face bf16 masters or packed release, any GGUF) to a GGUF
//!   with I2_S (bitnet.cpp's official layout), TQ2_0 or TQ1_0 (llama.cpp's `bitnet` layout) weights,
//!   written atomically ([`safe_write`]).
//! * [`perplexity`]: llama-perplexity's chunked method, plus KL divergence against saved logits ([`kl`]).
//! * [`quant_report`]: how much each tensor and layer loses when bf16 masters are ternarized.

pub mod convert;
pub mod kl;
pub mod perplexity;
pub mod plot_font;
pub mod progress;
pub mod quant_report;
pub mod safe_write;
