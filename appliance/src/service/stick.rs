//! Taking things in from the USB stick: what is on it, a lab report for a new batch, a recipe
//! update for QA. The stick is mounted read-only for each call and unmounted before it returns,
//! so nothing stays mounted between a list and a choice, and a stick pulled in between is
//! simply not found again.

use std::path::Path;

use super::{Caller, Needs, Service, ServiceError, StickAccess};
use crate::records::users::Action;
use crate::stick::{self, Contents};
use crate::usb::UsbError;

/// A stick's name and what it offers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OnStick {
    /// The stick's filesystem label (a folder's name where a folder stands in for it).
    pub label: String,
    #[serde(flatten)]
    pub contents: Contents,
}

impl Service {
    /// What the stick offers: lab reports and recipe updates. Anyone logged in may look.
    pub fn stick_contents(&self, caller: &Caller) -> Result<OnStick, ServiceError> {
        self.authorize(caller, "Stick.Contents", Needs::Session)?;
        self.on_stick(|top, label| {
            Ok(OnStick { label: label.to_owned(), contents: stick::contents(top) })
        })
    }

    /// The bytes of a lab report the stick listed as `name`, for a new batch.
    pub fn read_lab_file(&self, caller: &Caller, name: &str) -> Result<Vec<u8>, ServiceError> {
        self.authorize(caller, "Stick.ReadLabFile", Needs::Permit(Action::RunBatch))?;
        self.on_stick(|top, _| Ok(stick::read_lab_file(top, name)?))
    }

    /// Verifies and installs the recipe update the stick listed as `folder` (`""`: its top).
    pub fn install_recipes_from_stick(
        &self,
        caller: &Caller,
        folder: &str,
    ) -> Result<Vec<String>, ServiceError> {
        let session =
            self.authorize(caller, "Stick.InstallRecipes", Needs::Permit(Action::ImportRecipes))?;
        self.on_stick(|top, label| {
            let dir = stick::recipe_update(top, folder)?;
            let source = match folder {
                "" => format!("USB stick {label}"),
                f => format!("USB stick {label}, folder {f}"),
            };
            self.install_from(&session, &dir, &source)
        })
    }

    /// Runs `take` on the stick's top folder and label, mounted read-only through udisks2 (or
    /// the folder standing in for it), and unmounts it afterwards whatever `take` returned.
    fn on_stick<T>(
        &self,
        take: impl FnOnce(&Path, &str) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        match &self.config.stick {
            StickAccess::Directory(dir) => {
                let label = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                take(dir, label)
            }
            StickAccess::Usb(udisks) => {
                let (stick, top) = self.runtime.block_on(async {
                    let stick = udisks.the_stick().await?;
                    let top = udisks.mount_read_only(&stick).await?;
                    Ok::<_, UsbError>((stick, top))
                })?;
                let taken = take(&top, &stick.label);
                if let Err(e) = self.runtime.block_on(udisks.unmount(&stick)) {
                    // Nothing was written: a stick left mounted read-only loses nothing if
                    // pulled, and the next mount of it is refused with a clear error.
                    tracing::warn!(block = %stick.block, "unmounting after reading: {e}");
                }
                taken
            }
        }
    }
}
