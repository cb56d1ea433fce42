//! What a process has cost so far, from `/proc/<pid>/status` and `/proc/<pid>/stat`: its
//! resident memory now and at its peak, and the CPU time it used. Shared by the benchmarks
//! that measure the bench process itself and those that measure a spawned `applianced`, and
//! by the test that keeps `applianced`'s memory from growing with logins. Include it with
//! `#[path]`, as `daemon.rs`.

#![allow(dead_code, unreachable_pub)]

/// Memory in KiB, CPU in seconds (user + system).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Usage {
    pub rss_kib: f64,
    /// The peak resident set over the process's life (VmHWM).
    pub peak_kib: f64,
    pub cpu_s: f64,
}

/// `/proc` reports CPU time in USER_HZ ticks, which the kernel fixes at 100 on every
/// architecture a unit runs on.
const TICKS_PER_S: f64 = 100.0;

/// The process `pid` (`None`: this one); zeros for what cannot be read.
pub(crate) fn usage(pid: Option<u32>) -> Usage {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
    // Fields 14 and 15 (utime, stime), counted after the parenthesised command name, which
    // may itself hold spaces and parentheses.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    Usage {
        rss_kib: kib("VmRSS:"),
        peak_kib: kib("VmHWM:"),
        cpu_s: (ticks(11) + ticks(12)) / TICKS_PER_S,
    }
}
