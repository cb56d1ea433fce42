//! Test support: a private software TPM per test, so NV counters and keys never leak between
//! tests running in parallel, and a store factory on top of it.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use galen_appliance::engine::plan::Instruments;
use galen_appliance::records::users::Role;
use galen_appliance::records::{At, FirstAdmin, NewUser, RecordStore};
use galen_appliance::service::{Config, Service, StickAccess};
use galen_appliance::supervisor::live::{Feed, Live, LiveTx, distribute};
use galen_appliance::supervisor::runtime::Devices;
use galen_appliance::supervisor::runtime::SystemClock;
use galen_appliance::supervisor::{instruments, start_devices};
use galen_appliance::tpm::{Tpm, TpmConfig};
use galen_hil::plant::PlantConfig;
use galen_hil::plant::config::BalanceConfig;
use galen_hil::rig::{Rig as HilRig, RigConfig};
use galen_recipes::model::Version;
use galen_recipes::tuf::intake::Intake;
use galen_recipes::tuf::publish::{self, Expiries, RoleSpec};
use galen_record::UtcMillis;
use jiff::{SignedDuration, Timestamp};
use tempfile::TempDir;
use tough::schema::RoleType;

/// A running swtpm whose state lives in its own directory; killed on drop.
pub struct SwTpm {
    child: Child,
    pub state: PathBuf,
    pub tcti: String,
}

impl SwTpm {
    /// Starts swtpm on a fresh (or existing) state directory, on free loopback TCP ports:
    /// tss-esapi's `swtpm:` TCTI speaks TCP only (data port P, control port P + 1).
    pub fn start(state: &Path) -> Self {
        std::fs::create_dir_all(state).unwrap();
        for _ in 0..20 {
            let port = free_port_pair();
            let mut child = Command::new("swtpm")
                .arg("socket")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(format!("dir={}", state.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("swtpm is installed by `cargo xtask setup`");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break; // lost a race for the port: try another
                }
                // Not "something answers on the port": another test's swtpm may have won the
                // race for it, and a second client of a swtpm waits forever.
                if listens(child.id(), port) && listens(child.id(), port + 1) {
                    return Self {
                        child,
                        state: state.to_path_buf(),
                        tcti: format!("swtpm:host=127.0.0.1,port={port}"),
                    };
                }
                assert!(Instant::now() < deadline, "swtpm did not listen on {port}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("could not start swtpm on any port");
    }

    /// Stops swtpm, keeping its state directory.
    pub fn stop(mut self) -> PathBuf {
        self.kill();
        self.state.clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SwTpm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temporary appliance: a TPM, a key directory and a database path.
pub struct Rig {
    pub dir: TempDir,
    pub tpm: Option<SwTpm>,
}

pub const DEVICE: &str = "galen-test-0001";
pub const ADMIN_PIN: &str = "271828";

pub fn at(ms: i64) -> At {
    At::utc(UtcMillis(1_795_249_073_000 + ms))
}

impl Rig {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tpm = SwTpm::start(&dir.path().join("tpm"));
        Self { dir, tpm: Some(tpm) }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("records.sqlite")
    }

    pub fn tpm(&self) -> Tpm {
        let config = TpmConfig {
            tcti: self.tpm.as_ref().expect("TPM running").tcti.clone(),
            key_dir: self.dir.path().join("keys"),
            nv_index: 0x0150_0100,
            pcrs: vec![7],
        };
        Tpm::open(&config).expect("open the TPM")
    }

    pub fn commission(&self) -> RecordStore {
        let admin = FirstAdmin { username: "admin", full_name: "Alan Admin", pin: ADMIN_PIN };
        RecordStore::create(&self.db(), DEVICE, self.tpm(), &admin, at(0)).expect("commission")
    }

    pub fn open(&self) -> RecordStore {
        RecordStore::open(&self.db(), DEVICE, self.tpm(), at(1_000_000)).expect("open")
    }

    /// Restarts the TPM on a copy of its state taken earlier (a TPM "time machine").
    pub fn restart_tpm_from(&mut self, state: &Path) {
        let current = self.tpm.take().expect("TPM running").stop();
        std::fs::remove_dir_all(&current).unwrap();
        copy_dir(state, &current);
        self.tpm = Some(SwTpm::start(&current));
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`.
fn listens(pid: u32, port: u16) -> bool {
    let owned: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?;
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address, st (0A = LISTEN), inode
        f.len() > 9 && f[1] == local && f[3] == "0A" && owned.contains(f[9])
    })
}

/// A port P such that P and P + 1 were free a moment ago.
fn free_port_pair() -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// Copies a folder with everything in it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        }
    }
}

/// A raw SQLite connection to a closed store, for tampering as an attacker with disk access.
pub fn raw(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(db).unwrap()
}

/// A test recipe: the azathioprine example made quick for the rig — the active comes as a
/// liquid concentrate through the syringe pump instead of a hand-weighed powder, and the mix
/// lasts two seconds — so a whole batch runs in well under a minute.
pub fn test_recipe() -> (String, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../recipes/examples/azathioprine-oral-suspension.toml");
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("id = \"azathioprine-oral-suspension\"", "id = \"test-suspension\"")
        .replace(
            "form = \"solid\"\nconcentration_mg_per_g = 1000",
            "form = \"liquid\"\nconcentration_mg_per_g = 1000\ndensity_g_per_ml = 1.0",
        )
        .replace(
            "[[equipment]]\nkind = \"mixer\"",
            "[[equipment]]\nkind = \"syringe-pump\"\nmax_rate_ml_per_min = 20\n\n[[equipment]]\nkind = \"mixer\"",
        )
        .replace(
            "dose = \"active\"\ntolerance_g = 0.005",
            "dose = \"active\"\npump = \"syringe-pump\"\ntolerance_g = 0.05",
        )
        .replace("duration_s = 600", "duration_s = 2");
    assert!(
        text.contains("pump = \"syringe-pump\"\ntolerance_g = 0.05"),
        "the example changed shape"
    );
    ("test-suspension.toml".into(), text.into_bytes())
}

/// The test recipe warmed and kept warm before the mix (`test-heated-suspension`): a heat
/// phase `warm` to 28 °C (policy repeat) and a hold `keep-warm` at 27–29 °C for a minute
/// (policy qa-decision). 28 °C keeps the heating short; the rig's controller (PI) settles at any
/// setpoint, so this is no longer a limit (the folate example heats to 40 °C in
/// `tests/examples.rs`).
pub fn heated_recipe() -> (String, Vec<u8>) {
    let (_, text) = test_recipe();
    let text = String::from_utf8(text)
        .unwrap()
        .replace("id = \"test-suspension\"", "id = \"test-heated-suspension\"")
        .replace(
            "[[equipment]]\nkind = \"mixer\"",
            "[[equipment]]\nkind = \"heater\"\nmin_c = 20\nmax_c = 60\n\n[[equipment]]\nkind = \"mixer\"",
        )
        .replace(
            "[[unit_procedure.operation.phase]]\nid = \"mix\"",
            "[[unit_procedure.operation.phase]]\nid = \"warm\"\nkind = \"heat\"\ntarget_c = 28\n\
             ramp_c_per_min = 3\nresume = \"repeat\"\n\n\
             [[unit_procedure.operation.phase]]\nid = \"keep-warm\"\nkind = \"hold\"\nmin_c = 27\n\
             max_c = 29\nduration_s = 60\nresume = \"qa-decision\"\n\n\
             [[unit_procedure.operation.phase]]\nid = \"mix\"",
        );
    assert!(text.contains("id = \"keep-warm\""), "the example changed shape");
    ("test-heated-suspension.toml".into(), text.into_bytes())
}

fn days(n: i64) -> Timestamp {
    Timestamp::now().checked_add(SignedDuration::from_hours(24 * n)).unwrap()
}

/// A manufacturer's signed repository with the test recipe; returns (repo, root.json).
pub async fn repository(dir: &Path) -> (PathBuf, Vec<u8>) {
    repository_with(dir, &[test_recipe()]).await
}

/// A manufacturer's signed repository with `recipes` (file name, contents); returns (repo,
/// root.json).
pub async fn repository_with(dir: &Path, recipes: &[(String, Vec<u8>)]) -> (PathBuf, Vec<u8>) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let mut specs = Vec::new();
    for role in [RoleType::Root, RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp] {
        let path = keys.join(format!("{role}.pk8"));
        publish::generate_key(&path).unwrap();
        specs.push(RoleSpec { role, keys: vec![path], threshold: 1 });
    }
    let root = publish::create_root(&specs, days(365), &[keys.join("root.pk8")]).await.unwrap();
    let root_path = keys.join("root.json");
    std::fs::write(&root_path, &root).unwrap();
    let key_files: Vec<PathBuf> = specs.iter().flat_map(|s| s.keys.clone()).collect();
    let expiries = Expiries { targets: days(30), snapshot: days(7), timestamp: days(2) };
    let repo = dir.join("repo");
    publish::publish(&repo, Some(&root_path), &key_files, recipes, expiries, &mut |_| {})
        .await
        .unwrap();
    (repo, root)
}

/// A real service on the simulated unit, as the API tests and the HMI's flow test need it.
// Fields drop in order: the service (and its TPM context) before the swtpm.
pub struct Appliance {
    pub svc: Arc<Service>,
    pub records: Arc<Mutex<RecordStore>>,
    /// The manufacturer's signed repository with the test recipe.
    pub repo: PathBuf,
    /// Where exports go.
    pub exports: PathBuf,
    /// What a service needs again when it is restarted over the same records and unit.
    again: Again,
    /// The simulated unit.
    pub rig: HilRig,
    _tpm: Rig,
    _dir: TempDir,
}

struct Again {
    root: Vec<u8>,
    recipes: PathBuf,
    devices: Devices,
    live: LiveTx,
    feed: Feed,
    instruments: Instruments,
}

impl Appliance {
    /// A new service over the same records and unit, as after a restart of applianced: the
    /// old one's sessions and memory are gone, its record is not.
    pub fn restart_service(&mut self) {
        let a = &self.again;
        let intake = Intake::new(
            a.root.clone(),
            a.recipes.clone(),
            "galen-cu1",
            Version::parse("0.1.0").unwrap(),
        )
        .unwrap();
        let config = Config {
            site: DEVICE.into(),
            instruments: a.instruments,
            speed: 1.0,
            stick: StickAccess::Directory(self.exports.clone()),
        };
        self.svc = Arc::new(
            Service::new(
                self.records.clone(),
                intake,
                config,
                Arc::new(SystemClock),
                a.devices.clone(),
                a.live.clone(),
                a.feed.clone(),
                tokio::runtime::Handle::current(),
            )
            .unwrap(),
        );
    }
}

/// Commissions a store on a private swtpm with `people` added, starts the rig (analytical
/// balance) and the device actors, and builds the service over a fresh signed repository.
pub async fn appliance(people: &[(&'static str, &'static str, Role, &'static str)]) -> Appliance {
    let tpm = Rig::new();
    let mut store = tpm.commission();
    let mut admin = store.login("admin", ADMIN_PIN, at(1)).unwrap();
    for &(username, full_name, role, pin) in people {
        let user = NewUser { username, full_name, role, pin };
        store.add_user(&mut admin, &user, "test staff", at(2)).unwrap();
    }
    let records = Arc::new(Mutex::new(store));
    let dir = tempfile::tempdir().unwrap();
    let (repo, root) = repository(dir.path()).await;
    let plant = PlantConfig { balance: BalanceConfig::analytical(), ..PlantConfig::default() };
    let rig = HilRig::start(RigConfig { plant, ..RigConfig::default() }, &dir.path().join("rig"))
        .unwrap();
    let intake = Intake::new(
        root.clone(),
        dir.path().join("recipes"),
        "galen-cu1",
        Version::parse("0.1.0").unwrap(),
    )
    .unwrap();
    let (observed_tx, observed) = tokio::sync::mpsc::channel(256);
    let devices = start_devices(rig.unit(), &observed_tx).unwrap();
    let live = Arc::new(tokio::sync::watch::channel(Live::default()).0);
    let feed = Feed::default();
    tokio::spawn(distribute(observed, live.clone(), feed.clone()));
    let exports = dir.path().join("exports");
    let config = Config {
        site: DEVICE.into(),
        instruments: instruments(rig.unit()),
        speed: 1.0,
        stick: StickAccess::Directory(exports.clone()),
    };
    let again = Again {
        root,
        recipes: dir.path().join("recipes"),
        devices: devices.clone(),
        live: live.clone(),
        feed: feed.clone(),
        instruments: config.instruments,
    };
    let svc = Arc::new(
        Service::new(
            records.clone(),
            intake,
            config,
            Arc::new(SystemClock),
            devices,
            live,
            feed,
            tokio::runtime::Handle::current(),
        )
        .unwrap(),
    );
    Appliance { svc, records, repo, exports, again, rig, _tpm: tpm, _dir: dir }
}
