//! `cargo xtask image`: the appliance's bootable disk image, and `--boot-test`, which boots it
//! in QEMU with a software TPM, the simulated unit's instruments and a USB stick.
//!
//! Inputs: the Debian packages in `image/packages` (from the host's apt sources), the static
//! files in `image/rootfs/` (copied over the root as they are) and `image/esp/` (the boot
//! loader's configuration), the release binaries of `galen-appliance`, and the manufacturer's
//! TUF root (`--trusted-root`, else a development root made once). Output, in
//! `<cargo target dir>/galen-image/`:
//!
//! ```text
//! disk.img        raw GPT disk: esp (FAT, systemd-boot), root-a (ext4, read-only),
//!                 root-b (empty, for the next update), data (ext4, mounted at /var)
//! vmlinuz, initrd.img, cmdline    slot A's kernel, initramfs and command line
//! base-<key>.tar  the Debian root file system as mmdebstrap made it (cache)
//! dev-manufacturer/  the development TUF keys and root.json, when no root was given
//! boot-test/      the last boot test's logs, console output, stick and TPM state
//! ```
//!
//! The base root file system is cached by a key over everything that goes into it (package
//! list, host apt sources, mmdebstrap options), and the disk by a key over the base, the
//! binaries and every file under `image/`; an unchanged input rebuilds nothing.

mod agent;
mod boot_test;
mod build;
mod qmp;
pub(crate) mod sources;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, process, setup};

/// The Debian release the image is built from (the host's release: its sources serve it).
const RELEASE: &str = "bookworm";

pub(crate) fn run(boot_test: bool, trusted_root: Option<&Path>) -> Result<()> {
    setup::run(setup::Mode::Install)?;
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "building the image needs root: mmdebstrap installs packages as root and the root \
             file system keeps its owners (run `sudo cargo xtask image`)"
        );
    }
    let started = Instant::now();
    let built = build::build(boot_test, trusted_root)?;
    println!("image: ready in {:.0} s: {}", started.elapsed().as_secs_f64(), built.disk.display());
    if boot_test {
        boot_test::run(&built)?;
    }
    Ok(())
}

/// Where cargo puts build output (honours `CARGO_TARGET_DIR` and cargo configuration).
fn target_dir() -> Result<PathBuf> {
    let out = process::output(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let meta: serde_json::Value =
        serde_json::from_str(&out).context("reading `cargo metadata` output")?;
    let dir = meta["target_directory"]
        .as_str()
        .context("`cargo metadata` printed no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// SHA-256 of `data`, as hex (sha256sum: xtask links no crypto).
fn sha256_hex(data: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting sha256sum")?;
    child.stdin.take().context("sha256sum stdin")?.write_all(data)?;
    let out = child.wait_with_output().context("running sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().next().unwrap_or_default().to_owned())
}

/// A line per file under `dir` (path, mode, symlink target or content hash), sorted: two trees
/// with the same listing give an image with the same files.
fn tree_listing(dir: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    let mut listing = String::new();
    for path in files {
        let rel = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
        let meta = std::fs::symlink_metadata(&path)?;
        let what = if meta.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&path)?.display())
        } else {
            sha256_hex(&std::fs::read(&path).with_context(|| format!("reading {rel}"))?)?
        };
        listing.push_str(&format!("{rel} {:o} {what}\n", meta.permissions().mode()));
    }
    Ok(listing)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if std::fs::symlink_metadata(&path)?.is_dir() {
            walk(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// A long step: says what it starts, and how long it took once done.
struct Step {
    what: String,
    started: Instant,
}

impl Step {
    fn new(what: impl Into<String>) -> Self {
        let what = what.into();
        println!("image: {what} …");
        Self { what, started: Instant::now() }
    }

    fn done(self) {
        println!("image: {} took {:.1} s", self.what, self.started.elapsed().as_secs_f64());
    }
}
