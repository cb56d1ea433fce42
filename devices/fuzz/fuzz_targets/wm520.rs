//! Fuzz target: the wm520 decoders (body in `galen_devices::fuzzing::wm520`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| galen_devices::fuzzing::wm520(data));
