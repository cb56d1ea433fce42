//! `hil`: runs a simulated unit by hand, or one scenario with a live log.

fn main() {}
