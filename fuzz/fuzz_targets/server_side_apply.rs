#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::server_side_apply(data));
