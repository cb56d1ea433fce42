//! The `applianced` binary as systemd runs it: commissioned once, started against the
//! simulated unit, stopped with SIGTERM, and killed with SIGKILL at the worst moments — mid
//! dispense, mid heat, while a signature is being recorded, and again and again — then
//! restarted over a record that says a batch was in progress, and driven on by people through
//! `galenctl`.

#[path = "support/daemon.rs"]
mod daemon;
mod support;
#[path = "support/usage.rs"]
mod usage;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon::{galenctl, galenctl_output, galenctl_refused};
use galen_appliance::records::{Integrity, NewEntry};
use galen_hil::plant::PlantConfig;
use galen_hil::plant::config::BalanceConfig;
use galen_hil::rig::{Rig, RigConfig};
use galen_record::signature::{Meaning, SignatureRecord, binding};
use galen_record::{Entry, EntryKind};
use tempfile::TempDir;

/// A commissioned appliance, a simulated unit at `speed` (analytical balance) and a signed
/// repository with `recipes`.
struct Unit {
    rig: Rig,
    appliance: support::Rig,
    root: PathBuf,
    _dir: TempDir,
}

async fn unit(recipes: &[(String, Vec<u8>)], speed: f64) -> Unit {
    let appliance = support::Rig::new();
    daemon::commission(&appliance);
    let dir = tempfile::tempdir().unwrap();
    let (repo, root) = support::repository_with(dir.path(), recipes).await;
    let root_path = dir.path().join("root.json");
    std::fs::write(&root_path, root).unwrap();
    let plant = PlantConfig { balance: BalanceConfig::analytical(), ..PlantConfig::default() };
    let rig =
        Rig::start(RigConfig { plant, speed, ..RigConfig::default() }, &dir.path().join("rig"))
            .unwrap();
    daemon::put_on_stick(&appliance, &repo);
    Unit { rig, appliance, root: root_path, _dir: dir }
}

/// The manufacturer's root of the tuftool fixture, for tests that install no recipe.
fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/tests/fixtures/tuftool/root.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_starts_against_the_unit_and_stops_with_a_final_checkpoint() {
    let appliance = support::Rig::new();
    daemon::commission(&appliance);
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(RigConfig::default(), dir.path()).unwrap();
    let (child, ready, _) = daemon::start(&appliance, &rig, &fixture_root(), None);
    assert_eq!(ready, "applianced ready: 5 devices, 0 batch(es) held after restart");
    child.stop();
    let store = appliance.open();
    assert_eq!(store.integrity(), &Integrity::Sound);
    let all = store
        .entries_between(galen_record::UtcMillis(0), galen_record::UtcMillis(i64::MAX))
        .unwrap();
    assert_eq!(all.last().unwrap().body.object, "appliance.shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_record_says_was_running_is_held_at_start() {
    let appliance = support::Rig::new();
    daemon::commission(&appliance);
    {
        // As the runtime writes it just before a power cut mid-dispense.
        let mut store = appliance.open();
        let entry = |kind, object: &str, value: &str| NewEntry {
            batch_id: Some("B-CUT".into()),
            new_value: Some(value.into()),
            ..NewEntry::new(kind, object)
        };
        store
            .append(support::at(1), entry(EntryKind::BatchState, "batch.state", "Running"))
            .unwrap();
        store
            .append(support::at(2), entry(EntryKind::BatchState, "phase.dispense-water", "started"))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(RigConfig::default(), dir.path()).unwrap();
    let (child, ready, _) = daemon::start(&appliance, &rig, &fixture_root(), None);
    assert_eq!(ready, "applianced ready: 5 devices, 1 batch(es) held after restart");
    child.stop();
    let store = appliance.open();
    let batch = store.batch_entries("B-CUT").unwrap();
    let last = batch.last().unwrap();
    assert_eq!(
        (last.body.object.as_str(), last.body.new_value.as_deref()),
        ("batch.state", Some("Held"))
    );
    let deviation = &batch[batch.len() - 2];
    assert_eq!(deviation.body.kind, EntryKind::Deviation);
    assert!(deviation.body.new_value.as_deref().unwrap().contains("in phase dispense-water"));
}

/// Whether liquid is leaving the bottle at more than 3 mL/min: the peristaltic pump turns (a
/// stopped rotor's flow decays exponentially, so "any change" would never read as stopped).
fn peristaltic_turning(rig: &Rig) -> bool {
    let before = rig.plant().snapshot().bottle_ml;
    std::thread::sleep(Duration::from_millis(400));
    rig.plant().snapshot().bottle_ml < before - 0.02
}

/// `galenctl status`, as JSON.
fn status(name: &str) -> serde_json::Value {
    serde_json::from_str(&galenctl(name, "ada", &["--json", "status"])).unwrap()
}

/// Whether any of the batch's entries says `what`, with its object and who recorded it.
fn said<'a>(batch: &'a [Entry], object: &str, what: &str) -> Option<&'a Entry> {
    batch.iter().find(|e| {
        e.body.object == object && e.body.new_value.as_deref().is_some_and(|v| v.contains(what))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_dispense_the_pump_is_stopped_at_restart_and_nothing_acknowledged_is_lost() {
    let u = unit(&[support::test_recipe()], 1.0).await;
    let (child, _, name) = daemon::start(&u.appliance, &u.rig, &u.root, None);
    daemon::staff(&name, &["test-suspension"]);
    let id = daemon::start_batch(&name, "test-suspension");
    daemon::scan_materials(&name, &id);
    galenctl(&name, "ada", &["batch", "watch", &id, "--until-phase", "dispense-vehicle"]);
    assert!(peristaltic_turning(&u.rig), "the vehicle is being pumped");

    // Power cut, or the OOM killer: no handler runs.
    child.kill();
    assert!(peristaltic_turning(&u.rig), "nobody stopped the pump: the hazard a restart must end");

    let (child, ready, _) = daemon::start(&u.appliance, &u.rig, &u.root, Some(&name));
    assert_eq!(ready, "applianced ready: 5 devices, 1 batch(es) held after restart");
    // The stop went out before READY; a rotor runs down over its ramp (τ 0.3 s).
    std::thread::sleep(Duration::from_millis(1500));
    let turning = peristaltic_turning(&u.rig);

    // The batch is known again, on the unit's display, held with the restart's alarm.
    let shown = status(&name);
    assert_eq!(
        (shown["batch"].as_str(), shown["state"].as_str(), shown["phase"].as_str()),
        (Some(id.as_str()), Some("Held"), Some("dispense-vehicle")),
        "{shown}"
    );
    assert!(shown["alarms"][0].as_str().unwrap().contains("in phase dispense-vehicle"), "{shown}");
    assert!(shown["instruction"].as_str().unwrap().contains("abort the batch"), "{shown}");
    // Resuming would pump the whole vehicle target again on top of what went in: refused,
    // whatever the pharmacist acknowledges.
    galenctl(&name, "ada", &["ack", "--reason", "restart after a kill; line and vessel checked"]);
    let refused = galenctl_refused(&name, "ada", &["batch", "resume", &id]);
    assert!(
        refused.contains("phase dispense-vehicle was weighing when the supervisor stopped")
            && refused.contains("(WrongState)"),
        "{refused}"
    );
    galenctl(&name, "ada", &["batch", "abort", &id]);
    let watched = galenctl_output(&name, "ada", &["batch", "watch", &id]);
    assert_eq!(watched.status.code(), Some(5), "watch ends other than Complete");
    assert!(String::from_utf8_lossy(&watched.stdout).contains("Aborted"));
    daemon::assert_chain_verifies(&name);
    child.stop();

    let store = u.appliance.open();
    let deviation = store.batch_entries(&id).unwrap().iter().rev().find_map(|e| {
        (e.body.kind == EntryKind::Deviation).then(|| e.body.new_value.clone().unwrap_or_default())
    });
    assert!(!turning, "the restart stopped the pump before anything else; it said {deviation:?}");
    assert_eq!(store.integrity(), &Integrity::Sound);
    let batch = store.batch_entries(&id).unwrap();
    let has = |what: &str| {
        batch.iter().any(|e| e.body.new_value.as_deref().is_some_and(|v| v.contains(what)))
    };
    // What the API acknowledged before the kill is in the record.
    assert!(has("Verified by"), "the second person's signature");
    assert!(has("scanned azathioprine lot AZA-2291"), "the first scan");
    assert!(has("scanned vehicle lot ORA-77"), "the second scan");
    let restart = said(&batch, "batch.restart", "in phase dispense-vehicle").expect("a deviation");
    assert_eq!(restart.body.kind, EntryKind::Deviation);
    // Who decided what after the restart, and why.
    let ada = said(&batch, "batch.operator", "abort after the restart").expect("the abort");
    let ack = said(&batch, "alarm.acknowledged", "in phase dispense-vehicle").expect("the ack");
    assert_eq!(ack.body.reason.as_deref(), Some("restart after a kill; line and vessel checked"));
    assert_eq!(ada.body.user_id, ack.body.user_id);
    assert!(ack.seq > restart.seq && ada.seq > ack.seq);
    let last = batch.last().unwrap();
    assert_eq!(
        (last.body.object.as_str(), last.body.new_value.as_deref()),
        ("batch.state", Some("Aborted"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_hold_the_heater_is_off_before_ready_and_the_batch_resumes_after_qa_review() {
    // Heating takes plant minutes: the rig runs ten times faster than the wall clock.
    let u = unit(&[support::heated_recipe()], 10.0).await;
    let (child, _, name) = daemon::start(&u.appliance, &u.rig, &u.root, None);
    daemon::staff(&name, &["test-heated-suspension"]);
    let id = daemon::start_batch(&name, "test-heated-suspension");
    daemon::scan_materials(&name, &id);
    galenctl(&name, "ada", &["batch", "watch", &id, "--until-phase", "keep-warm"]);
    let heating = |rig: &Rig| rig.plant().snapshot().heater_w > 0.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !heating(&u.rig) {
        assert!(Instant::now() < deadline, "the heater never came on");
        std::thread::sleep(Duration::from_millis(50));
    }

    child.kill();
    std::thread::sleep(Duration::from_millis(300));
    assert!(heating(&u.rig), "nobody switched the heater off: the hazard a restart must end");

    let (child, ready, _) = daemon::start(&u.appliance, &u.rig, &u.root, Some(&name));
    // Off and acknowledged by the controller before READY: no waiting for a ramp.
    let heater_w = u.rig.plant().snapshot().heater_w;
    assert_eq!(ready, "applianced ready: 5 devices, 1 batch(es) held after restart");
    assert!(heater_w.abs() < f64::EPSILON, "the heater still gave {heater_w} W at READY");
    let shown = status(&name);
    assert_eq!(
        (shown["state"].as_str(), shown["phase"].as_str()),
        (Some("Held"), Some("keep-warm"))
    );
    assert!(shown["instruction"].as_str().unwrap().contains("QA must review"), "{shown}");

    // The recipe leaves an interrupted hold to QA; then the pharmacist must say who checked
    // what before it goes on.
    let refused = galenctl_refused(&name, "ada", &["batch", "resume", &id]);
    assert!(refused.contains("QA must review") && refused.contains("(NotReady)"), "{refused}");
    galenctl(&name, "quinn", &["batch", "review", &id]);
    let refused = galenctl_refused(&name, "ada", &["batch", "resume", &id]);
    assert!(refused.contains("acknowledge the restart alarm"), "{refused}");
    galenctl(&name, "ada", &["ack", "--reason", "power back; vessel covered, temperature checked"]);
    assert!(status(&name)["instruction"].as_str().unwrap().ends_with("resume or abort"));
    galenctl(&name, "ada", &["batch", "resume", &id]);
    galenctl(&name, "ada", &["batch", "watch", &id, "--until-operator"]);
    galenctl(&name, "ada", &["batch", "confirm", &id]);
    let watched = galenctl(&name, "ada", &["batch", "watch", &id]);
    assert!(watched.contains("Complete"), "{watched}");
    galenctl(&name, "ada", &["batch", "sign", &id]);
    daemon::assert_chain_verifies(&name);
    child.stop();

    let store = u.appliance.open();
    assert_eq!(store.integrity(), &Integrity::Sound);
    let batch = store.batch_entries(&id).unwrap();
    let restart = said(&batch, "batch.restart", "in phase keep-warm").expect("a deviation");
    assert!(
        restart.body.new_value.as_deref().unwrap().contains("policy for the phase is qa-decision")
    );
    let review = said(&batch, "signature.Reviewed by", "Reviewed by").expect("QA's decision");
    let resumed = said(&batch, "batch.operator", "resume after the restart: phase keep-warm runs")
        .expect("the resume, with how");
    assert!(resumed.body.new_value.as_deref().unwrap().ends_with("after QA's review"));
    assert!(resumed.body.user_id.is_some() && resumed.body.user_id != review.body.user_id);
    assert!(restart.seq < review.seq && review.seq < resumed.seq);
    let phase = |id: &str| -> Vec<&str> {
        batch
            .iter()
            .filter(|e| e.body.object == format!("phase.{id}"))
            .map(|e| e.body.new_value.as_deref().unwrap_or_default())
            .collect()
    };
    assert_eq!(phase("warm"), ["started", "reached 28.0 °C"], "finished phases stay finished");
    // The vessel cooled while the heater was off: the hold starts again, notes that it is out
    // of its band (a deviation), warms back and holds its whole minute.
    let hold = phase("keep-warm");
    assert_eq!(hold[..2], ["started", "started"], "{hold:?}");
    assert_eq!(hold.last(), Some(&"held 60 s in band"), "{hold:?}");
    assert!(hold[2..hold.len() - 1].iter().all(|h| h.starts_with("temperature left the band")));
    assert!(said(&batch, "batch.state", "Complete").is_some());
    assert!(said(&batch, "signature.Performed by", "Performed by").is_some());
}

/// Ada's session on the applianced serving `name`, logged in.
async fn session(name: &str, user: &str) -> zbus::Connection {
    let conn = galen_appliance::dbus::connect(&daemon::bus()).await.unwrap();
    let _: (String, String) = conn
        .call_method(
            Some(name),
            galen_appliance::dbus::PATH,
            Some("org.galen.Session1"),
            "Login",
            &(user, daemon::pin(user)),
        )
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap();
    conn
}

/// Every signature of the batch with `meaning`, each checked whole: its binding recomputes,
/// and the entry it signs is in the batch with the hash it names.
fn signatures(batch: &[Entry], meaning: Meaning) -> Vec<(u64, SignatureRecord)> {
    batch
        .iter()
        .filter(|e| e.body.kind == EntryKind::Signature)
        .map(|e| (e, serde_json::from_str::<SignatureRecord>(&e.body.payload).unwrap()))
        .filter(|(_, s)| s.meaning == meaning)
        .map(|(e, s)| {
            assert_eq!(binding(&s), s.binding, "signature {} binds what it says", e.seq);
            let signed = batch.iter().find(|x| x.seq == s.signed_seq).expect("the signed entry");
            assert_eq!(signed.entry_hash, s.signed_entry_hash);
            (e.seq, s)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_signing_the_signature_is_whole_or_absent_and_never_lost_once_answered() {
    let u = unit(&[support::test_recipe()], 10.0).await;
    let (child, _, name) = daemon::start(&u.appliance, &u.rig, &u.root, None);
    daemon::staff(&name, &["test-suspension"]);
    let id = daemon::start_batch(&name, "test-suspension");
    daemon::scan_materials(&name, &id);
    galenctl(&name, "ada", &["batch", "watch", &id, "--until-operator"]);
    galenctl(&name, "ada", &["batch", "confirm", &id]);
    galenctl(&name, "ada", &["batch", "watch", &id]);

    // The Sign call is sent on a logged-in session, then the daemon is killed after a delay:
    // before it reads the call, during the PIN check, around the entry's commit, around the
    // checkpoint. Each restart must find the chain whole and the signature all there or not
    // at all; an answered call must have its signature.
    let mut child = Some(child);
    let mut seen = Vec::new();
    for delay_ms in [0, 10, 25, 40, 55, 70, 90, 120, 200] {
        let conn = session(&name, "ada").await;
        let (dest, id2) = (name.clone(), id.clone());
        let sign = tokio::spawn(async move {
            conn.call_method(
                Some(dest.as_str()),
                galen_appliance::dbus::PATH,
                Some("org.galen.Batches1"),
                "Sign",
                &(id2.as_str(), daemon::pin("ada")),
            )
            .await
            .is_ok()
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        child.take().unwrap().kill();
        let answered = sign.await.unwrap();
        let (restarted, ready, _) = daemon::start(&u.appliance, &u.rig, &u.root, Some(&name));
        child = Some(restarted);
        assert_eq!(ready, "applianced ready: 5 devices, 0 batch(es) held after restart");
        daemon::assert_chain_verifies(&name);
        let batch: Vec<Entry> = daemon::entries(&name, &id)
            .into_iter()
            .map(|e| serde_json::from_value(e).unwrap())
            .collect();
        let present = signatures(&batch, Meaning::Authored).len();
        assert!(present <= 1, "one call, at most one signature");
        assert!(!answered || present == 1, "answered at {delay_ms} ms but not recorded");
        seen.push(format!("{delay_ms} ms: answered {answered}, recorded {}", present == 1));
        if present == 1 {
            break;
        }
    }
    println!("kills while signing: {}", seen.join("; "));
    let batch: Vec<Entry> = daemon::entries(&name, &id)
        .into_iter()
        .map(|e| serde_json::from_value(e).unwrap())
        .collect();
    if signatures(&batch, Meaning::Authored).is_empty() {
        galenctl(&name, "ada", &["batch", "sign", &id]);
    }
    // The batch is released by QA after all those restarts.
    let labels = tempfile::tempdir().unwrap();
    let dir = labels.path().display().to_string();
    galenctl(&name, "quinn", &["batch", "release", &id, "--label-dir", &dir]);
    child.take().unwrap().stop();

    // Whole: every signature is sealed by a signature checkpoint taken after it, even when the
    // kill came between the entry's commit and its checkpoint.
    let store = u.appliance.open();
    assert_eq!(store.integrity(), &Integrity::Sound);
    let batch = store.batch_entries(&id).unwrap();
    let db = support::raw(&u.appliance.db());
    for meaning in [Meaning::Verified, Meaning::Authored, Meaning::Released] {
        assert_eq!(signatures(&batch, meaning).len(), 1, "one {meaning:?} signature");
    }
    for (seq, s) in [Meaning::Verified, Meaning::Authored, Meaning::Released]
        .into_iter()
        .flat_map(|m| signatures(&batch, m))
    {
        let sealed: i64 = db
            .query_row(
                "SELECT count(*) FROM checkpoints WHERE reason = 'signature' AND entries >= ?1",
                [seq],
                |r| r.get(0),
            )
            .unwrap();
        assert!(sealed > 0, "the {:?} signature at {seq} was never sealed", s.meaning);
    }
    let completed: Vec<String> = db
        .prepare(
            "SELECT object FROM entries WHERE object IN \
             ('records.signature.sealed', 'records.checkpoint.completed')",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    println!("completed at a restart: {completed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_again_and_again_it_still_starts() {
    // Straight to a TPM with no resource manager, every killed run leaves its session loaded;
    // a TPM has room for three.
    let appliance = support::Rig::new();
    daemon::commission(&appliance);
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(RigConfig::default(), dir.path()).unwrap();
    let mut name = None;
    for _ in 0..5 {
        let (child, ready, n) = daemon::start(&appliance, &rig, &fixture_root(), name.as_deref());
        assert!(ready.starts_with("applianced ready"), "{ready}");
        name = Some(n);
        child.kill();
    }
    let (child, ready, _) = daemon::start(&appliance, &rig, &fixture_root(), name.as_deref());
    assert_eq!(ready, "applianced ready: 5 devices, 0 batch(es) held after restart");
    child.stop();
    assert_eq!(appliance.open().integrity(), &Integrity::Sound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_one_after_another_and_at_once_do_not_grow_its_memory() {
    // Each PIN check needs 19 MiB of Argon2 memory. Allocated per check, glibc kept them:
    // applianced grew by 19 MiB a login, past 500 MiB with a few logins at once.
    let appliance = support::Rig::new();
    daemon::commission(&appliance);
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(RigConfig::default(), dir.path()).unwrap();
    let (child, _, name) = daemon::start(&appliance, &rig, &fixture_root(), None);
    let mib = || usage::usage(Some(child.pid())).rss_kib / 1024.0;
    galenctl(&name, "admin", &["whoami"]);
    let first = mib();
    for _ in 0..10 {
        galenctl(&name, "admin", &["whoami"]);
    }
    for _ in 0..3 {
        let at_once: Vec<_> = (0..6)
            .map(|_| {
                let name = name.clone();
                std::thread::spawn(move || galenctl(&name, "admin", &["whoami"]))
            })
            .collect();
        at_once.into_iter().for_each(|t| drop(t.join().unwrap()));
    }
    let after = mib();
    assert!(after < first + 8.0, "{first:.1} MiB after one login, {after:.1} MiB after 29");
    child.stop();
}
