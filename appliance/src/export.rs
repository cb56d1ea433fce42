//! Writing an export bundle onto removable media, so that a full, read-only or pulled stick
//! gives a clear error and never leaves a bundle that looks complete.
//!
//! The protocol: check the free space first; write every file into a hidden staging folder
//! `.<name>.partial`, each file flushed to the medium; then rename the folder to `<name>` and
//! flush that. A bundle folder without the `.partial` mark is therefore always complete, and
//! its signed manifest lets the inspector prove it. A stale staging folder from an earlier,
//! interrupted export is removed before the next one writes.
//!
//! [`Volume`] is the one seam: [`MountedDir`] is the stick udisks2 mounted for us; tests run
//! the same protocol on a FAT image made by mkfs.vfat.

use std::io;
use std::path::{Path, PathBuf};

/// A filesystem the bundle is written onto, addressed by names relative to its root.
pub trait Volume {
    /// Bytes available for new files.
    fn free_bytes(&mut self) -> io::Result<u64>;
    fn exists(&mut self, name: &str) -> io::Result<bool>;
    fn create_dir(&mut self, name: &str) -> io::Result<()>;
    /// Removes a folder and the files in it (bundles are flat).
    fn remove_dir(&mut self, name: &str) -> io::Result<()>;
    /// Creates `dir/name` with `contents` and flushes it to the medium.
    fn write_file(&mut self, dir: &str, name: &str, contents: &[u8]) -> io::Result<()>;
    /// Renames a folder and flushes the change to the medium.
    fn rename_dir(&mut self, from: &str, to: &str) -> io::Result<()>;
}

/// Why an export could not be written. The messages are for the person holding the stick.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the stick is full: the export needs {needed} bytes and {free} are free")]
    Full { needed: u64, free: u64 },
    #[error("the stick is write-protected; slide its lock switch or use another stick")]
    ReadOnly,
    #[error(
        "the stick was removed or failed during the export; nothing on it is marked complete, \
         so insert it again and export again"
    )]
    Removed,
    #[error("an export named {0} is already on the stick; nothing was overwritten")]
    Exists(String),
    #[error("{0:?} is not a usable folder name for an export")]
    BadName(String),
    #[error("writing the export failed at {step}: {source}")]
    Io { step: String, source: io::Error },
}

/// Space a file may take beyond its bytes (cluster rounding on FAT, directory entries).
const PER_FILE_OVERHEAD: u64 = 64 * 1024;

/// Writes the `files` of a bundle as folder `name` on `volume` (see the module documentation).
pub fn write_bundle(
    volume: &mut impl Volume,
    name: &str,
    files: &[(String, Vec<u8>)],
) -> Result<(), ExportError> {
    let bad = name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || name.len() > 200;
    if bad {
        return Err(ExportError::BadName(name.to_owned()));
    }
    let step = |what: &str| {
        let what = what.to_owned();
        move |e: io::Error| classify(e, what)
    };
    if volume.exists(name).map_err(step("looking at the stick"))? {
        return Err(ExportError::Exists(name.to_owned()));
    }
    let needed: u64 = files.iter().map(|(_, c)| c.len() as u64 + PER_FILE_OVERHEAD).sum();
    let free = volume.free_bytes().map_err(step("reading the free space"))?;
    if free < needed {
        return Err(ExportError::Full { needed, free });
    }
    let staging = format!(".{name}.partial");
    if volume.exists(&staging).map_err(step("looking at the stick"))? {
        volume.remove_dir(&staging).map_err(step("removing an interrupted export"))?;
    }
    volume.create_dir(&staging).map_err(step("creating the export folder"))?;
    for (file, contents) in files {
        volume.write_file(&staging, file, contents).map_err(step(&format!("writing {file}")))?;
    }
    volume.rename_dir(&staging, name).map_err(step("completing the export"))?;
    Ok(())
}

fn classify(e: io::Error, step: String) -> ExportError {
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::StorageFull, _) => ExportError::Full { needed: 0, free: 0 },
        (io::ErrorKind::ReadOnlyFilesystem, _) => ExportError::ReadOnly,
        (_, Some(code))
            if [nix::libc::EIO, nix::libc::ENODEV, nix::libc::ENXIO].contains(&code) =>
        {
            ExportError::Removed
        }
        _ => ExportError::Io { step, source: e },
    }
}

/// A mounted filesystem (the stick as udisks2 mounted it), written with fsync at every step.
#[derive(Debug, Clone)]
pub struct MountedDir {
    root: PathBuf,
}

impl MountedDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn sync_dir(path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
}

impl Volume for MountedDir {
    fn free_bytes(&mut self) -> io::Result<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok(stat.blocks_available() * stat.fragment_size())
    }

    fn exists(&mut self, name: &str) -> io::Result<bool> {
        self.root.join(name).try_exists()
    }

    fn create_dir(&mut self, name: &str) -> io::Result<()> {
        std::fs::create_dir(self.root.join(name))
    }

    fn remove_dir(&mut self, name: &str) -> io::Result<()> {
        std::fs::remove_dir_all(self.root.join(name))?;
        Self::sync_dir(&self.root)
    }

    fn write_file(&mut self, dir: &str, name: &str, contents: &[u8]) -> io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create_new(self.root.join(dir).join(name))?;
        f.write_all(contents)?;
        f.sync_all()
    }

    fn rename_dir(&mut self, from: &str, to: &str) -> io::Result<()> {
        Self::sync_dir(&self.root.join(from))?;
        std::fs::rename(self.root.join(from), self.root.join(to))?;
        Self::sync_dir(&self.root)
    }
}
