//! Publishing and intake with real TUF metadata: from a directory, over HTTPS on loopback with
//! a test CA pinned, and every refusal the issue lists (tampering, expiry, rollback, unknown
//! keys, threshold, unit model, appliance version).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use galen_recipes::model::Version;
use galen_recipes::tuf::intake::{Intake, IntakeError, IntakeReport, RefusalReason};
use galen_recipes::tuf::publish::{self, Expiries, RoleSpec};
use galen_recipes::tuf::transport::HttpsTransport;
use galen_recipes::tuf::{ROLES, key_file};
use jiff::{SignedDuration, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tough::schema::RoleType;

const MODEL: &str = "galen-cu1";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example_files() -> Vec<(String, Vec<u8>)> {
    ["azathioprine-oral-suspension.toml", "clopidogrel-oral-suspension.toml", "folate-mthfr.toml"]
        .iter()
        .map(|n| (n.to_string(), std::fs::read(examples().join(n)).unwrap()))
        .collect()
}

fn days(n: i64) -> Timestamp {
    Timestamp::now().checked_add(SignedDuration::from_hours(24 * n)).unwrap()
}

fn expiries() -> Expiries {
    Expiries { targets: days(30), snapshot: days(7), timestamp: days(2) }
}

fn version(s: &str) -> Version {
    Version::parse(s).unwrap()
}

/// A manufacturer: keys, a root and a repository directory.
struct Maker {
    dir: tempfile::TempDir,
    root: Vec<u8>,
}

impl Maker {
    /// One key per role, threshold 1, unless `extra_timestamp_key` asks for a 2-of-2 timestamp.
    async fn new(extra_timestamp_key: bool) -> Maker {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        let mut specs = Vec::new();
        for role in ROLES {
            let path = keys.join(key_file(role));
            publish::generate_key(&path).unwrap();
            let mut spec = RoleSpec { role, keys: vec![path], threshold: 1 };
            if role == RoleType::Timestamp && extra_timestamp_key {
                let second = keys.join("timestamp-2.pk8");
                publish::generate_key(&second).unwrap();
                spec.keys.push(second);
                spec.threshold = 2;
            }
            specs.push(spec);
        }
        let root = publish::create_root(&specs, days(365), &[keys.join("root.pk8")]).await.unwrap();
        std::fs::write(keys.join("root.json"), &root).unwrap();
        Maker { dir, root }
    }

    fn keys(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join("keys"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pk8"))
            .collect()
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    async fn publish(&self, recipes: &[(String, Vec<u8>)], expiries: Expiries) {
        let root = self.dir.path().join("keys/root.json");
        publish::publish(&self.repo(), Some(&root), &self.keys(), recipes, expiries, &mut |_| {})
            .await
            .unwrap();
    }
}

/// A unit with fresh state.
fn unit(trusted_root: &[u8], state: &Path) -> Intake {
    Intake::new(trusted_root.to_vec(), state.to_owned(), MODEL, version("0.1.0")).unwrap()
}

fn ids(report: &IntakeReport) -> Vec<String> {
    report.installed.iter().map(|i| format!("{} r{}", i.recipe.id, i.recipe.revision)).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn with_revision(file: &(String, Vec<u8>), revision: u32) -> (String, Vec<u8>) {
    let text = String::from_utf8(file.1.clone()).unwrap().replacen(
        "revision = 1\n",
        &format!("revision = {revision}\n"),
        1,
    );
    (file.0.clone(), text.into_bytes())
}

#[tokio::test]
async fn a_usb_directory_installs_once_and_then_is_unchanged() {
    let maker = Maker::new(false).await;
    maker.publish(&example_files(), expiries()).await;
    let state = tempfile::tempdir().unwrap();
    let intake = unit(&maker.root, state.path());
    let report = intake.from_directory(&maker.repo(), Timestamp::now()).await.unwrap();
    assert_eq!(
        ids(&report),
        ["azathioprine-oral-suspension r1", "clopidogrel-oral-suspension r1", "folate-mthfr r1"]
    );
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let installed = &report.installed[0];
    let on_disk = std::fs::read(&installed.path).unwrap();
    assert_eq!(on_disk, example_files()[0].1, "the installed file is the published file");

    let again = intake.from_directory(&maker.repo(), Timestamp::now()).await.unwrap();
    assert!(again.installed.is_empty());
    assert_eq!(again.unchanged.len(), 3);
    assert_eq!(intake.installed().unwrap().len(), 3);
    let recipe = intake.load_installed("folate-mthfr").unwrap();
    assert_eq!(recipe.revision, 1);
    std::fs::write(intake.recipe_path("folate-mthfr", 1), b"# changed on disk\n").unwrap();
    let err = intake.load_installed("folate-mthfr").unwrap_err();
    assert!(matches!(err, IntakeError::Tampered { .. }), "{err}");
}

#[tokio::test]
async fn units_refuse_recipes_for_other_models_and_newer_software() {
    let maker = Maker::new(false).await;
    maker.publish(&example_files(), expiries()).await;
    let state = tempfile::tempdir().unwrap();
    let other =
        Intake::new(maker.root.clone(), state.path().to_owned(), "galen-cu2", version("9.0.0"))
            .unwrap();
    let report = other.from_directory(&maker.repo(), Timestamp::now()).await.unwrap();
    assert!(report.installed.is_empty());
    assert_eq!(report.refused.len(), 3);
    assert_eq!(
        report.refused[0].reason.to_string(),
        "made for unit models galen-cu1, this unit is galen-cu2"
    );

    let state = tempfile::tempdir().unwrap();
    let old =
        Intake::new(maker.root.clone(), state.path().to_owned(), MODEL, version("0.0.9")).unwrap();
    let report = old.from_directory(&maker.repo(), Timestamp::now()).await.unwrap();
    assert_eq!(report.refused.len(), 3);
    assert_eq!(
        report.refused[0].reason.to_string(),
        "needs appliance version 0.1.0, this unit runs 0.0.9"
    );
}

#[tokio::test]
async fn metadata_rollback_and_revision_rollback_are_refused() {
    let maker = Maker::new(false).await;
    let files = example_files();
    maker.publish(&files[..1], expiries()).await;
    let v1 = tempfile::tempdir().unwrap();
    copy_dir(&maker.repo(), v1.path());
    maker.publish(&[with_revision(&files[0], 2)], expiries()).await;

    let state = tempfile::tempdir().unwrap();
    let intake = unit(&maker.root, state.path());
    let report = intake.from_directory(&maker.repo(), Timestamp::now()).await.unwrap();
    assert_eq!(ids(&report), ["azathioprine-oral-suspension r2"]);
    let err = intake.from_directory(v1.path(), Timestamp::now()).await.unwrap_err();
    assert!(matches!(err, IntakeError::Rollback { .. }), "{err}");
    assert_eq!(err.to_string(), "rollback of timestamp metadata: have version 2, offered 1");

    // A second repository under the same keys, at higher metadata versions, offering revision 1.
    let other = tempfile::tempdir().unwrap();
    let root_file = maker.dir.path().join("keys/root.json");
    for batch in [&files[1..2], &files[2..3], &files[0..1]] {
        publish::publish(
            other.path(),
            Some(&root_file),
            &maker.keys(),
            batch,
            expiries(),
            &mut |_| {},
        )
        .await
        .unwrap();
    }
    // tough's own datastore would also catch this repository's older snapshot; clear it so
    // that the recipe-revision check is what answers.
    std::fs::remove_dir_all(state.path().join("tuf")).unwrap();
    std::fs::create_dir(state.path().join("tuf")).unwrap();
    let report = intake.from_directory(other.path(), Timestamp::now()).await.unwrap();
    let aza =
        report.refused.iter().find(|r| r.target == "azathioprine-oral-suspension.toml").unwrap();
    assert_eq!(aza.reason, RefusalReason::RevisionRollback { installed: 2, offered: 1 });
    assert_eq!(aza.reason.to_string(), "revision rollback: revision 2 is installed, offered 1");
}

/// Losing tough's datastore (`state/tuf`) does not reopen a metadata rollback: our own
/// `state.json` versions refuse it.
#[tokio::test]
async fn metadata_rollback_is_refused_even_without_toughs_datastore() {
    let maker = Maker::new(false).await;
    let files = example_files();
    maker.publish(&files[..1], expiries()).await;
    let v1 = tempfile::tempdir().unwrap();
    copy_dir(&maker.repo(), v1.path());
    maker.publish(&files[..2], expiries()).await;

    let state = tempfile::tempdir().unwrap();
    let intake = unit(&maker.root, state.path());
    let report = intake.from_directory(&maker.repo(), Timestamp::now()).await.unwrap();
    assert_eq!(report.versions.timestamp, 2);
    let tuf = state.path().join("tuf");
    std::fs::remove_dir_all(&tuf).unwrap();
    std::fs::create_dir(&tuf).unwrap();
    let err = intake.from_directory(v1.path(), Timestamp::now()).await.unwrap_err();
    assert!(matches!(err, IntakeError::Rollback { .. }), "{err}");
    assert_eq!(err.to_string(), "rollback of targets metadata: have version 2, offered 1");
    // Nothing was installed or recorded from the older repository.
    assert_eq!(intake.installed().unwrap().len(), 2);
}

/// A recipe dropped from the signed targets is withdrawn: reported, persisted, not loadable,
/// until the manufacturer lists it again.
#[tokio::test]
async fn a_recipe_removed_from_targets_is_withdrawn() {
    let maker = Maker::new(false).await;
    let files = example_files();
    maker.publish(&files, expiries()).await;
    let state = tempfile::tempdir().unwrap();
    let intake = unit(&maker.root, state.path());
    let report = intake.from_directory(&maker.repo(), Timestamp::now()).await.unwrap();
    assert_eq!(report.installed.len(), 3);
    assert!(report.withdrawn.is_empty());

    // The same keys, a repository without folate-mthfr, at higher metadata versions.
    let other = tempfile::tempdir().unwrap();
    let root_file = maker.dir.path().join("keys/root.json");
    let publish_other = |batch: Vec<(String, Vec<u8>)>| {
        let (path, keys, root_file) = (other.path().to_owned(), maker.keys(), root_file.clone());
        async move {
            publish::publish(&path, Some(&root_file), &keys, &batch, expiries(), &mut |_| {})
                .await
                .unwrap();
        }
    };
    publish_other(files[..2].to_vec()).await;
    publish_other(files[..2].to_vec()).await;
    let report = intake.from_directory(other.path(), Timestamp::now()).await.unwrap();
    assert_eq!(report.withdrawn, ["folate-mthfr"]);
    assert_eq!(report.unchanged.len(), 2);
    let err = intake.load_installed("folate-mthfr").unwrap_err();
    assert!(matches!(&err, IntakeError::Withdrawn { id } if id == "folate-mthfr"), "{err}");
    assert_eq!(
        err.to_string(),
        "recipe folate-mthfr was withdrawn: the manufacturer's latest signed targets no longer list it"
    );
    intake.load_installed("azathioprine-oral-suspension").unwrap();
    // Persisted: a unit restarted on the same state still refuses it.
    let restarted = unit(&maker.root, state.path());
    assert!(matches!(restarted.load_installed("folate-mthfr"), Err(IntakeError::Withdrawn { .. })));

    // Listed again: loadable again.
    publish_other(files.clone()).await;
    let report = restarted.from_directory(other.path(), Timestamp::now()).await.unwrap();
    assert!(report.withdrawn.is_empty());
    assert_eq!(restarted.load_installed("folate-mthfr").unwrap().revision, 1);
}

#[tokio::test]
async fn expired_metadata_is_refused_by_tough_and_by_the_given_now() {
    let maker = Maker::new(false).await;
    maker.publish(&example_files(), expiries()).await;
    let state = tempfile::tempdir().unwrap();
    let err =
        unit(&maker.root, state.path()).from_directory(&maker.repo(), days(3)).await.unwrap_err();
    assert!(matches!(&err, IntakeError::Expired { role, .. } if role == "timestamp"), "{err}");

    let stale = Maker::new(false).await;
    let past = Timestamp::now().checked_sub(SignedDuration::from_hours(1)).unwrap();
    stale
        .publish(
            &example_files(),
            Expiries { targets: days(30), snapshot: days(7), timestamp: past },
        )
        .await;
    let state = tempfile::tempdir().unwrap();
    let err = unit(&stale.root, state.path())
        .from_directory(&stale.repo(), Timestamp::now())
        .await
        .unwrap_err();
    assert!(matches!(&err, IntakeError::Expired { role, .. } if role == "timestamp"), "{err}");
}

#[tokio::test]
async fn unknown_keys_and_an_unmet_threshold_are_refused() {
    let ours = Maker::new(false).await;
    let theirs = Maker::new(false).await;
    theirs.publish(&example_files(), expiries()).await;
    let state = tempfile::tempdir().unwrap();
    let err = unit(&ours.root, state.path())
        .from_directory(&theirs.repo(), Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "timestamp metadata is signed only by keys this unit does not trust"
    );

    let two = Maker::new(true).await;
    two.publish(&example_files(), expiries()).await;
    let state = tempfile::tempdir().unwrap();
    unit(&two.root, state.path()).from_directory(&two.repo(), Timestamp::now()).await.unwrap();
    let path = two.repo().join("metadata/timestamp.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["signatures"].as_array_mut().unwrap().pop();
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let state = tempfile::tempdir().unwrap();
    let err = unit(&two.root, state.path())
        .from_directory(&two.repo(), Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "timestamp metadata has 1 of the 2 signatures required");
}

#[tokio::test]
async fn a_rotated_root_is_followed_from_the_shipped_root() {
    let maker = Maker::new(false).await;
    maker.publish(&example_files()[..1], expiries()).await;
    let new_key = maker.dir.path().join("new-root.pk8");
    publish::generate_key(&new_key).unwrap();
    let old_key = maker.dir.path().join("keys/root.pk8");
    let spec = RoleSpec { role: RoleType::Root, keys: vec![new_key.clone()], threshold: 1 };
    let v = publish::rotate_root(
        &maker.repo(),
        &[spec],
        days(365),
        std::slice::from_ref(&old_key),
        &[new_key],
    )
    .await
    .unwrap();
    assert_eq!(v, 2);
    let state = tempfile::tempdir().unwrap();
    let report = unit(&maker.root, state.path())
        .from_directory(&maker.repo(), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(report.versions.root, 2);

    // A root signed only by the new key (no cross-signature) is not accepted.
    let bad = Maker::new(false).await;
    bad.publish(&example_files()[..1], expiries()).await;
    let k = bad.dir.path().join("k.pk8");
    publish::generate_key(&k).unwrap();
    let spec = RoleSpec { role: RoleType::Root, keys: vec![k.clone()], threshold: 1 };
    let err = publish::rotate_root(
        &bad.repo(),
        &[spec],
        days(365),
        std::slice::from_ref(&k),
        std::slice::from_ref(&k),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("both the old and the new root keys"), "{err}");
}

/// Every metadata file and target, 13 sampled byte positions each (evenly spaced, plus the last
/// byte; every byte would take minutes): all refused.
#[tokio::test]
async fn tampering_with_sampled_bytes_of_every_file_is_refused() {
    let maker = Maker::new(false).await;
    maker.publish(&example_files(), expiries()).await;
    let mut files: Vec<PathBuf> = Vec::new();
    for sub in ["metadata", "targets"] {
        for entry in std::fs::read_dir(maker.repo().join(sub)).unwrap() {
            let rel = PathBuf::from(sub).join(entry.unwrap().file_name());
            // 1.root.json is the root the unit ships with; it is never fetched from the repository.
            if rel != Path::new("metadata/1.root.json") {
                files.push(rel);
            }
        }
    }
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}");
    let mut cases = 0;
    for rel in &files {
        let len = std::fs::read(maker.repo().join(rel)).unwrap().len();
        let mut positions: Vec<usize> = (0..12).map(|i| i * len / 12).collect();
        positions.push(len - 1);
        positions.dedup();
        for pos in positions {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(&maker.repo(), copy.path());
            let path = copy.path().join(rel);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[pos] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            let state = tempfile::tempdir().unwrap();
            let result =
                unit(&maker.root, state.path()).from_directory(copy.path(), Timestamp::now()).await;
            let what = format!("{} byte {pos}", rel.display());
            if rel.starts_with("targets") {
                let report = result.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(report.installed.len(), 2, "{what}");
                assert!(
                    matches!(report.refused[0].reason, RefusalReason::Tampered(_)),
                    "{what}: {:?}",
                    report.refused
                );
            } else {
                let err = result.expect_err(&what);
                assert!(
                    matches!(
                        err,
                        IntakeError::Tampered { .. }
                            | IntakeError::UnknownKeys { .. }
                            | IntakeError::Threshold { .. }
                            | IntakeError::Rollback { .. }
                            | IntakeError::Expired { .. }
                    ),
                    "{what}: {err}"
                );
            }
            cases += 1;
        }
    }
    assert!(cases >= 60, "{cases}");
}

// ---- HTTPS on loopback ----------------------------------------------------------------------

struct TestCa {
    ca_der: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
}

fn test_ca() -> TestCa {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Galen test manufacturer CA");
    let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = server_params.signed_by(&server_key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
    TestCa { ca_der: ca.der().to_vec(), server: Arc::new(server) }
}

/// A static file server for `dir` on 127.0.0.1 with a port the OS picks; it stops with the
/// runtime at the end of the test.
async fn serve(dir: PathBuf, config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, dir) = (acceptor.clone(), dir.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut head = Vec::new();
                let mut buf = [0_u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split(' ').nth(1).unwrap_or("/").trim_start_matches('/').to_owned();
                let file =
                    (!path.contains("..")).then(|| std::fs::read(dir.join(&path)).ok()).flatten();
                let response = match file {
                    Some(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = tls.write_all(&response).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_with_the_manufacturer_ca_pinned() {
    let maker = Maker::new(false).await;
    maker.publish(&example_files(), expiries()).await;
    let ca = test_ca();
    let addr = serve(maker.repo(), ca.server.clone()).await;
    let base = url::Url::parse(&format!("https://localhost:{}/", addr.port())).unwrap();

    let state = tempfile::tempdir().unwrap();
    let intake = unit(&maker.root, state.path());
    let transport = HttpsTransport::new(&ca.ca_der, 1 << 20).unwrap();
    let report = intake.from_url(transport, &base, Timestamp::now()).await.unwrap();
    assert_eq!(report.installed.len(), 3);

    // Another CA (a public one, or an attacker's) is not trusted.
    let other = test_ca();
    let state = tempfile::tempdir().unwrap();
    let transport = HttpsTransport::new(&other.ca_der, 1 << 20).unwrap();
    let err = unit(&maker.root, state.path())
        .from_url(transport, &base, Timestamp::now())
        .await
        .unwrap_err();
    assert!(matches!(&err, IntakeError::Fetch(m) if m.contains("TLS")), "{err}");

    // A body larger than the transport's limit is refused before TUF sees it.
    let state = tempfile::tempdir().unwrap();
    let transport = HttpsTransport::new(&ca.ca_der, 64).unwrap();
    let err = unit(&maker.root, state.path())
        .from_url(transport, &base, Timestamp::now())
        .await
        .unwrap_err();
    assert!(matches!(&err, IntakeError::Fetch(m) if m.contains("above the limit 64")), "{err}");
}

/// `tests/fixtures/tuftool` was made by tuftool (commands in its README): a unit verifies it,
/// refuses its recipes for want of our `custom` metadata, and installs them once our publisher
/// has re-published them into the same repository with the same keys.
#[tokio::test]
async fn a_repository_made_by_tuftool_loads() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tuftool");
    let repo = tempfile::tempdir().unwrap();
    copy_dir(&fixture.join("repo"), repo.path());
    let root = std::fs::read(fixture.join("root.json")).unwrap();

    let state = tempfile::tempdir().unwrap();
    let report =
        unit(&root, state.path()).from_directory(repo.path(), Timestamp::now()).await.unwrap();
    assert_eq!(report.versions.timestamp, 1);
    assert!(report.installed.is_empty());
    let reasons: Vec<String> =
        report.refused.iter().map(|r| format!("{}: {}", r.target, r.reason)).collect();
    assert_eq!(
        reasons,
        [
            "azathioprine-oral-suspension.toml: custom metadata: missing field `recipe_id`",
            "folate-mthfr.toml: custom metadata: missing field `recipe_id`",
        ]
    );

    let keys: Vec<PathBuf> = ["targets.pk8", "snapshot.pk8", "timestamp.pem"]
        .iter()
        .map(|k| fixture.join("keys").join(k))
        .collect();
    publish::publish(repo.path(), None, &keys, &example_files(), expiries(), &mut |_| {})
        .await
        .unwrap();
    let report =
        unit(&root, state.path()).from_directory(repo.path(), Timestamp::now()).await.unwrap();
    assert_eq!(
        ids(&report),
        ["azathioprine-oral-suspension r1", "clopidogrel-oral-suspension r1", "folate-mthfr r1"]
    );
    assert_eq!(report.versions.timestamp, 2);
}

/// The tuftool fixture's metadata expires 2036-01-01 (see its README for how to regenerate it);
/// this fails a year ahead so that there is time to do so.
#[test]
fn the_tuftool_fixture_does_not_expire_within_a_year() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tuftool");
    let mut files = vec![fixture.join("root.json")];
    for entry in std::fs::read_dir(fixture.join("repo/metadata")).unwrap() {
        files.push(entry.unwrap().path());
    }
    assert_eq!(files.len(), 5, "{files:?}");
    for file in files {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let expires: Timestamp = doc["signed"]["expires"].as_str().unwrap().parse().unwrap();
        assert!(
            expires > days(365),
            "{} expires {expires}: regenerate tests/fixtures/tuftool (see its README)",
            file.display()
        );
    }
}
