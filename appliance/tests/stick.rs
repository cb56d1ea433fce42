//! Writing exports onto a FAT stick image made by mkfs.vfat, through the `fatfs` crate (the
//! host kernel has no vfat to mount), and reading the result back with mtools: a second,
//! independent FAT implementation. Full, write-protected and pulled sticks are simulated at the
//! block device, below the filesystem, where a real stick fails. (fsck.vfat is not used: it
//! objects to the `.` entries fatfs 0.3.6 writes for any new folder, a flaw of this test
//! driver, not of the protocol; on the appliance the kernel's vfat writes the folders.)

use std::cell::Cell;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use galen_appliance::export::{ExportError, Volume, write_bundle};

/// The stick's block device: a file, with a fault switched on from the test.
struct Device {
    file: std::fs::File,
    /// Bytes that may still be written before the fault fires; `None` for no fault.
    budget: Rc<Cell<Option<u64>>>,
    fault: i32,
}

impl Read for Device {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for Device {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(left) = self.budget.get() {
            if left < buf.len() as u64 {
                return Err(io::Error::from_raw_os_error(self.fault));
            }
            self.budget.set(Some(left - buf.len() as u64));
        }
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Device {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

struct FatStick {
    fs: fatfs::FileSystem<Device>,
}

impl Volume for FatStick {
    fn free_bytes(&mut self) -> io::Result<u64> {
        let stats = self.fs.stats()?;
        Ok(u64::from(stats.free_clusters()) * u64::from(stats.cluster_size()))
    }
    fn exists(&mut self, name: &str) -> io::Result<bool> {
        Ok(self.fs.root_dir().iter().any(|e| e.is_ok_and(|e| e.file_name() == name)))
    }
    fn create_dir(&mut self, name: &str) -> io::Result<()> {
        self.fs.root_dir().create_dir(name).map(drop)
    }
    fn remove_dir(&mut self, name: &str) -> io::Result<()> {
        let dir = self.fs.root_dir().open_dir(name)?;
        let names: Vec<String> = dir
            .iter()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n != "." && n != "..")
            .collect();
        for n in names {
            dir.remove(&n)?;
        }
        self.fs.root_dir().remove(name)
    }
    fn write_file(&mut self, dir: &str, name: &str, contents: &[u8]) -> io::Result<()> {
        let mut f = self.fs.root_dir().open_dir(dir)?.create_file(name)?;
        f.write_all(contents)?;
        f.flush()
    }
    fn rename_dir(&mut self, from: &str, to: &str) -> io::Result<()> {
        let root = self.fs.root_dir();
        root.rename(from, &root, to)
    }
}

/// A fresh FAT stick image of `kib` KiB, labelled INSPECT.
fn make_image(dir: &Path, kib: u32) -> PathBuf {
    let img = dir.join("stick.img");
    let status = Command::new("mkfs.vfat")
        .args(["-C", "-n", "INSPECT"])
        .arg(&img)
        .arg(kib.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("mkfs.vfat is installed by `cargo xtask setup`");
    assert!(status.success());
    img
}

fn mount(img: &Path, budget: Option<u64>, fault: i32) -> (FatStick, Rc<Cell<Option<u64>>>) {
    let budget = Rc::new(Cell::new(budget));
    let file = std::fs::OpenOptions::new().read(true).write(true).open(img).unwrap();
    let device = Device { file, budget: budget.clone(), fault };
    (FatStick { fs: fatfs::FileSystem::new(device, fatfs::FsOptions::new()).unwrap() }, budget)
}

fn mdir(img: &Path) -> String {
    let out = Command::new("mdir").args(["-b", "-i"]).arg(img).arg("::/").output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mtype(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("mtype").arg("-i").arg(img).arg(format!("::/{path}")).output().unwrap();
    assert!(out.status.success(), "mtype {path}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn bundle(size: usize) -> Vec<(String, Vec<u8>)> {
    vec![
        ("VERIFY.txt".into(), b"how to verify\n".to_vec()),
        ("record.json".into(), vec![b'x'; size]),
        ("MANIFEST.sha256".into(), b"digests\n".to_vec()),
    ]
}

#[test]
fn a_bundle_lands_complete_and_mtools_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 4096);
    let (mut stick, _) = mount(&img, None, 0);
    write_bundle(&mut stick, "GALEN-EXPORT-B-1", &bundle(100_000)).unwrap();
    drop(stick);
    assert!(mdir(&img).contains("GALEN-EXPORT-B-1"), "{}", mdir(&img));
    assert!(!mdir(&img).contains(".partial"), "{}", mdir(&img));
    assert_eq!(mtype(&img, "GALEN-EXPORT-B-1/VERIFY.txt"), b"how to verify\n");
    assert_eq!(mtype(&img, "GALEN-EXPORT-B-1/record.json").len(), 100_000);
}

#[test]
fn a_full_stick_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1024);
    let (mut stick, _) = mount(&img, None, 0);
    let err = write_bundle(&mut stick, "GALEN-EXPORT-B-1", &bundle(2_000_000)).unwrap_err();
    assert!(matches!(err, ExportError::Full { .. }), "{err}");
    assert!(err.to_string().starts_with("the stick is full: the export needs"), "{err}");
    drop(stick);
    assert!(!mdir(&img).contains("GALEN"), "{}", mdir(&img));
}

#[test]
fn a_write_protected_stick_says_so_and_holds_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 4096);
    let (mut stick, _) = mount(&img, Some(0), nix::libc::EROFS);
    let err = write_bundle(&mut stick, "GALEN-EXPORT-B-1", &bundle(10_000)).unwrap_err();
    assert!(matches!(err, ExportError::ReadOnly), "{err}");
    drop(stick);
    assert!(!mdir(&img).contains("GALEN"), "{}", mdir(&img));
}

#[test]
fn a_stick_pulled_mid_write_never_holds_a_complete_looking_bundle() {
    // Pull the stick after every amount of written data up to the full bundle.
    let mut pulled = 0;
    for budget in (0..200_000u64).step_by(7_919) {
        let dir = tempfile::tempdir().unwrap();
        let img = make_image(dir.path(), 4096);
        let (mut stick, _) = mount(&img, Some(budget), nix::libc::EIO);
        match write_bundle(&mut stick, "GALEN-EXPORT-B-1", &bundle(100_000)) {
            Ok(()) => {
                drop(stick);
                assert_eq!(mtype(&img, "GALEN-EXPORT-B-1/record.json").len(), 100_000);
            }
            Err(err) => {
                pulled += 1;
                assert!(matches!(err, ExportError::Removed), "after {budget} bytes: {err}");
                drop(stick);
                let listing = mdir(&img);
                assert!(
                    !listing.lines().any(|l| l.trim_end_matches('/').ends_with("GALEN-EXPORT-B-1")),
                    "after {budget} bytes a complete-looking bundle is on the stick:\n{listing}"
                );
            }
        }
    }
    assert!(pulled > 5, "the sweep must pull the stick mid-write several times");
}

#[test]
fn an_interrupted_export_is_cleaned_up_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 4096);
    let (mut stick, _) = mount(&img, Some(60_000), nix::libc::EIO);
    assert!(matches!(
        write_bundle(&mut stick, "GALEN-EXPORT-B-1", &bundle(100_000)),
        Err(ExportError::Removed)
    ));
    drop(stick);
    let (mut stick, _) = mount(&img, None, 0);
    write_bundle(&mut stick, "GALEN-EXPORT-B-1", &bundle(100_000)).unwrap();
    let again = write_bundle(&mut stick, "GALEN-EXPORT-B-1", &bundle(10)).unwrap_err();
    assert!(matches!(again, ExportError::Exists(_)), "{again}");
    drop(stick);
    let listing = mdir(&img);
    assert!(!listing.contains(".partial"), "{listing}");
    assert_eq!(mtype(&img, "GALEN-EXPORT-B-1/record.json").len(), 100_000);
}
