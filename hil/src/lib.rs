//! A simulated compounding unit for tests and demos: plant physics stepped with an explicit
//! time, the `galen-devices` emulators served on ptys, and declarative fault scenarios.

pub mod console;
pub mod plant;
pub mod rig;
pub mod rng;
pub mod scenario;
