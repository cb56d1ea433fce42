//! hil benchmarks.

fn main() {}
