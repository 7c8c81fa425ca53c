#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bitnet_fuzz::tokenizer::run(data));
