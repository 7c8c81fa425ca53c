//! GGUF files: the reader, the model configuration read from metadata, the tokenizer built from the
//! vocabulary keys, the model built from the tensors, and one forward step through what loaded.

use bitnet_gguf::GgufFile;
use bitnet_model::{load_gguf, InferenceState, LogitsWanted, ModelConfig};

/// A whole GGUF model file, as `bitnet run -m FILE` reads it.
pub fn run(data: &[u8]) {
    let Ok(g) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else {
        return;
    };
    for t in g.tensors() {
        let _ = g.tensor_data_by_name(&t.name);
    }
    let _ = ModelConfig::from_gguf(&g, None).and_then(|c| c.validated());
    tokenizer_round_trip(&g);
    let Ok((model, _tok)) = load_gguf::from_gguf(&g, None) else {
        return;
    };
    // A few positions only: the context length is the file's claim, the cache is ours.
    let Ok(mut state) = InferenceState::try_new(&model, 4) else {
        return;
    };
    let _ = model.forward(&[0, 1], &mut state, LogitsWanted::Last);
}

/// A GGUF file read for its vocabulary only (`tokenizer.ggml.*` keys: tokens, scores, types, merges,
/// special ids, pre-tokenizer name, chat template): small inputs that reach the tokenizer builders.
pub fn run_tokenizer(data: &[u8]) {
    if let Ok(g) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") {
        tokenizer_round_trip(&g);
    }
}

fn tokenizer_round_trip(g: &GgufFile) {
    if let Ok(tok) = load_gguf::tokenizer_from_gguf(g) {
        crate::tokenizer::exercise(&tok);
    }
}
