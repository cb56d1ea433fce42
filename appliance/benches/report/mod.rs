//! Writes one benchmark figure: a line for the person watching, and a JSON line to
//! `$GALEN_BENCH_OUT` in the format xtask/src/bench.rs renders.

use std::io::Write as _;

pub(crate) fn report(suite: &str, name: &str, value: f64, unit: &str, note: &str) {
    println!("{suite}/{name}: {value:.4} {unit} {note}");
    if let Ok(path) = std::env::var("GALEN_BENCH_OUT") {
        let line = serde_json::json!({"suite": suite, "name": name, "value": value, "unit": unit, "note": note});
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("GALEN_BENCH_OUT is writable");
        writeln!(f, "{line}").expect("write benchmark result");
    }
}
