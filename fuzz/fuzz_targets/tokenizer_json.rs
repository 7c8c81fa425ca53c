#![no_main]
// The engine turns panics inside third-party crates (tokenizers, minijinja) into errors with
// catch_unwind; libfuzzer-sys's panic hook would abort on those as well, so the default hook is put
// back. A panic that escapes the entry point still aborts (libfuzzer-sys catches it) and is a crash.
libfuzzer_sys::fuzz_target!(init: drop(std::panic::take_hook()), |data: &[u8]| bitnet_fuzz::tokenizer::run(data));
