//! The udisks2 client against a stand-in udisks2 served on the private dbus-daemon that
//! `cargo xtask test` starts (`GALEN_TEST_DBUS_ADDRESS`). The bus, the messages and our proxies
//! are real; the service is not, because udisks2 needs udev and block devices. The real
//! udisks2 path (a QEMU USB stick, polkit, vfat) runs in the image's boot test.
//!
//! Each test serves its stand-in under its own name, so tests share the bus in parallel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use galen_appliance::usb::{MOUNT_OPTIONS, READ_ONLY_MOUNT_OPTIONS, Udisks, UsbError};
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{connection, fdo, interface};

type Calls = Arc<Mutex<Vec<String>>>;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.UDisks2.Error")]
enum UdisksError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NotAuthorized(String),
}

struct Block {
    drive: OwnedObjectPath,
    fs: String,
    label: String,
    read_only: bool,
}

#[interface(name = "org.freedesktop.UDisks2.Block")]
impl Block {
    #[zbus(property)]
    fn drive(&self) -> OwnedObjectPath {
        self.drive.clone()
    }
    #[zbus(property)]
    fn id_type(&self) -> String {
        self.fs.clone()
    }
    #[zbus(property)]
    fn id_label(&self) -> String {
        self.label.clone()
    }
    #[zbus(property)]
    fn read_only(&self) -> bool {
        self.read_only
    }
    #[zbus(property)]
    fn size(&self) -> u64 {
        8 << 30
    }
}

struct Filesystem {
    mount_point: PathBuf,
    calls: Calls,
    refuse: bool,
}

fn describe(options: &HashMap<String, OwnedValue>) -> String {
    let mut keys: Vec<_> = options.iter().map(|(k, v)| format!("{k}={:?}", &**v)).collect();
    keys.sort();
    keys.join(",")
}

#[interface(name = "org.freedesktop.UDisks2.Filesystem")]
impl Filesystem {
    fn mount(&self, options: HashMap<String, OwnedValue>) -> Result<String, UdisksError> {
        self.calls.lock().unwrap().push(format!("Mount({})", describe(&options)));
        if self.refuse {
            return Err(UdisksError::NotAuthorized("Not authorized to perform operation".into()));
        }
        Ok(self.mount_point.display().to_string())
    }
    fn unmount(&self, options: HashMap<String, OwnedValue>) {
        self.calls.lock().unwrap().push(format!("Unmount({})", describe(&options)));
    }
}

struct Drive {
    removable: bool,
    bus: String,
    calls: Calls,
}

#[interface(name = "org.freedesktop.UDisks2.Drive")]
impl Drive {
    #[zbus(property)]
    fn removable(&self) -> bool {
        self.removable
    }
    #[zbus(property)]
    fn connection_bus(&self) -> String {
        self.bus.clone()
    }
    fn power_off(&self, _options: HashMap<String, OwnedValue>) {
        self.calls.lock().unwrap().push("PowerOff".into());
    }
}

struct Device {
    name: &'static str,
    removable: bool,
    bus: &'static str,
    fs: &'static str,
    read_only: bool,
    refuse_mount: bool,
}

const STICK: Device = Device {
    name: "sdb",
    removable: true,
    bus: "usb",
    fs: "vfat",
    read_only: false,
    refuse_mount: false,
};
const INTERNAL: Device = Device {
    name: "vda",
    removable: false,
    bus: "",
    fs: "ext4",
    read_only: false,
    refuse_mount: false,
};

struct StandIn {
    _server: zbus::Connection,
    client: Udisks,
    calls: Calls,
    mount_point: tempfile::TempDir,
}

fn address() -> String {
    std::env::var("GALEN_TEST_DBUS_ADDRESS")
        .expect("GALEN_TEST_DBUS_ADDRESS is unset: run the tests with `cargo xtask test`, which starts a private bus")
}

async fn stand_in(service: &'static str, devices: &[Device]) -> StandIn {
    let calls: Calls = Arc::default();
    let mount_point = tempfile::tempdir().unwrap();
    let mut builder = connection::Builder::address(address().as_str())
        .unwrap()
        .name(service)
        .unwrap()
        .serve_at("/org/freedesktop/UDisks2", fdo::ObjectManager)
        .unwrap();
    for d in devices {
        let drive =
            OwnedObjectPath::try_from(format!("/org/freedesktop/UDisks2/drives/{}", d.name))
                .unwrap();
        let block = OwnedObjectPath::try_from(format!(
            "/org/freedesktop/UDisks2/block_devices/{}1",
            d.name
        ))
        .unwrap();
        builder = builder
            .serve_at(
                drive.clone(),
                Drive { removable: d.removable, bus: d.bus.into(), calls: calls.clone() },
            )
            .unwrap()
            .serve_at(
                block.clone(),
                Block {
                    drive: drive.clone(),
                    fs: d.fs.into(),
                    label: "INSPECT".into(),
                    read_only: d.read_only,
                },
            )
            .unwrap()
            .serve_at(
                block,
                Filesystem {
                    mount_point: mount_point.path().to_owned(),
                    calls: calls.clone(),
                    refuse: d.refuse_mount,
                },
            )
            .unwrap();
    }
    let server = builder.build().await.unwrap();
    let conn = connection::Builder::address(address().as_str()).unwrap().build().await.unwrap();
    StandIn { _server: server, client: Udisks::new(conn, service), calls, mount_point }
}

fn files() -> Vec<(String, Vec<u8>)> {
    vec![("VERIFY.txt".into(), b"how to verify\n".to_vec()), ("record.json".into(), b"{}".to_vec())]
}

#[tokio::test]
async fn the_stick_is_mounted_safely_written_unmounted_and_powered_off() {
    let s = stand_in("org.galen.test.UDisks2.happy", &[INTERNAL, STICK]).await;
    let stick = s.client.the_stick().await.unwrap();
    assert_eq!(stick.block.as_str(), "/org/freedesktop/UDisks2/block_devices/sdb1");
    assert_eq!(stick.label, "INSPECT");
    let written = s.client.write_export(&stick, "GALEN-EXPORT-B-1", files()).await.unwrap();
    assert!(written.safe_to_remove);
    let bundle = s.mount_point.path().join("GALEN-EXPORT-B-1");
    assert_eq!(std::fs::read(bundle.join("VERIFY.txt")).unwrap(), b"how to verify\n");
    let calls = s.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].starts_with("Mount(") && calls[0].contains(MOUNT_OPTIONS), "{calls:?}");
    assert!(calls[0].contains("auth.no_user_interaction=Bool(true)"), "{calls:?}");
    assert!(calls[1].starts_with("Unmount("), "{calls:?}");
    assert_eq!(calls[2], "PowerOff");
}

#[tokio::test]
async fn no_stick_and_two_sticks_are_both_refused_plainly() {
    let none = stand_in("org.galen.test.UDisks2.none", &[INTERNAL]).await;
    let e = none.client.the_stick().await.unwrap_err();
    assert_eq!(e.to_string(), "no USB stick found; insert one formatted FAT or exFAT");
    let two =
        stand_in("org.galen.test.UDisks2.two", &[STICK, Device { name: "sdc", ..STICK }]).await;
    let e = two.client.the_stick().await.unwrap_err();
    assert!(matches!(e, UsbError::SeveralSticks(2)), "{e}");
}

#[tokio::test]
async fn a_write_protected_stick_is_never_mounted() {
    let s = stand_in("org.galen.test.UDisks2.ro", &[Device { read_only: true, ..STICK }]).await;
    let stick = s.client.the_stick().await.unwrap();
    let e = s.client.write_export(&stick, "GALEN-EXPORT-B-1", files()).await.unwrap_err();
    assert!(matches!(e, UsbError::ReadOnly), "{e}");
    assert!(s.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_polkit_rule_is_named() {
    let s =
        stand_in("org.galen.test.UDisks2.polkit", &[Device { refuse_mount: true, ..STICK }]).await;
    let stick = s.client.the_stick().await.unwrap();
    let e = s.client.write_export(&stick, "GALEN-EXPORT-B-1", files()).await.unwrap_err();
    assert!(matches!(e, UsbError::NotAuthorized(_)), "{e}");
    assert!(e.to_string().contains("polkit rule is missing"), "{e}");
}

#[tokio::test]
async fn a_failed_write_still_unmounts_the_stick() {
    let s = stand_in("org.galen.test.UDisks2.exists", &[STICK]).await;
    std::fs::create_dir(s.mount_point.path().join("GALEN-EXPORT-B-1")).unwrap();
    let stick = s.client.the_stick().await.unwrap();
    let e = s.client.write_export(&stick, "GALEN-EXPORT-B-1", files()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "an export named GALEN-EXPORT-B-1 is already on the stick; nothing was overwritten"
    );
    let calls = s.calls.lock().unwrap().clone();
    assert!(calls.iter().any(|c| c.starts_with("Unmount(")), "{calls:?}");
    assert!(!calls.contains(&"PowerOff".to_owned()), "{calls:?}");
}

#[tokio::test]
async fn a_stick_is_read_mounted_read_only_also_when_write_protected_and_stays_powered() {
    let s = stand_in("org.galen.test.UDisks2.read", &[Device { read_only: true, ..STICK }]).await;
    let stick = s.client.the_stick().await.unwrap();
    let top = s.client.mount_read_only(&stick).await.unwrap();
    assert_eq!(top, s.mount_point.path());
    s.client.unmount(&stick).await.unwrap();
    let calls = s.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "mounted and unmounted, never powered off: {calls:?}");
    assert!(calls[0].contains(&format!("\"{READ_ONLY_MOUNT_OPTIONS}\"")), "{calls:?}");
    assert!(calls[0].contains("auth.no_user_interaction=Bool(true)"), "{calls:?}");
    assert!(calls[1].starts_with("Unmount("), "{calls:?}");
}
