//! Instruments of a compounding unit: balances, pumps and heaters spoken to over serial.
//!
//! One trait per device kind; per protocol a pure codec (bytes in, frames out), an async
//! driver and a wire-level emulator that `galen-hil` runs on a pty. Nothing here knows what
//! a batch or a recipe is.
