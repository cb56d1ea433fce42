//! The D-Bus API end to end: a real record store on a private swtpm, the simulated unit on
//! real ptys, real TUF metadata, and clients that talk D-Bus — once through the private
//! dbus-daemon `cargo xtask test` starts, once over a socket pair with no daemon at all. The
//! same test body runs over both.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use galen_appliance::dbus::{self, PATH};
use galen_appliance::records::users::{Action, Role, permits};
use galen_hil::rig::Injection;
use galen_record::entry::EntryKind;
use galen_record::signature::Meaning;
use serde::de::DeserializeOwned;
use zbus::Connection;
use zbus::zvariant::DynamicType;

const PEOPLE: [(&str, &str, Role, &str); 5] = [
    ("ada", "Ada Lovelace", Role::Pharmacist, "111111"),
    ("vic", "Victor Second", Role::Verifier, "222222"),
    ("quinn", "Quinn Release", Role::Qa, "333333"),
    ("ida", "Ida Inspector", Role::Inspector, "444444"),
    ("sam", "Sam Service", Role::Service, "555555"),
];

use support::Appliance;

async fn appliance() -> Appliance {
    support::appliance(&PEOPLE).await
}

/// How clients reach the service.
#[derive(Debug, Clone)]
enum Transport {
    /// Through the private dbus-daemon, under a name unique to this test.
    Bus { address: String, name: String, _server: Connection },
    /// A socket pair per client, no daemon.
    Peer,
}

async fn transport_bus(a: &Appliance, test: &str) -> Transport {
    let address = std::env::var("GALEN_TEST_DBUS_ADDRESS")
        .expect("run through `cargo xtask test`, which starts a private dbus-daemon");
    let name = format!("org.galen.Test.{test}.P{}", std::process::id());
    let conn = dbus::serve_bus(&address, a.svc.clone(), &name).await.unwrap();
    Transport::Bus { address, name, _server: conn }
}

/// One person's connection.
struct Client {
    conn: Connection,
    dest: Option<String>,
    _server: Option<Connection>,
}

type Named = (String, String);

impl Client {
    async fn new(a: &Appliance, t: &Transport) -> Client {
        match t {
            Transport::Bus { address, name, .. } => {
                let conn = zbus::connection::Builder::address(address.as_str())
                    .unwrap()
                    .build()
                    .await
                    .unwrap();
                Client { conn, dest: Some(name.clone()), _server: None }
            }
            Transport::Peer => {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let (s, c) = tokio::net::UnixStream::pair().unwrap();
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let server = dbus::serve_peer(s, a.svc.clone(), format!("peer-{n}"));
                let client = zbus::connection::Builder::unix_stream(c).p2p().build();
                let (server, conn) = tokio::try_join!(server, client).unwrap();
                Client { conn, dest: None, _server: Some(server) }
            }
        }
    }

    async fn call<B, R>(&self, iface: &str, method: &str, body: &B) -> Result<R, Named>
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + zbus::zvariant::Type,
    {
        let iface = format!("org.galen.{iface}");
        match self
            .conn
            .call_method(self.dest.as_deref(), PATH, Some(iface.as_str()), method, body)
            .await
        {
            Ok(reply) => Ok(reply.body().deserialize().unwrap()),
            Err(zbus::Error::MethodError(name, text, _)) => {
                Err((name.to_string(), text.unwrap_or_default()))
            }
            Err(e) => panic!("{iface}.{method}: {e}"),
        }
    }

    async fn ok<B, R>(&self, iface: &str, method: &str, body: &B) -> R
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + zbus::zvariant::Type,
    {
        match self.call(iface, method, body).await {
            Ok(r) => r,
            Err((name, text)) => panic!("{iface}.{method} failed: {name}: {text}"),
        }
    }

    async fn login(a: &Appliance, t: &Transport, user: &str) -> Client {
        let c = Client::new(a, t).await;
        let pin = pin(user);
        let _: (String, String) = c.ok("Session1", "Login", &(user, pin)).await;
        c
    }

    async fn property<T: TryFrom<zbus::zvariant::OwnedValue>>(&self, name: &str) -> T
    where
        T::Error: std::fmt::Debug,
    {
        // A plain call: a proxy would ask a bus daemon about names, and a socket pair has none.
        let reply = self
            .conn
            .call_method(
                self.dest.as_deref(),
                PATH,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.galen.Unit1", name),
            )
            .await
            .unwrap();
        let value: zbus::zvariant::OwnedValue = reply.body().deserialize().unwrap();
        T::try_from(value).unwrap()
    }
}

fn pin(user: &str) -> &'static str {
    if user == "admin" {
        return support::ADMIN_PIN;
    }
    PEOPLE.iter().find(|p| p.0 == user).map(|p| p.3).unwrap()
}

fn error_name(e: &Named) -> &str {
    e.0.trim_start_matches("org.galen.Error.")
}

fn patient() -> HashMap<String, String> {
    HashMap::from([
        ("patient_id".to_owned(), "P-0042".to_owned()),
        ("weight_kg".to_owned(), "7.0".to_owned()),
        ("age_years".to_owned(), "2".to_owned()),
        ("phenotype.TPMT".to_owned(), "Intermediate Metabolizer".to_owned()),
        ("phenotype.NUDT15".to_owned(), "Normal Metabolizer".to_owned()),
    ])
}

/// Waits until the unit's live state satisfies `cond`, up to `secs`.
async fn wait_for(c: &Client, secs: u64, what: &str, cond: impl Fn(&str, &str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let state: String = c.property("State").await;
        let phase: String = c.property("Phase").await;
        if cond(&state, &phase) {
            return;
        }
        if cond(&state, "Held") || state == "Held" || tokio::time::Instant::now() >= deadline {
            let alarms: Vec<String> = c.property("Alarms").await;
            panic!("waited for {what}; state {state}, phase {phase}, alarms {alarms:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whole life of a personalised batch, as four people at the appliance see it.
async fn a_batch_from_patient_data_to_export(a: &Appliance, t: &Transport) -> String {
    let quinn = Client::login(a, t, "quinn").await;
    let installed: Vec<String> =
        quinn.ok("Recipes1", "Install", &(a.repo.display().to_string(),)).await;
    assert_eq!(installed, ["installed test-suspension revision 1 (waiting for QA activation)"]);

    let ada = Client::login(a, t, "ada").await;
    let empty = (String::new(), Vec::<u8>::new());
    let refused = ada
        .call::<_, String>(
            "Batches1",
            "Preview",
            &("test-suspension", patient(), &empty.0, &empty.1),
        )
        .await;
    assert_eq!(error_name(&refused.unwrap_err()), "RecipeNotActive");

    let wrong = quinn.call::<_, u32>("Recipes1", "Activate", &("test-suspension", "999999")).await;
    assert_eq!(error_name(&wrong.unwrap_err()), "WrongCredentials");
    let revision: u32 = quinn.ok("Recipes1", "Activate", &("test-suspension", pin("quinn"))).await;
    assert_eq!(revision, 1);
    let list: Vec<(String, u32, String, bool)> = ada.ok("Recipes1", "List", &()).await;
    assert_eq!(list.len(), 1);
    assert!(list[0].3, "active after QA's signature");

    // The calculation is shown before anything is created; bad input is named.
    let preview: String =
        ada.ok("Batches1", "Preview", &("test-suspension", patient(), &empty.0, &empty.1)).await;
    let preview: serde_json::Value = serde_json::from_str(&preview).unwrap();
    assert!(preview["text"].as_str().unwrap().contains("TPMT"), "{preview:#}");
    let mut bad = patient();
    bad.insert("weight_kg".into(), "seventy".into());
    let e = ada
        .call::<_, (String, String)>(
            "Batches1",
            "Create",
            &("test-suspension", bad, &empty.0, &empty.1),
        )
        .await;
    assert_eq!(error_name(&e.unwrap_err()), "InvalidInput");
    let mut poor = patient();
    poor.insert("phenotype.NUDT15".into(), "Poor Metabolizer".into());
    let e = ada
        .call::<_, (String, String)>(
            "Batches1",
            "Create",
            &("test-suspension", poor, &empty.0, &empty.1),
        )
        .await
        .unwrap_err();
    assert_eq!(error_name(&e), "Refused", "{e:?}");
    assert!(e.1.contains("NUDT15"), "the refusal explains itself: {}", e.1);

    let (id, calc): (String, String) =
        ada.ok("Batches1", "Create", &("test-suspension", patient(), &empty.0, &empty.1)).await;
    assert!(id.starts_with("B-"), "{id}");
    assert!(calc.contains("P-0042"));

    // Not before a second person verified; never by the author.
    let e = ada.call::<_, ()>("Batches1", "Start", &(&id,)).await.unwrap_err();
    assert_eq!(error_name(&e), "NotReady", "{e:?}");
    let e = ada.call::<_, ()>("Batches1", "Verify", &(&id, pin("ada"))).await.unwrap_err();
    assert_eq!(error_name(&e), "NotPermitted", "a pharmacist cannot sign as verifier: {e:?}");
    let vic = Client::login(a, t, "vic").await;
    let () = vic.ok("Batches1", "Verify", &(&id, pin("vic"))).await;

    // Not while the emergency stop is pressed: refused before anything begins.
    a.rig.inject(Injection::EmergencyStop(true)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let alarms: Vec<String> = ada.property("Alarms").await;
        if alarms.iter().any(|a| a.contains("emergency stop pressed")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the unit never showed it: {alarms:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = ada.call::<_, ()>("Batches1", "Start", &(&id,)).await.unwrap_err();
    assert_eq!(error_name(&refused), "NotReady", "{refused:?}");
    assert!(refused.1.contains("the emergency stop is pressed"), "{}", refused.1);
    a.rig.inject(Injection::EmergencyStop(false)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match ada.call::<_, ()>("Batches1", "Start", &(&id,)).await {
            Ok(()) => {
                // Pressed and released with no batch running: both are in the unit's history.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while access_entries_of(a, EntryKind::System, "unit.emergency_stop") < 2 {
                    assert!(tokio::time::Instant::now() < deadline, "not recorded");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                break;
            }
            Err(e) if e.1.contains("emergency stop") => {
                assert!(tokio::time::Instant::now() < deadline, "still refused: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("refused after the release: {e:?}"),
        }
    }
    let e = ada.call::<_, ()>("Batches1", "Start", &(&id,)).await.unwrap_err();
    assert_eq!(error_name(&e), "Busy", "{e:?}");
    wait_for(&ada, 10, "the first scan", |s, p| s == "Running" && p == "scan-api").await;
    let now: String = ada.property("Instruction").await;
    assert_eq!(now, "Scan the azathioprine container (lot and expiry)");
    let awaiting: String = ada.property("Awaiting").await;
    assert_eq!(awaiting, "scan");
    // A command the step cannot take is accepted by the API and refused by the batch: the
    // screen learns why from Notice.
    let () = ada.ok("Batches1", "Confirm", &(&id,)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let notice: String = ada.property("Notice").await;
        if notice == "there is nothing to confirm at this step" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no notice of the refusal: {notice:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = ada
        .call::<_, ()>("Batches1", "Scan", &(&id, "azathioprine", "L1", "tomorrow"))
        .await
        .unwrap_err();
    assert_eq!(error_name(&e), "InvalidInput");
    let () = ada.ok("Batches1", "Scan", &(&id, "azathioprine", "AZA-2291", "2030-01-31")).await;
    wait_for(&ada, 10, "the second scan", |_, p| p == "scan-vehicle").await;
    let () = ada.ok("Batches1", "Scan", &(&id, "vehicle", "ORA-77", "2030-06-30")).await;
    wait_for(&ada, 120, "the cleaning step", |_, p| p == "flush").await;
    let weight: f64 = ada.property("WeightGrams").await;
    assert!(weight > 5.0, "the vehicle is on the balance: {weight} g");
    let () = ada.ok("Batches1", "Confirm", &(&id,)).await;
    wait_for(&ada, 10, "Complete", |s, _| s == "Complete").await;

    let e = ada.call::<_, String>("Batches1", "Release", &(&id, pin("ada"))).await.unwrap_err();
    assert_eq!(error_name(&e), "NotPermitted");
    let e = quinn.call::<_, String>("Batches1", "Release", &(&id, pin("quinn"))).await.unwrap_err();
    assert_eq!(error_name(&e), "NotReady", "not before the performer signed: {e:?}");
    let () = ada.ok("Batches1", "Sign", &(&id, pin("ada"))).await;
    let (label, pdf, zpl): (String, Vec<u8>, String) =
        quinn.ok("Batches1", "Release", &(&id, pin("quinn"))).await;
    assert!(label.contains("P-0042") && label.contains(&id), "{label}");
    assert!(pdf.starts_with(b"%PDF"), "the label comes as a PDF");
    assert!(
        zpl.contains("^XA") && zpl.contains(&format!("P-0042/{id}")),
        "and as ZPL with the barcode: {zpl}"
    );

    // The inspector exports it, with progress, and the record holds the whole story.
    let ida = Client::login(a, t, "ida").await;
    let (folder, location, entries, _): (String, String, u64, bool) =
        ida.ok("Records1", "Export", &(vec![id.clone()], 0i64, 0i64)).await;
    assert!(entries > 10, "{entries}");
    let bundle = a.exports.join(&folder);
    assert_eq!(Path::new(&location), bundle);
    assert!(bundle.join(galen_record::bundle::MANIFEST).exists(), "{}", bundle.display());
    let log: String = ida.ok("Records1", "Entries", &(&id,)).await;
    for needle in [
        "batch_created",
        "personalisation",
        "Verified by",
        "scanned azathioprine lot AZA-2291",
        "Complete",
        "batch.label",
        "Released by",
    ] {
        assert!(log.contains(needle), "the record has {needle}");
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_batch_outlives_a_restart_with_the_dose_it_was_created_with() {
    let mut a = appliance().await;
    let t = Transport::Peer;
    let quinn = Client::login(&a, &t, "quinn").await;
    let _: Vec<String> = quinn.ok("Recipes1", "Install", &(a.repo.display().to_string(),)).await;
    let _: u32 = quinn.ok("Recipes1", "Activate", &("test-suspension", pin("quinn"))).await;
    let ada = Client::login(&a, &t, "ada").await;
    let empty = (String::new(), Vec::<u8>::new());
    let (id, created): (String, String) =
        ada.ok("Batches1", "Create", &("test-suspension", patient(), &empty.0, &empty.1)).await;

    a.restart_service();
    let (ada, vic) = (Client::login(&a, &t, "ada").await, Client::login(&a, &t, "vic").await);
    let list: Vec<(String, String, String, String)> = ada.ok("Batches1", "List", &()).await;
    assert_eq!(list, [(id.clone(), "test-suspension".into(), "P-0042".into(), "Created".into())]);
    let shown: String = ada.ok("Batches1", "Get", &(&id,)).await;
    let (shown, created): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&shown).unwrap(), serde_json::from_str(&created).unwrap());
    assert_eq!(shown["calculation"], created, "the calculation as it was recorded");
    // It goes on where it was: the dose is computed again, equals the record, and runs.
    let () = vic.ok("Batches1", "Verify", &(&id, pin("vic"))).await;
    let () = ada.ok("Batches1", "Start", &(&id,)).await;
    wait_for(&ada, 10, "the first scan", |s, p| s == "Running" && p == "scan-api").await;
    let () = ada.ok("Batches1", "Abort", &(&id,)).await;
    wait_for(&ada, 10, "the abort", |s, _| s == "Aborted").await;
}

/// A client that subscribed to live changes and stopped reading them.
type Hung = (Connection, zbus::fdo::PropertiesChangedStream);

/// Screens, shells and monitors watching the unit: half read every change, half subscribe and
/// never read (a hung client). Returns how many changes the readers saw, live.
async fn crowd(t: &Transport, n: usize) -> (Vec<Hung>, Arc<std::sync::atomic::AtomicUsize>) {
    let Transport::Bus { address, name, .. } = t else { unreachable!("a crowd needs a bus") };
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut hung = Vec::new();
    for i in 0..n {
        let conn =
            zbus::connection::Builder::address(address.as_str()).unwrap().build().await.unwrap();
        let p = zbus::fdo::PropertiesProxy::builder(&conn)
            .destination(name.clone())
            .unwrap()
            .path(PATH)
            .unwrap()
            .build()
            .await
            .unwrap();
        let mut changes = p.receive_properties_changed().await.unwrap();
        if i % 2 == 0 {
            let seen = seen.clone();
            tokio::spawn(async move {
                while changes.next().await.is_some() {
                    seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        } else {
            // Subscribed, never read: its queue fills and stays full.
            hung.push((conn, changes));
        }
    }
    (hung, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_runs_end_to_end_over_the_bus_watched_by_a_crowd() {
    let a = appliance().await;
    let t = transport_bus(&a, "endtoend").await;
    let (_hung, seen) = crowd(&t, 100).await;
    let id = a_batch_from_patient_data_to_export(&a, &t).await;
    // The batch ran as without them: no alarm (a stale-reading fault trips when the loop misses
    // readings for 3 s), no deviation (every dispense within tolerance).
    let entries = a.records.lock().unwrap().batch_entries(&id).unwrap();
    let troubles: Vec<_> = entries
        .iter()
        .filter(|e| matches!(e.body.kind, EntryKind::Alarm | EntryKind::Deviation))
        .map(|e| format!("{:?} {:?}", e.body.object, e.body.new_value))
        .collect();
    assert!(troubles.is_empty(), "while the crowd watched: {troubles:?}");
    let seen = seen.load(std::sync::atomic::Ordering::Relaxed);
    assert!(seen > 50 * 20, "the fifty readers saw the batch live: {seen} changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_runs_end_to_end_over_a_socket_pair() {
    let a = appliance().await;
    a_batch_from_patient_data_to_export(&a, &Transport::Peer).await;
}

/// What is on the stick comes in only through the listing: QA installs the update named there,
/// a pharmacist previews with the lab report named there, and a name the listing does not
/// hold is refused by name, whatever path it spells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_reports_and_recipe_updates_come_in_from_the_stick_by_the_names_it_lists() {
    let a = appliance().await;
    let t = Transport::Peer;
    let stick = &a.exports;
    support::copy_dir(&a.repo, &stick.join("MANUFACTURER/galen"));
    std::fs::create_dir_all(stick.join("lab")).unwrap();
    let report =
        "TPMT\t*1/*3A\tIntermediate Metabolizer\t1.0\nNUDT15\t*1/*1\tNormal Metabolizer\t2.0\n";
    std::fs::write(stick.join("lab/P-0042.tsv"), report).unwrap();
    std::fs::write(stick.join("notes.txt"), "not a lab report").unwrap();

    let quinn = Client::login(&a, &t, "quinn").await;
    let (label, labs, updates): (String, Vec<(String, i64, u64)>, Vec<String>) =
        quinn.ok("Stick1", "Contents", &()).await;
    assert_eq!(label, "exports", "a folder standing in for a stick is named by its name");
    assert_eq!(labs.len(), 1, "{labs:?}");
    assert_eq!((labs[0].0.as_str(), labs[0].2), ("lab/P-0042.tsv", report.len() as u64));
    assert!(labs[0].1 > 0, "the report's date: {labs:?}");
    assert_eq!(updates, ["MANUFACTURER/galen"]);

    for name in ["MANUFACTURER", "../exports/MANUFACTURER/galen", "/"] {
        let e = quinn.call::<_, Vec<String>>("Stick1", "InstallRecipes", &(name,)).await;
        let e = e.unwrap_err();
        assert_eq!(error_name(&e), "Usb", "{name}: {e:?}");
        assert!(e.1.contains("no recipe update in"), "{name}: {}", e.1);
    }
    let installed: Vec<String> =
        quinn.ok("Stick1", "InstallRecipes", &("MANUFACTURER/galen",)).await;
    assert_eq!(installed, ["installed test-suspension revision 1 (waiting for QA activation)"]);
    let _: u32 = quinn.ok("Recipes1", "Activate", &("test-suspension", pin("quinn"))).await;
    let source = {
        let store = a.records.lock().unwrap();
        let entries = store.batch_entries("recipe:test-suspension@1").unwrap();
        let installed = entries.iter().find(|e| e.body.object == "recipe.installed").unwrap();
        installed.body.reason.clone().unwrap()
    };
    assert_eq!(source, "signed update from USB stick exports, folder MANUFACTURER/galen");

    let ada = Client::login(&a, &t, "ada").await;
    for name in ["notes.txt", "lab/../lab/P-0042.tsv", "P-0042.tsv"] {
        let e = ada.call::<_, Vec<u8>>("Stick1", "ReadLabFile", &(name,)).await.unwrap_err();
        assert!(e.1.contains("is not a lab report on this stick"), "{name}: {}", e.1);
    }
    let bytes: Vec<u8> = ada.ok("Stick1", "ReadLabFile", &("lab/P-0042.tsv",)).await;
    assert_eq!(bytes, report.as_bytes());
    let mut typed = patient();
    typed.remove("phenotype.TPMT");
    typed.remove("phenotype.NUDT15");
    let preview: String =
        ada.ok("Batches1", "Preview", &("test-suspension", typed, "lab/P-0042.tsv", bytes)).await;
    let preview: serde_json::Value = serde_json::from_str(&preview).unwrap();
    let text = preview["text"].as_str().unwrap();
    assert!(text.contains("Intermediate Metabolizer") && text.contains("P-0042.tsv"), "{text}");
    let ida = Client::login(&a, &t, "ida").await;
    let e = ida.call::<_, Vec<u8>>("Stick1", "ReadLabFile", &("lab/P-0042.tsv",)).await;
    assert_eq!(error_name(&e.unwrap_err()), "NotPermitted", "an inspector reads no lab reports");
}

/// Every method, with arguments that would be refused anyway, and the action it needs
/// (`None`: any session).
fn methods()
-> Vec<(&'static str, &'static str, Option<Action>, zbus::zvariant::StructureBuilder<'static>)> {
    use zbus::zvariant::StructureBuilder as S;
    let id = || "B-NONE".to_owned();
    let fields: HashMap<String, String> = HashMap::new();
    vec![
        ("Session1", "Logout", None, S::new()),
        ("Session1", "WhoAmI", None, S::new()),
        ("Recipes1", "List", Some(Action::ViewRecords), S::new()),
        ("Recipes1", "Details", Some(Action::ViewRecords), S::new().add_field(id())),
        (
            "Recipes1",
            "Install",
            Some(Action::ImportRecipes),
            S::new().add_field("/nonexistent".to_owned()),
        ),
        (
            "Recipes1",
            "Activate",
            Some(Action::Sign(Meaning::Activated)),
            S::new().add_field(id()).add_field(String::new()),
        ),
        (
            "Batches1",
            "Preview",
            Some(Action::RunBatch),
            S::new()
                .add_field(id())
                .add_field(fields.clone())
                .add_field(String::new())
                .add_field(Vec::<u8>::new()),
        ),
        (
            "Batches1",
            "Create",
            Some(Action::RunBatch),
            S::new()
                .add_field(id())
                .add_field(fields)
                .add_field(String::new())
                .add_field(Vec::<u8>::new()),
        ),
        ("Batches1", "List", Some(Action::ViewRecords), S::new()),
        ("Batches1", "Get", Some(Action::ViewRecords), S::new().add_field(id())),
        (
            "Batches1",
            "Verify",
            Some(Action::Sign(Meaning::Verified)),
            S::new().add_field(id()).add_field(String::new()),
        ),
        (
            "Batches1",
            "Review",
            Some(Action::Sign(Meaning::Reviewed)),
            S::new().add_field(id()).add_field(String::new()),
        ),
        ("Batches1", "Start", Some(Action::RunBatch), S::new().add_field(id())),
        (
            "Batches1",
            "Scan",
            Some(Action::RunBatch),
            S::new()
                .add_field(id())
                .add_field(id())
                .add_field(id())
                .add_field("2030-01-01".to_owned()),
        ),
        ("Batches1", "Confirm", Some(Action::RunBatch), S::new().add_field(id())),
        ("Batches1", "Hold", Some(Action::RunBatch), S::new().add_field(id())),
        ("Batches1", "Resume", Some(Action::RunBatch), S::new().add_field(id())),
        ("Batches1", "Stop", Some(Action::RunBatch), S::new().add_field(id())),
        ("Batches1", "Abort", Some(Action::RunBatch), S::new().add_field(id())),
        (
            "Batches1",
            "Sign",
            Some(Action::Sign(Meaning::Authored)),
            S::new().add_field(id()).add_field(String::new()),
        ),
        (
            "Batches1",
            "Release",
            Some(Action::Sign(Meaning::Released)),
            S::new().add_field(id()).add_field(String::new()),
        ),
        ("Records1", "Entries", Some(Action::ViewRecords), S::new().add_field(id())),
        ("Records1", "Verify", Some(Action::ViewRecords), S::new()),
        (
            "Records1",
            "Export",
            Some(Action::ExportRecords),
            S::new().add_field(vec![id()]).add_field(0i64).add_field(0i64),
        ),
        ("Users1", "List", Some(Action::ManageUsers), S::new()),
        (
            "Users1",
            "Add",
            Some(Action::ManageUsers),
            S::new()
                .add_field(String::new())
                .add_field(String::new())
                .add_field("nobody".to_owned())
                .add_field(String::new())
                .add_field(String::new()),
        ),
        (
            "Users1",
            "Deactivate",
            Some(Action::ManageUsers),
            S::new().add_field(9999u64).add_field(String::new()),
        ),
        ("Unit1", "AcknowledgeAlarms", Some(Action::RunBatch), S::new().add_field(String::new())),
        ("Stick1", "Contents", None, S::new()),
        ("Stick1", "ReadLabFile", Some(Action::RunBatch), S::new().add_field(id())),
        ("Stick1", "InstallRecipes", Some(Action::ImportRecipes), S::new().add_field(id())),
    ]
}

/// How many access entries named `object` ("refused", "logout") the record holds.
fn access_entries(a: &Appliance, object: &str) -> usize {
    access_entries_of(a, EntryKind::Access, object)
}

/// How many entries of `kind` named `object` the record holds.
fn access_entries_of(a: &Appliance, kind: EntryKind, object: &str) -> usize {
    let store = a.records.lock().unwrap();
    store
        .entries_between(galen_record::UtcMillis(0), galen_record::UtcMillis(i64::MAX))
        .unwrap()
        .iter()
        .filter(|e| e.body.kind == kind && e.body.object == object)
        .count()
}

fn refusals(a: &Appliance) -> usize {
    access_entries(a, "refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_checks_the_callers_role_and_records_every_refusal() {
    let a = appliance().await;
    let t = Transport::Peer;
    let people: Vec<(Option<&str>, Option<Role>)> = std::iter::once((None, None))
        .chain(std::iter::once((Some("admin"), Some(Role::Admin))))
        .chain(PEOPLE.iter().map(|p| (Some(p.0), Some(p.2))))
        .collect();
    let mut checked = 0;
    for (user, role) in people {
        let c = match user {
            Some(u) => Client::login(&a, &t, u).await,
            None => Client::new(&a, &t).await,
        };
        for (iface, method, needs, args) in methods() {
            // Logging out would end the session the next calls need.
            if method == "Logout" && user.is_some() {
                continue;
            }
            let before = refusals(&a);
            let iface_name = format!("org.galen.{iface}");
            let call = |body| {
                c.conn.call_method(None::<&str>, PATH, Some(iface_name.as_str()), method, body)
            };
            let reply = match args.build() {
                Ok(args) => call(&args).await,
                Err(_) => {
                    c.conn
                        .call_method(None::<&str>, PATH, Some(iface_name.as_str()), method, &())
                        .await
                }
            };
            let error = match reply {
                Ok(_) => None,
                Err(zbus::Error::MethodError(name, _, _)) => {
                    Some(name.trim_start_matches("org.galen.Error.").to_owned())
                }
                Err(e) => panic!("{iface}.{method}: {e}"),
            };
            let allowed = match (role, needs) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(r), Some(action)) => permits(r, action),
            };
            let who = user.unwrap_or("no session");
            let error = error.as_deref();
            if allowed {
                assert!(
                    !matches!(error, Some("NotLoggedIn" | "NotPermitted")),
                    "{who} may call {iface}.{method} but got {error:?}"
                );
            } else {
                let expected = if role.is_none() { "NotLoggedIn" } else { "NotPermitted" };
                assert_eq!(error, Some(expected), "{who} calling {iface}.{method}");
                assert_eq!(
                    refusals(&a),
                    before + 1,
                    "{who} calling {iface}.{method} left an audit entry"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, methods().len() + 6 * (methods().len() - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_belongs_to_its_connection_and_ends_with_it() {
    let a = appliance().await;
    let t = transport_bus(&a, "sessions").await;
    let ada = Client::login(&a, &t, "ada").await;
    let other = Client::new(&a, &t).await;
    let e = other.call::<_, (String, String, String)>("Session1", "WhoAmI", &()).await.unwrap_err();
    assert_eq!(error_name(&e), "NotLoggedIn", "another connection does not share ada's session");
    let (user, _, role): (String, String, String) = ada.ok("Session1", "WhoAmI", &()).await;
    assert_eq!((user.as_str(), role.as_str()), ("ada", "pharmacist"));
    let logouts = || access_entries(&a, "logout");
    let before = logouts();
    drop(ada);
    for _ in 0..50 {
        if logouts() > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("closing the connection did not end (and record) the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_introspection_is_the_published_interface() {
    let a = appliance().await;
    let c = Client::new(&a, &Transport::Peer).await;
    let xml: String = c
        .conn
        .call_method(
            None::<&str>,
            PATH,
            Some("org.freedesktop.DBus.Introspectable"),
            "Introspect",
            &(),
        )
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap();
    insta::assert_snapshot!(xml);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_state_reaches_subscribers_as_signals() {
    let a = appliance().await;
    let t = transport_bus(&a, "live").await;
    let c = Client::new(&a, &t).await;
    let p = zbus::fdo::PropertiesProxy::builder(&c.conn)
        .destination(c.dest.clone().unwrap())
        .unwrap()
        .path(PATH)
        .unwrap()
        .build()
        .await
        .unwrap();
    let mut changes = p.receive_properties_changed().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let s = changes.next().await.unwrap();
            let args = s.args().unwrap();
            if args.changed_properties().contains_key("WeightGrams") {
                return f64::try_from(
                    args.changed_properties()["WeightGrams"].try_clone().unwrap(),
                )
                .unwrap();
            }
        }
    })
    .await
    .expect("the balance's readings arrive as PropertiesChanged within 5 s");
    assert!(got.is_finite(), "{got}");
}
