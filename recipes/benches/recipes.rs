//! Benchmarks for recipes: verify and install 500 recipes from a local TUF repository, and one
//! personalised evaluation. Results go to `$GALEN_BENCH_OUT` as JSON lines (xtask/src/bench.rs).

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use galen_recipes::authoring;
use galen_recipes::model::Version;
use galen_recipes::patient::{GeneResult, Patient, PatientId, Source, Sourced};
use galen_recipes::personalise;
use galen_recipes::pgx::{Gene, Phenotype};
use galen_recipes::quantity::{BodyWeight, Fixed};
use galen_recipes::tuf::intake::Intake;
use galen_recipes::tuf::publish::{self, Expiries, RoleSpec};
use galen_recipes::tuf::{ROLES, key_file};
use jiff::{SignedDuration, Timestamp};

const RECIPES: usize = 500;

fn main() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/azathioprine-oral-suspension.toml");
    let text = std::fs::read_to_string(&example).expect("example recipe");
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(intake_500(&text));
    evaluation(&text);
}

fn record(name: &str, value: f64, unit: &str, note: &str) {
    println!("recipes: {name}: {value:.3} {unit} ({note})");
    if let Ok(path) = std::env::var("GALEN_BENCH_OUT") {
        let line = serde_json::json!({"suite": "recipes", "name": name, "value": value, "unit": unit, "note": note});
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("GALEN_BENCH_OUT");
        writeln!(f, "{line}").expect("writing benchmark result");
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn intake_500(text: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("keys dir");
    let mut specs = Vec::new();
    for role in ROLES {
        let path = keys.join(key_file(role));
        publish::generate_key(&path).expect("key");
        specs.push(RoleSpec { role, keys: vec![path], threshold: 1 });
    }
    let in_days =
        |d: i64| Timestamp::now().checked_add(SignedDuration::from_hours(24 * d)).expect("time");
    let root =
        publish::create_root(&specs, in_days(365), &[keys.join("root.pk8")]).await.expect("root");
    let root_path = keys.join("root.json");
    std::fs::write(&root_path, &root).expect("root.json");
    let recipes: Vec<(String, Vec<u8>)> = (0..RECIPES)
        .map(|i| {
            let id = format!("bench-recipe-{i:03}");
            let t = text.replacen(
                "id = \"azathioprine-oral-suspension\"",
                &format!("id = \"{id}\""),
                1,
            );
            (format!("{id}.toml"), t.into_bytes())
        })
        .collect();
    let key_paths: Vec<_> = specs.iter().flat_map(|s| s.keys.clone()).collect();
    let repo = dir.path().join("repo");
    let expiries = Expiries { targets: in_days(30), snapshot: in_days(7), timestamp: in_days(2) };
    let start = Instant::now();
    publish::publish(&repo, Some(&root_path), &key_paths, &recipes, expiries, &mut |_| {})
        .await
        .expect("publish");
    let publish_time = start.elapsed();
    record(
        "publish 500 recipes (lint, hash, sign)",
        publish_time.as_secs_f64() * 1e3,
        "ms",
        "one run; Ed25519 keys, consistent snapshots",
    );

    let mut runs = Vec::new();
    for _ in 0..3 {
        let state = tempfile::tempdir().expect("state");
        let intake = Intake::new(
            root.clone(),
            state.path().to_owned(),
            "galen-cu1",
            Version::parse("0.1.0").expect("version"),
        )
        .expect("intake");
        let start = Instant::now();
        let report = intake.from_directory(&repo, Timestamp::now()).await.expect("intake");
        runs.push(start.elapsed());
        assert_eq!(report.installed.len(), RECIPES, "every recipe installs");
    }
    let t = median(runs);
    record(
        "verify and install 500 recipes from a local repository",
        t.as_secs_f64() * 1e3,
        "ms",
        "median of 3, fresh unit state each; includes lint of every recipe and fsync per file",
    );
    record(
        "verify and install, per recipe",
        t.as_secs_f64() * 1e6 / RECIPES as f64,
        "µs",
        "the line above divided by 500",
    );
}

fn evaluation(text: &str) {
    let recipe = authoring::parse("aza.toml", text).expect("example lints");
    let source = Source::Entered { by: "bench".into(), verified_by: None };
    let gene = |p: &str| Sourced {
        value: GeneResult {
            diplotype: None,
            phenotype: Some(Phenotype::parse(p).expect("phenotype")),
            activity_score: None,
        },
        source: source.clone(),
    };
    let patient = Patient {
        id: PatientId::new("P-0001").expect("id"),
        weight: Some(Sourced {
            value: BodyWeight::new(Fixed::parse("72.35").expect("n")).expect("w"),
            source: source.clone(),
        }),
        age_years: Some(Sourced { value: 34, source: source.clone() }),
        genes: [("TPMT", gene("IM")), ("NUDT15", gene("NM"))]
            .into_iter()
            .map(|(g, r)| (Gene::new(g).expect("gene"), r))
            .collect(),
    };
    const N: u32 = 20_000;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..N {
            let e = personalise::evaluate(
                std::hint::black_box(&recipe),
                std::hint::black_box(&patient),
            )
            .expect("evaluates");
            std::hint::black_box(e);
        }
        runs.push(start.elapsed() / N);
    }
    let t = median(runs);
    record(
        "one personalised evaluation (azathioprine, TPMT IM)",
        t.as_secs_f64() * 1e6,
        "µs",
        "median of 5 batches of 20000; includes building the explanation",
    );
    let start = Instant::now();
    for _ in 0..200 {
        std::hint::black_box(
            authoring::parse("aza.toml", std::hint::black_box(text)).expect("lints"),
        );
    }
    record(
        "parse and validate one recipe",
        start.elapsed().as_secs_f64() * 1e6 / 200.0,
        "µs",
        "azathioprine example, mean of 200",
    );
}
