//! Fuzz target: the sbi decoders (body in `galen_devices::fuzzing::sbi`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| galen_devices::fuzzing::sbi(data));
