//! Building `disk.img`: the Debian base (mmdebstrap, cached), our files and binaries on top,
//! then one file system per partition, made from directories without mounting anything
//! (`mkfs.ext4 -d`, `mkfs.vfat` + mtools), placed into a GPT disk written by sfdisk.
//!
//! Layout (MiB): 1 reserved for the GPT, `esp` 256 (systemd-boot, slot A's kernel and
//! initramfs), `root-a` 1536 (ext4, mounted read-only), `root-b` 1536 (left empty: an update
//! writes it), `data` 512 (ext4, mounted at /var). Partitions are named, and the boot loader
//! entry, fstab and udev use the names (PARTLABEL), so nothing depends on probe order.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{RELEASE, Step, sha256_hex, sources, target_dir, tree_listing};
use crate::{cargo, process, workspace_root};

const MIB: u64 = 1024 * 1024;
/// The copy buffer: one MiB, so zero-skipping works on whole MiB blocks.
const BLOCK: usize = 1024 * 1024;
const ESP_MIB: u64 = 256;
const ROOT_MIB: u64 = 1536;
const DATA_MIB: u64 = 512;

/// GPT partition types (Discoverable Partitions Specification), so tools recognise each part.
const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
const TYPE_VAR: &str = "4D21B016-B534-45C2-A9FB-5C16E091FD2D";

/// Scripts under `image/rootfs/` that belong in the initramfs.
const INITRAMFS_SCRIPTS: &[&str] = &["etc/initramfs-tools/scripts/local-bottom/galen-machine-id"];

/// The binaries installed into /usr/bin: the supervisor, its CLI and the touchscreen.
const APPLIANCE_BINARIES: &[&str] = &["applianced", "galenctl", "galen-hmi"];

/// What a build produced.
#[derive(Debug)]
pub(crate) struct Built {
    /// `<target>/galen-image/`.
    pub(crate) out: PathBuf,
    pub(crate) disk: PathBuf,
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    /// Slot A's kernel command line, as its boot loader entry has it.
    pub(crate) cmdline: String,
    /// What the boot test runs on the host, when it asked for them.
    pub(crate) host: Option<HostTools>,
}

/// The boot test's side of the cable: the simulated unit, the development manufacturer that
/// publishes its recipe, and the inspector's verifier.
#[derive(Debug)]
pub(crate) struct HostTools {
    pub(crate) hil: PathBuf,
    pub(crate) recipe: PathBuf,
    pub(crate) galen_verify: PathBuf,
    /// The development manufacturer's TUF keys (the image trusts their root).
    pub(crate) manufacturer: PathBuf,
}

/// One partition of the disk.
struct Part {
    name: &'static str,
    type_guid: &'static str,
    mib: u64,
    /// The file system image written into it, if any.
    image: Option<PathBuf>,
}

pub(crate) fn build(with_hil: bool, trusted_root: Option<&Path>) -> Result<Built> {
    let root = workspace_root();
    let target = target_dir()?;
    let out = target.join("galen-image");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    if with_hil && trusted_root.is_some() {
        bail!(
            "--boot-test publishes its recipe as the development manufacturer, so the image \
             must trust the development root: leave out --trusted-root"
        );
    }
    let binaries = release_binaries(&target, with_hil, trusted_root.is_none())?;
    let trusted_root = match trusted_root {
        Some(path) => path.to_path_buf(),
        None => development_root(&target, &out)?,
    };
    let release = target.join("release");
    let host = with_hil.then(|| HostTools {
        hil: release.join("hil"),
        recipe: release.join("recipe"),
        galen_verify: release.join("galen-verify"),
        manufacturer: out.join("dev-manufacturer"),
    });
    let root_json = std::fs::read(&trusted_root)
        .with_context(|| format!("reading the trusted TUF root {}", trusted_root.display()))?;
    let packages = read_packages(&root.join("image/packages"))?;
    let sources = sources::to_deb822(&sources::host_sources(RELEASE)?);
    let base = base_rootfs(&root, &out, &packages, &sources)?;

    let mut inputs = format!("base {}\nroot.json {}\n", base.display(), sha256_hex(&root_json)?);
    for bin in &binaries {
        inputs.push_str(&format!("{} {}\n", bin.display(), sha256_hex(&std::fs::read(bin)?)?));
    }
    inputs.push_str(&tree_listing(&root.join("image"))?);
    let key = sha256_hex(inputs.as_bytes())?;

    let built = Built {
        disk: out.join("disk.img"),
        kernel: out.join("vmlinuz"),
        initrd: out.join("initrd.img"),
        cmdline: String::new(),
        out: out.clone(),
        host,
    };
    let key_file = out.join("disk.key");
    let cmdline_file = out.join("cmdline");
    let up_to_date = std::fs::read_to_string(&key_file).is_ok_and(|k| k.trim() == key)
        && [&built.disk, &built.kernel, &built.initrd, &cmdline_file].iter().all(|p| p.exists());
    if up_to_date {
        println!("image: disk.img is up to date (same base, binaries and image/ files)");
    } else {
        let _ = std::fs::remove_file(&key_file);
        assemble(&root, &out, &base, &binaries, &trusted_root)?;
        std::fs::write(&key_file, format!("{key}\n"))?;
    }
    let cmdline = std::fs::read_to_string(&cmdline_file)?.trim().to_owned();
    Ok(Built { cmdline, ..built })
}

/// Builds the release binaries and returns the appliance's (to install); the boot test's
/// host tools land next to them.
fn release_binaries(target: &Path, with_hil: bool, with_recipe: bool) -> Result<Vec<PathBuf>> {
    let step = Step::new("cargo build --release (the appliance's binaries)");
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--quiet", "--bins", "-p", "galen-appliance"]);
    // The touchscreen on DRM/KMS (libinput, xkbcommon: `cargo xtask setup` installs them).
    cmd.args(["-p", "galen-hmi", "--features", "galen-hmi/kms"]);
    if with_hil {
        // The boot test's simulated unit runs on the host, next to QEMU, and the bundle the
        // guest exports is verified there.
        cmd.args(["-p", "galen-hil", "-p", "galen-record"]);
    }
    if with_recipe || with_hil {
        // `recipe keys` makes the development TUF root.
        cmd.args(["-p", "galen-recipes"]);
    }
    process::run(&mut cmd)?;
    step.done();
    let release = target.join("release");
    let binaries: Vec<PathBuf> = APPLIANCE_BINARIES.iter().map(|b| release.join(b)).collect();
    if let Some(missing) = binaries.iter().find(|p| !p.exists()) {
        bail!("cargo built no {}", missing.display());
    }
    Ok(binaries)
}

/// Fails unless every shared library `bin` links is in the root file system: a missing one
/// would otherwise show only at boot, as a unit restarting for ever.
fn check_libraries(staging: &Path, bin: &Path) -> Result<()> {
    let out = process::output(Command::new("chroot").arg(staging).arg("ldd").arg(bin))
        .with_context(|| format!("listing the libraries {} needs", bin.display()))?;
    let missing: Vec<&str> =
        out.lines().filter(|l| l.contains("not found")).map(str::trim).collect();
    if !missing.is_empty() {
        bail!(
            "{} needs libraries the image does not have ({}): add their Debian packages to \
             image/packages",
            bin.display(),
            missing.join("; ")
        );
    }
    Ok(())
}

/// A development manufacturer (TUF keys and a signed root.json), made once and kept, so
/// every image built here trusts the same root and recipes signed with these keys install.
fn development_root(target: &Path, out: &Path) -> Result<PathBuf> {
    let dir = out.join("dev-manufacturer");
    let root_json = dir.join("root.json");
    if !root_json.exists() {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        process::run(Command::new(target.join("release/recipe")).args(["keys", "--out"]).arg(&dir))
            .context("making the development TUF root")?;
    }
    println!(
        "image: trusting the DEVELOPMENT recipe root {} (pass --trusted-root with the \
         manufacturer's root.json for an image that leaves this machine)",
        root_json.display()
    );
    Ok(root_json)
}

/// The package names in `image/packages` (comments and blank lines skipped).
fn read_packages(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let packages: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if packages.is_empty() {
        bail!("{} lists no packages", path.display());
    }
    Ok(packages)
}

/// The Debian root file system as a tarball, made by mmdebstrap once per distinct input.
fn base_rootfs(root: &Path, out: &Path, packages: &[String], sources: &str) -> Result<PathBuf> {
    let sources_file = out.join("host.sources");
    std::fs::write(&sources_file, sources)?;
    let mut args: Vec<String> = [
        "--variant=minbase",
        "--mode=root",
        "--format=tar",
        // Documentation is dead weight on an appliance; licences stay.
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(format!("--include={}", packages.join(",")));
    // Initramfs scripts must be in place before the initramfs is built, so they go in here
    // (and are part of this stage's key) rather than with the rest of image/rootfs/.
    let mut hook_contents = String::new();
    for script in INITRAMFS_SCRIPTS {
        let path = root.join("image/rootfs").join(script);
        let dest = Path::new("/").join(script);
        let dir = dest.parent().context("initramfs script path")?;
        args.push(format!("--customize-hook=copy-in {} {}", path.display(), dir.display()));
        hook_contents.push_str(&std::fs::read_to_string(&path)?);
    }
    args.push("--customize-hook=chroot \"$1\" update-initramfs -u -k all".to_owned());
    let key = sha256_hex(format!("{args:?}\n{RELEASE}\n{sources}\n{hook_contents}").as_bytes())?;
    let tarball = out.join(format!("base-{}.tar", &key[..16]));
    if tarball.exists() {
        println!("image: Debian base is cached ({})", tarball.display());
        return Ok(tarball);
    }
    // Older bases are for inputs that changed; they only take space.
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("base-") && name.ends_with(".tar") {
            std::fs::remove_file(&path)?;
        }
    }
    let step = Step::new(format!(
        "mmdebstrap: Debian {RELEASE} with {} packages from the host's apt sources (a few \
         minutes on a cold cache)",
        packages.len()
    ));
    let partial = out.join("base.tar.partial");
    process::run(
        Command::new("mmdebstrap")
            .args(&args)
            .arg(RELEASE)
            .arg(&partial)
            // An existing file ending in .sources is used as the chroot's deb822 sources.
            .arg(&sources_file),
    )
    .context("mmdebstrap failed; its output above says which package or source")?;
    std::fs::rename(&partial, &tarball)?;
    step.done();
    Ok(tarball)
}

/// Unpacks the base, adds our files, and writes every partition and the disk.
fn assemble(
    root: &Path,
    out: &Path,
    base: &Path,
    binaries: &[PathBuf],
    trusted_root: &Path,
) -> Result<()> {
    let step = Step::new("assemble the root file system and the partitions");
    let staging = out.join("staging");
    let var = out.join("staging-var");
    for dir in [&staging, &var] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    std::fs::create_dir(&staging)?;
    process::run(
        Command::new("tar")
            .args(["--extract", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-f"])
            .arg(base)
            .arg("-C")
            .arg(&staging),
    )?;
    // Our files as they are in the repository, owned by root like the rest of the tree.
    process::run(
        Command::new("cp")
            .args(["--no-dereference", "--recursive", "--preserve=mode", "--no-preserve=ownership"])
            .arg(root.join("image/rootfs/."))
            .arg(&staging),
    )?;
    for bin in binaries {
        let name = bin.file_name().context("binary name")?;
        let dest = staging.join("usr/bin").join(name);
        process::run(Command::new("install").args(["-m", "0755"]).arg(bin).arg(&dest))?;
        check_libraries(&staging, &Path::new("/usr/bin").join(name))?;
    }
    // Only recipes signed under this root install; it lives on the read-only root on purpose.
    process::run(
        Command::new("install")
            .args(["-D", "-m", "0644"])
            .arg(trusted_root)
            .arg(staging.join("usr/share/galen/root.json")),
    )?;
    let rootflag = format!("--root={}", staging.display());
    // /etc is read-only on the unit, so users and unit links are made now, not at first boot.
    process::run(Command::new("systemd-sysusers").arg(&rootflag))?;
    process::run(Command::new("systemctl").arg(&rootflag).args([
        "enable",
        "applianced.service",
        "galen-commission.service",
        "galen-machine-id.service",
        "galen-hmi.service",
    ]))?;
    // The id comes from the data partition through the initramfs, or systemd writes a new one
    // there on the first boot (scripts/local-bottom/galen-machine-id).
    let machine_id = staging.join("etc/machine-id");
    std::fs::remove_file(&machine_id)?;
    std::os::unix::fs::symlink("/run/machine-id", &machine_id)?;
    // It would prompt on the console if /etc ever were writable on a "first boot".
    process::run(
        Command::new("systemctl").arg(&rootflag).args(["mask", "systemd-firstboot.service"]),
    )?;

    let (kernel, initrd) = kernel_and_initrd(&staging)?;
    std::fs::copy(&kernel, out.join("vmlinuz"))?;
    std::fs::copy(&initrd, out.join("initrd.img"))?;
    let entry = root.join("image/esp/loader/entries/galen-a.conf");
    let cmdline = entry_options(&std::fs::read_to_string(&entry)?)
        .with_context(|| format!("{} has no `options` line", entry.display()))?;
    std::fs::write(out.join("cmdline"), format!("{cmdline}\n"))?;

    // /var is the data partition: its content goes there, and the root keeps an empty mount
    // point.
    std::fs::rename(staging.join("var"), &var)?;
    std::fs::create_dir(staging.join("var"))?;

    let esp = out.join("esp.part");
    let root_a = out.join("root-a.part");
    let data = out.join("data.part");
    mkfs_ext4(&root_a, "root-a", &staging, ROOT_MIB, "0")?;
    mkfs_ext4(&data, "galen-data", &var, DATA_MIB, "1")?;
    let loader = staging.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    make_esp(&esp, root, &loader, &out.join("vmlinuz"), &out.join("initrd.img"))?;
    std::fs::remove_dir_all(&staging)?;
    std::fs::remove_dir_all(&var)?;

    let parts = [
        Part { name: "esp", type_guid: TYPE_ESP, mib: ESP_MIB, image: Some(esp) },
        Part { name: "root-a", type_guid: TYPE_ROOT_X86_64, mib: ROOT_MIB, image: Some(root_a) },
        Part { name: "root-b", type_guid: TYPE_ROOT_X86_64, mib: ROOT_MIB, image: None },
        Part { name: "data", type_guid: TYPE_VAR, mib: DATA_MIB, image: Some(data) },
    ];
    write_disk(&out.join("disk.img"), &parts)?;
    for part in &parts {
        if let Some(image) = &part.image {
            std::fs::remove_file(image)?;
        }
    }
    step.done();
    Ok(())
}

/// The one kernel and initramfs under /boot (the image installs exactly one kernel).
fn kernel_and_initrd(staging: &Path) -> Result<(PathBuf, PathBuf)> {
    let boot = staging.join("boot");
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(&boot)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    if kernels.len() != 1 {
        bail!("expected one kernel in the root's /boot, found {}", kernels.len());
    }
    let kernel = kernels.remove(0);
    let version = kernel.file_name().and_then(|n| n.to_str()).unwrap_or_default()
        ["vmlinuz-".len()..]
        .to_owned();
    let initrd = boot.join(format!("initrd.img-{version}"));
    if !initrd.exists() {
        bail!("the kernel {version} has no initramfs at {}", initrd.display());
    }
    Ok((kernel, initrd))
}

/// The `options` line of a Boot Loader Specification entry.
fn entry_options(entry: &str) -> Option<String> {
    entry.lines().find_map(|l| l.trim().strip_prefix("options").map(|o| o.trim().to_owned()))
}

fn mkfs_ext4(
    image: &Path,
    label: &str,
    from: &Path,
    mib: u64,
    reserved_percent: &str,
) -> Result<()> {
    let _ = std::fs::remove_file(image);
    process::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-m", reserved_percent, "-d"])
            .arg(from)
            .arg(image)
            .arg(format!("{mib}M")),
    )
    .with_context(|| {
        format!("making the {label} file system ({mib} MiB; if it is full, raise the size in xtask/src/image/build.rs)")
    })
}

/// The ESP: systemd-boot as the removable-media loader, its configuration from `image/esp/`,
/// and slot A's kernel and initramfs. Written with mtools, so nothing is mounted.
fn make_esp(image: &Path, root: &Path, loader: &Path, kernel: &Path, initrd: &Path) -> Result<()> {
    let _ = std::fs::remove_file(image);
    let kib = (ESP_MIB * MIB / 1024).to_string();
    process::run(
        Command::new("mkfs.vfat").args(["-F", "32", "-n", "GALEN-ESP", "-C"]).arg(image).arg(&kib),
    )?;
    let mtools = |tool: &str, args: &[&Path], dest: Option<&str>| -> Result<()> {
        let mut cmd = Command::new(tool);
        // mtools checks that the size is a whole number of "tracks"; a file has none.
        cmd.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(image).args(args);
        if let Some(dest) = dest {
            cmd.arg(dest);
        }
        process::run(&mut cmd)
    };
    for dir in ["::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries", "::/galen-a"] {
        mtools("mmd", &[], Some(dir))?;
    }
    mtools("mcopy", &[loader], Some("::/EFI/BOOT/BOOTX64.EFI"))?;
    let esp_src = root.join("image/esp");
    mtools("mcopy", &[&esp_src.join("loader/loader.conf")], Some("::/loader/loader.conf"))?;
    mtools(
        "mcopy",
        &[&esp_src.join("loader/entries/galen-a.conf")],
        Some("::/loader/entries/galen-a.conf"),
    )?;
    mtools("mcopy", &[kernel], Some("::/galen-a/vmlinuz"))?;
    mtools("mcopy", &[initrd], Some("::/galen-a/initrd.img"))?;
    Ok(())
}

/// The sfdisk script for `parts`, each starting on a MiB boundary after 1 MiB for the GPT.
fn sfdisk_script(parts: &[Part]) -> String {
    let mut script = String::from("label: gpt\nunit: sectors\nsector-size: 512\n\n");
    let mut start = MIB / 512;
    for p in parts {
        let size = p.mib * MIB / 512;
        script.push_str(&format!(
            "start={start}, size={size}, type={}, name=\"{}\"\n",
            p.type_guid, p.name
        ));
        start += size;
    }
    script
}

/// A sparse raw disk: the partition table by sfdisk, then each file system copied to its
/// offset (all-zero blocks skipped, so holes stay holes).
fn write_disk(disk: &Path, parts: &[Part]) -> Result<()> {
    let _ = std::fs::remove_file(disk);
    let total_mib = 1 + parts.iter().map(|p| p.mib).sum::<u64>() + 1;
    File::create(disk)
        .and_then(|f| f.set_len(total_mib * MIB))
        .with_context(|| format!("creating {}", disk.display()))?;
    let script = disk.with_extension("sfdisk");
    std::fs::write(&script, sfdisk_script(parts))?;
    process::run(
        Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(disk)
            .stdin(File::open(&script)?),
    )?;
    std::fs::remove_file(script)?;
    let file = std::fs::OpenOptions::new().write(true).open(disk)?;
    let mut offset = MIB;
    for p in parts {
        if let Some(image) = &p.image {
            let len = std::fs::metadata(image)?.len();
            if len > p.mib * MIB {
                bail!("{} ({len} bytes) does not fit its {} MiB partition", image.display(), p.mib);
            }
            copy_sparse(image, &file, offset)?;
        }
        offset += p.mib * MIB;
    }
    file.sync_all()?;
    Ok(())
}

fn copy_sparse(image: &Path, disk: &File, offset: u64) -> Result<()> {
    let mut src = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut buf = vec![0u8; BLOCK];
    let mut pos = 0u64;
    loop {
        let n = read_full(&mut src, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            disk.write_all_at(&buf[..n], offset + pos)?;
        }
        pos += n as u64;
    }
}

fn read_full(src: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = src.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_mib_aligned_and_named() {
        let parts = [
            Part { name: "esp", type_guid: TYPE_ESP, mib: 2, image: None },
            Part { name: "data", type_guid: TYPE_VAR, mib: 3, image: None },
        ];
        assert_eq!(
            sfdisk_script(&parts),
            "label: gpt\nunit: sectors\nsector-size: 512\n\n\
             start=2048, size=4096, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"esp\"\n\
             start=6144, size=6144, type=4D21B016-B534-45C2-A9FB-5C16E091FD2D, name=\"data\"\n"
        );
    }

    #[test]
    fn the_boot_entry_gives_the_command_line() {
        let entry = "title Galen\nlinux /galen-a/vmlinuz\noptions root=PARTLABEL=root-a ro quiet\n";
        assert_eq!(entry_options(entry).as_deref(), Some("root=PARTLABEL=root-a ro quiet"));
    }
}
