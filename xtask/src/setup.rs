//! `cargo xtask setup`: installs the Debian packages the project needs, and only the missing ones.
//!
//! The list below is the single place that says what a fresh machine needs: every crate with a
//! system library and every service a test or the demo starts is accounted for here. `apt-get
//! update` runs at most once, and only when something must be installed, so a second run on a
//! ready machine installs nothing and touches no network.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process;

/// A Debian package and the reason the project needs it (printed when it is missing).
#[derive(Debug)]
pub(crate) struct Package {
    pub(crate) name: &'static str,
    pub(crate) why: &'static str,
}

/// Everything the workspace needs to build, test and run its demo.
pub(crate) const PACKAGES: &[Package] = &[
    // Build time.
    Package { name: "pkg-config", why: "lets tss-esapi-sys find the TPM2 software stack" },
    Package { name: "gcc", why: "compiles the bundled SQLite and other C parts of -sys crates" },
    Package { name: "libc6-dev", why: "C headers for the -sys crates" },
    Package { name: "libtss2-dev", why: "TPM2 software stack (tpm2-tss) that tss-esapi links" },
    Package {
        name: "libinput-dev",
        why: "the image's galen-hmi (feature kms) reads the touchscreen through libinput",
    },
    Package { name: "libudev-dev", why: "libinput finds the touchscreen through udev" },
    Package {
        name: "libxkbcommon-dev",
        why: "the image's galen-hmi maps a barcode scanner's or keyboard's keys (xkbcommon)",
    },
    // Test and run time.
    Package { name: "swtpm", why: "software TPM that tests and the demo seal records with" },
    Package {
        name: "swtpm-tools",
        why: "swtpm_setup, to provision a software TPM like a real one",
    },
    Package { name: "tpm2-tools", why: "tpm2_getrandom checks that a TPM answers" },
    Package { name: "dbus-daemon", why: "the private bus that tests and the demo run on" },
    Package { name: "dbus-bin", why: "dbus-send checks that a bus answers" },
    Package {
        name: "dosfstools",
        why: "mkfs.vfat makes the FAT stick images exports are tested on",
    },
    Package { name: "mtools", why: "mdir and mtype read those FAT images without mounting them" },
    Package {
        name: "openssl",
        why: "tests follow VERIFY.txt of an export with openssl, as inspectors do",
    },
    // The appliance's image (`cargo xtask image`) and its QEMU boot test.
    Package {
        name: "mmdebstrap",
        why: "builds the image's Debian root from the host's apt sources",
    },
    Package { name: "e2fsprogs", why: "mkfs.ext4 -d makes the image's root and data file systems" },
    Package { name: "fdisk", why: "sfdisk writes the image's GPT partition table into a file" },
    Package {
        name: "systemd",
        why: "systemd-sysusers and systemctl --root add the image's user and unit links",
    },
    Package { name: "qemu-system-x86", why: "boots the image in the boot test (TCG)" },
    Package { name: "qemu-utils", why: "qemu-img: the boot test's disk overlay" },
    Package { name: "ovmf", why: "UEFI firmware: the boot test boots the image's ESP like a unit" },
];

/// Packages that come from the release's backports suite. The machines this runs on have
/// qemu-utils 10 from backports preinstalled, and the release's own qemu-system-x86 (7.2)
/// conflicts with it, so both QEMU packages must come from there.
pub(crate) const FROM_BACKPORTS: &[&str] = &["qemu-system-x86", "qemu-utils"];

/// What `setup` should do when packages are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Install,
    CheckOnly,
}

pub(crate) fn run(mode: Mode) -> Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        println!("setup: all {} required Debian packages are installed", PACKAGES.len());
        return Ok(());
    }
    println!(
        "setup: {} of {} required Debian packages are missing:",
        missing.len(),
        PACKAGES.len()
    );
    for p in &missing {
        println!("  {:<14} {}", p.name, p.why);
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    if mode == Mode::CheckOnly {
        bail!("missing packages: {} (run `cargo xtask setup` to install them)", names.join(" "));
    }
    if !nix::unistd::geteuid().is_root() {
        println!("Installing needs root. Run this, then `cargo xtask setup` again:");
        let (backports, release): (Vec<&str>, Vec<&str>) =
            names.iter().partition(|n| FROM_BACKPORTS.contains(n));
        let install = "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y \
                       --no-install-recommends";
        let mut line = String::from("  sudo apt-get update");
        if !release.is_empty() {
            line.push_str(&format!(" && {install} {}", release.join(" ")));
        }
        if !backports.is_empty() {
            line.push_str(&format!(
                " && {install} -t {} {}",
                backports_suite()?,
                backports.join(" ")
            ));
        }
        println!("{line}");
        bail!("setup needs root to install {}", names.join(" "));
    }
    let (backports, release): (Vec<&str>, Vec<&str>) =
        names.iter().partition(|n| FROM_BACKPORTS.contains(n));
    let backports_suite = if backports.is_empty() { None } else { Some(backports_suite()?) };
    println!("setup: apt-get update");
    process::run(Command::new("apt-get").args(["update", "-q"]))?;
    for (packages, suite) in [(release, None), (backports, backports_suite.as_deref())] {
        if packages.is_empty() {
            continue;
        }
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
        ]);
        if let Some(suite) = suite {
            cmd.args(["-t", suite]);
        }
        println!("setup: {}", process::display(cmd.args(&packages)));
        process::run(&mut cmd)?;
    }
    let still = missing_packages()?;
    if !still.is_empty() {
        let still: Vec<&str> = still.iter().map(|p| p.name).collect();
        bail!("apt-get finished but these are still not installed: {}", still.join(" "));
    }
    println!("setup: installed {} package(s)", names.len());
    Ok(())
}

/// The host release's backports suite, which must be in the host's apt sources.
fn backports_suite() -> Result<String> {
    let os_release = std::fs::read_to_string("/etc/os-release")
        .context("reading /etc/os-release (is this a Debian machine?)")?;
    let codename = os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .filter(|c| !c.is_empty())
        .context("/etc/os-release has no VERSION_CODENAME")?;
    let suite = format!("{codename}-backports");
    if !crate::image::sources::host_has_suite(&suite)? {
        // The entry to add, made from the host's own release entry: the same mirror and key.
        let entry = crate::image::sources::host_sources(&codename)
            .ok()
            .and_then(|sources| sources.into_iter().find(|s| s.suites.contains(&codename)))
            .map(|mut s| {
                s.suites = vec![suite.clone()];
                crate::image::sources::to_deb822(&[s])
            });
        // As root, add it: the same mirror and key the host already trusts for its release.
        if let Some(entry) = &entry
            && nix::unistd::geteuid().is_root()
        {
            let path = format!("/etc/apt/sources.list.d/{suite}.sources");
            std::fs::write(&path, entry).with_context(|| format!("writing {path}"))?;
            println!("setup: added {suite} to the apt sources ({path}), from the {codename} entry");
            return Ok(suite);
        }
        let entry = entry.unwrap_or_else(|| {
            format!(
                "Types: deb\nURIs: <as for {codename}>\nSuites: {suite}\nComponents: main\n\
                     Signed-By: <as for {codename}>\n"
            )
        });
        bail!(
            "{} must come from {suite}, which the host's apt sources do not have. Add it, \
             reusing your {codename} entry's mirror and key, as \
             /etc/apt/sources.list.d/{suite}.sources:\n\n{}\n\nthen run `cargo xtask setup` again",
            FROM_BACKPORTS.join(" and "),
            entry.trim_end()
        );
    }
    Ok(suite)
}

/// The required packages that dpkg does not report as installed.
fn missing_packages() -> Result<Vec<&'static Package>> {
    let names: Vec<&str> = PACKAGES.iter().map(|p| p.name).collect();
    // dpkg-query exits 1 when it knows nothing of a package, but still reports the others.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${db:Status-Status}\n"])
        .args(&names)
        .output()
        .context("running dpkg-query (is this a Debian machine?)")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let installed = installed_from_dpkg(&listing);
    Ok(PACKAGES.iter().filter(|p| !installed.contains(p.name)).collect())
}

fn installed_from_dpkg(listing: &str) -> BTreeSet<&str> {
    listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| *status == "installed")
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fully_installed_packages_count() {
        let listing = "swtpm\tinstalled\nlibtss2-dev\tconfig-files\ndbus-bin\thalf-installed\n";
        assert_eq!(installed_from_dpkg(listing), BTreeSet::from(["swtpm"]));
    }

    #[test]
    fn backports_packages_are_required_packages() {
        for name in FROM_BACKPORTS {
            assert!(PACKAGES.iter().any(|p| p.name == *name), "{name} is not in PACKAGES");
        }
    }

    #[test]
    fn package_names_are_unique_and_explained() {
        let mut seen = BTreeSet::new();
        for p in PACKAGES {
            assert!(seen.insert(p.name), "{} is listed twice", p.name);
            assert!(!p.why.is_empty(), "{} has no reason", p.name);
        }
    }
}
