//! Fuzz target: the new_era decoders (body in `galen_devices::fuzzing::new_era`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| galen_devices::fuzzing::new_era(data));
