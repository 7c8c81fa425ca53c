//! Quantization-aware training of BitNet b1.58 models on CPU, the way the BitNet papers train them:
//! float master weights ternarized (absmean) in every forward pass, activations quantized to int8 per
//! token, straight-through gradients, AdamW with the two-stage schedule, gradient clipping and
//! accumulation. The forward pass has the inference engine's exact semantics, so a trained model's
//! logits in `bitnet-model` equal the training forward pass (up to int8 rounding ties).
//!
//! Autograd is candle's; the quantizers are custom candle operations whose gradient is the identity.
//! Checkpoints are Hugging Face folders (bf16 masters, `quantization_mode: online`) that resume bit for
//! bit, and [`export`] writes GGUF I2_S with the engine's writer. [`corpus`] generates the synthetic
//! stories and dialogues the project's demo model is trained on.

pub mod checkpoint;
pub mod corpus;
pub mod data;
pub mod durable;
pub mod export;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod plot;
pub mod quant;
pub mod schedule;
pub mod tokenizer;
pub mod trainer;

pub use model::{ModelDims, TrainModel};
pub use trainer::{TrainOptions, Trainer};
