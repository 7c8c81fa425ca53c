//! Hugging Face model folders: `config.json` (architecture, shapes, quantization config) and
//! `model.safetensors` (the header, dtypes, shapes, offsets, packed or bf16 weights), with a fixed
//! tokenizer, then one forward step through what loaded.

use bitnet_model::{load_hf, InferenceState, LogitsWanted};

use crate::{split2, ScratchDir, MICRO_TOKENIZER_CONFIG, MICRO_TOKENIZER_JSON};

/// Input: `config.json` and `model.safetensors` joined by [`crate::join2`].
pub fn run(data: &[u8]) {
    let (config, weights) = split2(data);
    let Ok(dir) = ScratchDir::new("hf") else { return };
    let files: [(&str, &[u8]); 4] = [
        ("config.json", config),
        ("model.safetensors", weights),
        ("tokenizer.json", MICRO_TOKENIZER_JSON),
        ("tokenizer_config.json", MICRO_TOKENIZER_CONFIG.as_bytes()),
    ];
    for (name, bytes) in files {
        if dir.write(name, bytes).is_err() {
            return;
        }
    }
    let _ = load_hf::read_config(dir.path(), None);
    let Ok((model, _tok)) = load_hf::load(dir.path(), None) else {
        return;
    };
    let Ok(mut state) = InferenceState::try_new(&model, 4) else {
        return;
    };
    let _ = model.forward(&[0, 1], &mut state, LogitsWanted::Last);
}
