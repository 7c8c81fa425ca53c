//! Sampling, stopping and generation on top of `bitnet-model`: the llama.cpp sampler chain, stop strings,
//! the single-sequence generation loop, prompt assembly and conversation KV reuse ([`prompt`]), and the
//! continuous-batching [`scheduler`] the server uses.

pub mod decoding;
pub mod generate;
pub mod prompt;
pub mod rng;
pub mod sampler;
pub mod scheduler;
pub mod stop;

pub use decoding::{Decoding, Step};
pub use generate::{generate, GenerateOptions, GenerationStats, StopReason};
pub use prompt::{chat_prompt, text_prompt, ConversationCache, PromptError};
pub use sampler::{argmax, Sampler, SamplerConfig};
pub use scheduler::{EmbedJob, Event, Finished, Job, Scheduler, SchedulerConfig, SchedulerStats, SubmitError};
pub use stop::StopMatcher;
