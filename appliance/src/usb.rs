//! USB sticks through udisks2 over D-Bus: find the one stick, mount it safely, write an export
//! onto it and power it off so it is safe to remove, or mount it read-only to take in a lab
//! report or a recipe update.
//!
//! udisks2 does the privileged work (mounting, under a polkit rule that lets `applianced` do it
//! without a prompt); we only ever mount with `noexec,nosuid,nodev`. The proxies are our own,
//! a few dozen lines, rather than the `udisks2` crate (LGPL, and on zbus 6).
//!
//! A stick is a filesystem whose block device belongs to a drive that udisks2 reports as
//! removable and connected over USB. Exactly one must be present: with two, which one the
//! inspector meant is a guess, and a guess is not good enough for records.

use std::collections::HashMap;
use std::path::PathBuf;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, proxy};

use crate::export::{self, ExportError, MountedDir};

/// The real udisks2 service name.
pub const UDISKS2: &str = "org.freedesktop.UDisks2";
const MANAGER_PATH: &str = "/org/freedesktop/UDisks2";
const FILESYSTEM: &str = "org.freedesktop.UDisks2.Filesystem";
const BLOCK: &str = "org.freedesktop.UDisks2.Block";
const DRIVE: &str = "org.freedesktop.UDisks2.Drive";
/// Filesystems an inspector's stick may carry.
const STICK_FILESYSTEMS: &[&str] = &["vfat", "exfat"];
/// Mount options: never run or trust anything from a stick.
pub const MOUNT_OPTIONS: &str = "noexec,nosuid,nodev";
/// Mount options to take something in: nothing on the stick is changed, not even access times.
pub const READ_ONLY_MOUNT_OPTIONS: &str = "ro,noexec,nosuid,nodev";

#[proxy(interface = "org.freedesktop.UDisks2.Filesystem")]
trait Filesystem {
    fn mount(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<String>;
    fn unmount(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
}

#[proxy(interface = "org.freedesktop.UDisks2.Drive")]
trait Drive {
    fn power_off(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
}

/// A stick as udisks2 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stick {
    pub block: OwnedObjectPath,
    pub drive: OwnedObjectPath,
    pub label: String,
    pub filesystem: String,
    pub read_only: bool,
    pub size: u64,
}

/// Why a stick could not be used. Messages are for the person at the appliance.
#[derive(Debug, thiserror::Error)]
pub enum UsbError {
    #[error("no USB stick found; insert one formatted FAT or exFAT")]
    NoStick,
    #[error("{0} USB sticks are inserted; remove all but one")]
    SeveralSticks(usize),
    #[error("the stick is write-protected; slide its lock switch or use another stick")]
    ReadOnly,
    #[error(
        "the appliance may not mount sticks (udisks2 refused: {0}); the polkit rule is missing"
    )]
    NotAuthorized(String),
    #[error("the stick could not be mounted: {0}")]
    Mount(String),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(
        "the export is complete, but the stick could not be unmounted ({0}); wait, then remove it"
    )]
    Unmount(String),
    #[error("udisks2 is not reachable over D-Bus: {0}")]
    Bus(String),
}

/// udisks2 on a D-Bus connection.
#[derive(Debug, Clone)]
pub struct Udisks {
    conn: Connection,
    service: String,
}

/// What happened to the stick after a successful export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub label: String,
    pub folder: String,
    /// True once udisks2 powered the drive off: the person can pull it.
    pub safe_to_remove: bool,
}

impl Udisks {
    /// `service` is [`UDISKS2`] on the appliance; tests serve a stand-in under another name.
    pub fn new(conn: Connection, service: &str) -> Self {
        Self { conn, service: service.to_owned() }
    }

    /// Every inserted stick.
    pub async fn sticks(&self) -> Result<Vec<Stick>, UsbError> {
        let manager = zbus::fdo::ObjectManagerProxy::builder(&self.conn)
            .destination(self.service.clone())
            .and_then(|b| b.path(MANAGER_PATH))
            .map_err(bus)?
            .build()
            .await
            .map_err(bus)?;
        let objects = manager.get_managed_objects().await.map_err(bus)?;
        let prop = |path: &OwnedObjectPath, iface: &str, name: &str| -> Option<OwnedValue> {
            let ifaces = objects.get(path)?;
            let (_, props) = ifaces.iter().find(|(n, _)| n.as_str() == iface)?;
            props.get(name).and_then(|v| v.try_clone().ok())
        };
        let mut sticks = Vec::new();
        for (path, ifaces) in &objects {
            let has = |iface: &str| ifaces.keys().any(|n| n.as_str() == iface);
            if !has(FILESYSTEM) || !has(BLOCK) {
                continue;
            }
            let Some(drive) =
                prop(path, BLOCK, "Drive").and_then(|v| OwnedObjectPath::try_from(v).ok())
            else {
                continue;
            };
            let removable = prop(&drive, DRIVE, "Removable").and_then(|v| bool::try_from(v).ok());
            let bus_name =
                prop(&drive, DRIVE, "ConnectionBus").and_then(|v| String::try_from(v).ok());
            let filesystem = prop(path, BLOCK, "IdType").and_then(|v| String::try_from(v).ok());
            let usable = removable == Some(true)
                && bus_name.as_deref() == Some("usb")
                && filesystem.as_deref().is_some_and(|f| STICK_FILESYSTEMS.contains(&f));
            if !usable {
                continue;
            }
            sticks.push(Stick {
                block: path.clone(),
                drive,
                label: prop(path, BLOCK, "IdLabel")
                    .and_then(|v| String::try_from(v).ok())
                    .unwrap_or_default(),
                filesystem: filesystem.unwrap_or_default(),
                read_only: prop(path, BLOCK, "ReadOnly")
                    .and_then(|v| bool::try_from(v).ok())
                    .unwrap_or(false),
                size: prop(path, BLOCK, "Size").and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
            });
        }
        sticks.sort_by(|a, b| a.block.as_str().cmp(b.block.as_str()));
        Ok(sticks)
    }

    /// The one inserted stick.
    pub async fn the_stick(&self) -> Result<Stick, UsbError> {
        let mut sticks = self.sticks().await?;
        match sticks.len() {
            0 => Err(UsbError::NoStick),
            1 => Ok(sticks.remove(0)),
            n => Err(UsbError::SeveralSticks(n)),
        }
    }

    /// Mounts the stick, writes the bundle as `folder`, unmounts it and powers it off.
    /// The stick is unmounted even when writing failed, so it never stays mounted.
    pub async fn write_export(
        &self,
        stick: &Stick,
        folder: &str,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Written, UsbError> {
        if stick.read_only {
            return Err(UsbError::ReadOnly);
        }
        let mount_point = self.mount(stick, MOUNT_OPTIONS).await?;
        let name = folder.to_owned();
        let written = tokio::task::spawn_blocking(move || {
            export::write_bundle(&mut MountedDir::new(mount_point), &name, &files)
        })
        .await
        .map_err(|e| UsbError::Mount(format!("the writer stopped: {e}")))?;
        // Every file handle is closed by now: udisks2 refuses to unmount a busy filesystem.
        let unmounted = self.unmount(stick).await;
        written?;
        unmounted?;
        let safe_to_remove = self.power_off(stick).await;
        Ok(Written { label: stick.label.clone(), folder: folder.to_owned(), safe_to_remove })
    }

    /// Mounts the stick read-only, to take something in; returns where. Whoever mounts it
    /// unmounts it with [`Udisks::unmount`] (without powering it off: the person may want to
    /// take in more from it).
    pub async fn mount_read_only(&self, stick: &Stick) -> Result<PathBuf, UsbError> {
        self.mount(stick, READ_ONLY_MOUNT_OPTIONS).await
    }

    async fn filesystem(&self, stick: &Stick) -> Result<FilesystemProxy<'_>, UsbError> {
        FilesystemProxy::builder(&self.conn)
            .destination(self.service.clone())
            .and_then(|b| b.path(stick.block.clone()))
            .map_err(bus)?
            .build()
            .await
            .map_err(bus)
    }

    async fn mount(&self, stick: &Stick, options: &str) -> Result<PathBuf, UsbError> {
        let options = HashMap::from([
            ("options", Value::from(options)),
            ("auth.no_user_interaction", Value::from(true)),
        ]);
        let fs = self.filesystem(stick).await?;
        Ok(PathBuf::from(fs.mount(options).await.map_err(mount_error)?))
    }

    pub async fn unmount(&self, stick: &Stick) -> Result<(), UsbError> {
        let fs = self.filesystem(stick).await?;
        fs.unmount(no_interaction()).await.map_err(|e| UsbError::Unmount(dbus_message(&e)))
    }

    /// Whether udisks2 powered the drive off, so that the person can pull it.
    async fn power_off(&self, stick: &Stick) -> bool {
        let result = async {
            let drive = DriveProxy::builder(&self.conn)
                .destination(self.service.clone())
                .and_then(|b| b.path(stick.drive.clone()))
                .map_err(bus)?
                .build()
                .await
                .map_err(bus)?;
            drive.power_off(no_interaction()).await.map_err(|e| bus(dbus_message(&e)))
        }
        .await;
        // Some USB bridges cannot power off; unmounted is already safe to pull.
        result
            .inspect_err(|e| tracing::warn!(drive = %stick.drive, "power off failed: {e}"))
            .is_ok()
    }
}

fn no_interaction() -> HashMap<&'static str, Value<'static>> {
    HashMap::from([("auth.no_user_interaction", Value::from(true))])
}

fn bus(e: impl std::fmt::Display) -> UsbError {
    UsbError::Bus(e.to_string())
}

fn dbus_message(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, detail, _) => {
            format!(
                "{}{}",
                name.as_str(),
                detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
            )
        }
        other => other.to_string(),
    }
}

fn mount_error(e: zbus::Error) -> UsbError {
    match &e {
        zbus::Error::MethodError(name, _, _)
            if name.as_str().ends_with(".NotAuthorized")
                || name.as_str().ends_with(".NotAuthorizedCanObtain") =>
        {
            UsbError::NotAuthorized(dbus_message(&e))
        }
        _ => UsbError::Mount(dbus_message(&e)),
    }
}
