//! Fuzz target: the mt_sics decoders (body in `galen_devices::fuzzing::mt_sics`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| galen_devices::fuzzing::mt_sics(data));
