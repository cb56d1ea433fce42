//! `cargo xtask bench`: runs every benchmark and rewrites docs/BENCHMARKS.md.
//!
//! # Result format
//! Benchmarks are ordinary `[[bench]]` targets with `harness = false`. xtask runs them all with
//! `cargo bench --workspace --benches` and sets `GALEN_BENCH_OUT` to a file; each benchmark
//! appends one JSON object per line to it:
//!
//! ```json
//! {"suite": "devices", "name": "MT-SICS decode", "value": 812.5, "unit": "MB/s", "note": "…"}
//! ```
//!
//! `note` is optional. This machine is shared and noisy, so a benchmark that compares two
//! things measures them side by side in one run and reports the ratio as its own line, rather
//! than leaving a reader to divide figures taken at different times.
//!
//! The report is written to a temporary file and renamed, so a failed run leaves the previous
//! docs/BENCHMARKS.md as it was. `cargo xtask bench --bench <name>` runs only the named
//! targets and replaces only the sections of the suites they report, each marked with when
//! and how it was measured; the rest of the report stays as the last full run left it.
//!
//! Benchmarks run with the private software TPM and D-Bus daemon that tests use
//! (`services`), so one that starts the real `applianced` finds its bus the same way.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::services::Services;
use crate::{cargo, process, setup, workspace_root};

/// The command a reader reruns to reproduce the report.
const COMMAND: &str = "cargo xtask bench";

#[derive(Debug, Deserialize, PartialEq)]
struct Record {
    suite: String,
    name: String,
    value: f64,
    unit: String,
    #[serde(default)]
    note: String,
}

/// Runs every benchmark, or only the targets in `only`, and writes the report.
pub(crate) fn run(only: &[String]) -> Result<()> {
    setup::run(setup::Mode::Install)?;
    let root = workspace_root();
    let out_dir = root.join("target/galen-bench");
    std::fs::create_dir_all(&out_dir).context("creating target/galen-bench")?;
    let results = out_dir.join("results.jsonl");
    if results.exists() {
        std::fs::remove_file(&results).context("removing the previous results")?;
    }
    let mut cmd = cargo();
    cmd.args(["bench", "--workspace"]);
    if only.is_empty() {
        cmd.arg("--benches");
    }
    for name in only {
        cmd.args(["--bench", name]);
    }
    let services = Services::start()?;
    println!("bench: {} (results to {})", process::display(&cmd), results.display());
    process::run(cmd.env("GALEN_BENCH_OUT", &results).envs(services.env()))?;
    drop(services);
    let records = match std::fs::read_to_string(&results) {
        Ok(text) => parse(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).context("reading benchmark results"),
    };
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs)?;
    let path = docs.join("BENCHMARKS.md");
    let machine = machine()?;
    let report = if only.is_empty() {
        render(&records, &machine)
    } else {
        let previous = std::fs::read_to_string(&path).unwrap_or_default();
        let flags: Vec<String> = only.iter().map(|b| format!("--bench {b}")).collect();
        let how = format!("{COMMAND} {}", flags.join(" "));
        merge(&previous, &records, &machine, &how)
    };
    let tmp = docs.join(".BENCHMARKS.md.tmp");
    std::fs::write(&tmp, report).context("writing the benchmark report")?;
    std::fs::rename(&tmp, &path).context("replacing docs/BENCHMARKS.md")?;
    println!("bench: {} figure(s) written to docs/BENCHMARKS.md", records.len());
    Ok(())
}

fn parse(text: &str) -> Result<Vec<Record>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("benchmark result line {} is malformed: {line}", i + 1))
        })
        .collect()
}

/// What a reader needs to judge the figures: where and when they were taken.
#[derive(Debug)]
struct Machine {
    date: String,
    cpu: String,
    cores: usize,
    memory: String,
    kernel: String,
    rustc: String,
}

fn machine() -> Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Ok(Machine {
        date: process::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
            .trim()
            .to_owned(),
        cpu: field(&cpuinfo, "model name").unwrap_or("unknown").to_owned(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory: field(&meminfo, "MemTotal").map_or_else(|| "unknown".to_owned(), kib_to_gib),
        kernel: read_trimmed(Path::new("/proc/sys/kernel/osrelease")),
        rustc: process::output(Command::new("rustc").arg("-V"))?.trim().to_owned(),
    })
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

/// `/proc/meminfo` says "24684084 kB"; a reader wants "23.5 GiB".
fn kib_to_gib(value: &str) -> String {
    let kib: Option<u64> = value.trim_end_matches("kB").trim().parse().ok();
    // Precision loss in u64 -> f64 is irrelevant at this magnitude.
    #[allow(clippy::cast_precision_loss)]
    kib.map_or_else(|| value.to_owned(), |k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
}

fn render(records: &[Record], m: &Machine) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(s, "Written by `{COMMAND}`; rerun it to reproduce. Do not edit by hand.\n");
    let _ = writeln!(s, "- Date: {}", m.date);
    let _ = writeln!(s, "- Machine: {} ({} cores), {} RAM", m.cpu, m.cores, m.memory);
    let _ = writeln!(s, "- Kernel: Linux {}; toolchain: {}", m.kernel, m.rustc);
    let _ = writeln!(
        s,
        "- The machine is shared and noisy: compare ratios measured side by side in one run, \
         not absolute figures across runs.\n"
    );
    if records.is_empty() {
        let _ = writeln!(s, "No benchmarks are registered yet.");
        return s;
    }
    for (suite, records) in suites(records) {
        s.push_str(&section(suite, &records, None));
    }
    s
}

/// The records grouped by suite, suites in the order they first appear.
fn suites(records: &[Record]) -> Vec<(&str, Vec<&Record>)> {
    let mut out: Vec<(&str, Vec<&Record>)> = Vec::new();
    for r in records {
        match out.iter_mut().find(|(s, _)| *s == r.suite) {
            Some((_, list)) => list.push(r),
            None => out.push((&r.suite, vec![r])),
        }
    }
    out
}

/// One suite's table; `measured` says when and how, for a section newer than the report.
fn section(suite: &str, records: &[&Record], measured: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n## {suite}\n");
    if let Some(measured) = measured {
        let _ = writeln!(s, "{measured}\n");
    }
    let _ = writeln!(s, "| Benchmark | Value | Unit | Note |");
    let _ = writeln!(s, "|---|---:|---|---|");
    for r in records {
        let _ = writeln!(s, "| {} | {} | {} | {} |", r.name, format_value(r.value), r.unit, r.note);
    }
    s
}

/// The previous report with the sections of the suites in `records` replaced (or added at the
/// end), each saying it was measured later, by `how`.
fn merge(previous: &str, records: &[Record], m: &Machine, how: &str) -> String {
    if previous.trim().is_empty() {
        return render(records, m);
    }
    // Sections start at a line "## <suite>"; everything before the first is the header.
    let mut parts: Vec<(Option<String>, String)> = vec![(None, String::new())];
    for line in previous.split_inclusive('\n') {
        if let Some(suite) = line.strip_prefix("## ") {
            parts.push((Some(suite.trim().to_owned()), String::new()));
        }
        parts.last_mut().expect("starts with the header").1.push_str(line);
    }
    let measured = format!("Measured {} with `{how}`, after the rest of this report.", m.date);
    for (suite, records) in suites(records) {
        let fresh = section(suite, &records, Some(&measured));
        // The header or the previous section ends with the blank line `section` starts with.
        let fresh = fresh.strip_prefix('\n').unwrap_or(&fresh).to_owned();
        match parts.iter_mut().find(|(s, _)| s.as_deref() == Some(suite)) {
            Some((_, text)) => *text = fresh,
            None => parts.push((Some(suite.to_owned()), fresh)),
        }
    }
    // A blank line between sections, one newline at the end, however they were cut.
    let last = parts.len() - 1;
    let mut out = String::new();
    for (i, (_, text)) in parts.into_iter().enumerate() {
        let text = text.trim_end_matches('\n');
        out.push_str(text);
        out.push_str(if i == last { "\n" } else { "\n\n" });
    }
    out
}

/// Four significant digits: more would be noise on this machine.
fn format_value(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    let magnitude = v.abs().log10().floor();
    // `magnitude` is a small integer for any finite non-zero f64, so the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    let decimals = (3.0 - magnitude).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            date: "2026-01-01 00:00 UTC".into(),
            cpu: "Test CPU".into(),
            cores: 2,
            memory: "24 GiB".into(),
            kernel: "6.1".into(),
            rustc: "rustc 1.95.0".into(),
        }
    }

    #[test]
    fn results_are_grouped_by_suite_with_four_significant_digits() {
        let records = parse(concat!(
            r#"{"suite":"devices","name":"MT-SICS decode","value":812.4567,"unit":"MB/s"}"#,
            "\n\n",
            r#"{"suite":"devices","name":"pty / frame time","value":1.2345678,"unit":"x","note":"9600 8N1"}"#,
            "\n",
            r#"{"suite":"hil","name":"plant steps","value":1234567.0,"unit":"steps/s"}"#,
        ))
        .unwrap();
        let report = render(&records, &machine());
        assert!(report.contains("## devices\n"), "{report}");
        assert!(report.contains("| MT-SICS decode | 812.5 | MB/s |  |"), "{report}");
        assert!(report.contains("| pty / frame time | 1.235 | x | 9600 8N1 |"), "{report}");
        assert!(report.contains("## hil\n"), "{report}");
        assert!(report.contains("| plant steps | 1234567 | steps/s |  |"), "{report}");
        assert!(report.contains("Written by `cargo xtask bench`"), "{report}");
    }

    #[test]
    fn one_suite_measured_again_replaces_its_section_only() {
        let full = parse(concat!(
            r#"{"suite":"devices","name":"decode","value":1.0,"unit":"MB/s"}"#,
            "\n",
            r#"{"suite":"supervisor","name":"stop","value":11.0,"unit":"ms"}"#,
        ))
        .unwrap();
        let previous = render(&full, &machine());
        let again = parse(concat!(
            r#"{"suite":"supervisor","name":"stop","value":12.0,"unit":"ms"}"#,
            "\n",
            r#"{"suite":"applianced","name":"peak","value":20.0,"unit":"MiB"}"#,
        ))
        .unwrap();
        let merged = merge(&previous, &again, &machine(), "cargo xtask bench --bench x");
        let measured = "Measured 2026-01-01 00:00 UTC with `cargo xtask bench --bench x`";
        assert!(merged.starts_with(previous.split("\n## ").next().unwrap()), "{merged}");
        assert!(merged.contains("## devices\n\n| Benchmark"), "kept as it was: {merged}");
        assert!(merged.contains("| decode | 1.000 | MB/s |  |"), "{merged}");
        assert!(!merged.contains("| stop | 11.00 |"), "replaced: {merged}");
        assert!(merged.contains(&format!("## supervisor\n\n{measured}")), "{merged}");
        assert!(merged.contains("| stop | 12.00 | ms |  |"), "{merged}");
        assert!(merged.ends_with("| peak | 20.00 | MiB |  |\n"), "added at the end: {merged}");
        assert!(merged.contains(&format!("\n\n## applianced\n\n{measured}")), "{merged}");
        assert_eq!(merged.matches("## supervisor").count(), 1);
        // Merging the same run again changes nothing.
        assert_eq!(merge(&merged, &again, &machine(), "cargo xtask bench --bench x"), merged);
    }

    #[test]
    fn a_malformed_line_is_named() {
        let err = parse("{\"suite\":\"x\"}\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
    }

    #[test]
    fn an_empty_run_says_so() {
        assert!(render(&[], &machine()).contains("No benchmarks are registered yet."));
    }
}
