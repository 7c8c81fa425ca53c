//! Sampling and generation on top of `bitnet-model`.

pub mod generate;
pub mod rng;
pub mod sampler;

pub use generate::{generate, GenerateOptions, GenerationStats, StopReason};
pub use sampler::{argmax, Sampler, SamplerConfig};
