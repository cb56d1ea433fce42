//! What the real `applianced` process costs, as systemd runs it: commissioned, started on the
//! simulated unit (rig at 1×, real time) and the private bus, idle at READY, then through a
//! whole batch of the test recipe driven by `galenctl`. Memory and CPU are read from
//! `/proc/<pid>` of the spawned daemon, so the rig, the bench and the clients are not counted
//! (the supervisor bench measures its own process instead). Needs the private dbus-daemon
//! `cargo xtask bench` starts. Results go to `$GALEN_BENCH_OUT` (xtask/src/bench.rs).

#[path = "../tests/support/daemon.rs"]
mod daemon;
mod report;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/support/usage.rs"]
mod usage;

use std::time::{Duration, Instant};

use daemon::galenctl;
use galen_hil::plant::PlantConfig;
use galen_hil::plant::config::BalanceConfig;
use galen_hil::rig::{Rig, RigConfig};

/// How long the idle figure watches the daemon at READY.
const IDLE: Duration = Duration::from_secs(10);

fn report(name: &str, value: f64, unit: &str, note: &str) {
    report::report("applianced", name, value, unit, note);
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

fn main() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let appliance = support::Rig::new();
        daemon::commission(&appliance);
        let dir = tempfile::tempdir().unwrap();
        let (repo, root) = support::repository(dir.path()).await;
        let root_path = dir.path().join("root.json");
        std::fs::write(&root_path, root).unwrap();
        daemon::put_on_stick(&appliance, &repo);
        let plant = PlantConfig { balance: BalanceConfig::analytical(), ..PlantConfig::default() };
        let rig =
            Rig::start(RigConfig { plant, ..RigConfig::default() }, &dir.path().join("rig"))
                .unwrap();
        let (child, _, name) = daemon::start(&appliance, &rig, &root_path, None);
        let pid = Some(child.pid());

        let (ready, idle_from) = (usage::usage(pid), Instant::now());
        tokio::time::sleep(IDLE).await;
        let idle = usage::usage(pid);
        let idle_cpu = (idle.cpu_s - ready.cpu_s) / idle_from.elapsed().as_secs_f64();

        daemon::staff(&name, &["test-suspension"]);
        let (before, from) = (usage::usage(pid), Instant::now());
        let id = daemon::start_batch(&name, "test-suspension");
        daemon::scan_materials(&name, &id);
        galenctl(&name, "ada", &["batch", "watch", &id, "--until-operator"]);
        galenctl(&name, "ada", &["batch", "confirm", &id]);
        let watched = galenctl(&name, "ada", &["batch", "watch", &id]);
        assert!(watched.contains("Complete"), "{watched}");
        let (after, wall) = (usage::usage(pid), from.elapsed().as_secs_f64());
        child.stop();

        report(
            "resident memory at READY",
            mib(ready.rss_kib),
            "MiB",
            "VmRSS of the applianced process: runtime, device actors, record store, D-Bus",
        );
        report(
            "resident memory, peak through a batch",
            mib(after.peak_kib),
            "MiB",
            "VmHWM of the same process from start to Complete",
        );
        report(
            "resident memory after the batch",
            mib(after.rss_kib),
            "MiB",
            "VmRSS at Complete: what the peak left behind",
        );
        report(
            "CPU idle at READY",
            idle_cpu * 100.0,
            "% of one core",
            &format!(
                "utime + stime over {} s; the actors poll the balance at 10 Hz, the heater at 2 Hz and the E-stop contact at 10 Hz",
                IDLE.as_secs()
            ),
        );
        report(
            "CPU while a batch runs",
            (after.cpu_s - before.cpu_s) / wall * 100.0,
            "% of one core",
            &format!(
                "{wall:.0} s from create to Complete at 1x; every galenctl command logs in (Argon2id) \
                 and a watcher reads the live properties"
            ),
        );
    });
}
