//! The batch engine's pure parts: the ISA-88 state machine, the safety monitor and the phase
//! controllers. None of it touches a port, a clock, a database or D-Bus: readings and time come
//! in as values, commands go out as values, and the runtime applies them.

pub mod batch;
pub mod continuity;
pub mod dispense;
pub mod plan;
pub mod restart;
pub mod safety;
pub mod state;
pub mod words;
