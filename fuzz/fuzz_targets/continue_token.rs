#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::continue_token(data));
