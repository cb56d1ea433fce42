//! Debug builds (tests among them) keep the names of the window's elements, so that
//! `tests/flow.rs` can find them by accessible label through Slint's testing backend; release
//! builds (the appliance's image) go without.
//!
//! The `slint!` macro reads `SLINT_EMIT_DEBUG_INFO` while this crate compiles, and
//! `rustc-env` sets it for exactly that.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");
    if std::env::var("PROFILE").as_deref() == Ok("debug") {
        println!("cargo:rustc-env=SLINT_EMIT_DEBUG_INFO=1");
    }
}
