//! Runs every scenario file in `hil/scenarios/` against its own rig, a result line each, and
//! snapshots each scenario's summary (steps, outcome classes, injections, verdicts).

use std::path::{Path, PathBuf};

use galen_hil::scenario::Scenario;
use galen_hil::scenario::run::{Report, run};

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

async fn check(path: PathBuf) -> (String, Report) {
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let report = run(&scenario, dir.path(), false).await.unwrap_or_else(|e| panic!("{stem}: {e}"));
    (stem, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes() {
    let files = scenario_files();
    assert!(!files.is_empty(), "scenarios found: {files:?}");
    // Side by side: each rig keeps real time on its own; sequentially the suite would take
    // the sum of all scenario durations.
    let reports =
        futures_util::future::join_all(files.into_iter().map(|f| tokio::spawn(check(f)))).await;
    let mut failed = Vec::new();
    for r in reports {
        let (stem, report) = r.unwrap();
        println!("scenario {stem}: {}", if report.passed { "ok" } else { "FAILED" });
        if !report.passed {
            println!("{}", report.log);
            failed.push(stem.clone());
        }
        insta::assert_snapshot!(stem, report.summary);
    }
    assert!(failed.is_empty(), "failed scenarios: {failed:?}");
}
