//! `galen-hmi`, the touchscreen for pharmacists, QA and inspectors.
//!
//! It is a D-Bus client of `applianced` and nothing else: it displays and asks, and never
//! computes a dose or decides anything that a batch record depends on.
