//! `cargo xtask demo`: the most complete end-to-end job the project can do today.
//!
//! It grows with every capability. Each step prints what it is doing and what came of it, so a
//! newcomer can read the output as a tour; the closing summary says plainly what ran and what
//! does not exist yet.

use anyhow::Result;

use crate::services::Services;
use crate::{cargo, process, setup};

/// Prints one numbered step of the tour.
struct Steps {
    total: usize,
    done: usize,
}

impl Steps {
    fn next(&mut self, what: &str) {
        self.done += 1;
        println!("\n[{}/{}] {what}", self.done, self.total);
    }
}

pub(crate) fn run() -> Result<()> {
    println!("Galen demo: what the appliance software can do end to end today.");
    let mut steps = Steps { total: 4, done: 0 };

    steps.next("Install what the appliance needs (Debian packages)");
    setup::run(setup::Mode::Install)?;

    steps.next("Build every crate of the workspace");
    process::run(cargo().args(["build", "--workspace", "--quiet"]))?;
    println!(
        "    built: galen-appliance, galen-devices, galen-recipes, galen-hil, galen-hmi, xtask"
    );

    steps.next("Start the services the appliance leans on, privately, in a temporary directory");
    let services = Services::start()?;
    println!("    software TPM (swtpm)   {}", services.tpm_tcti);
    println!("      answered TPM2_GetRandom with {}", services.tpm_random()?);
    println!("    private D-Bus daemon   {}", services.dbus_address);
    println!("      answered org.freedesktop.DBus.GetId with {}", services.bus_id()?);

    steps.next("Stop everything that was started and remove its files");
    let dir = services.dir().to_path_buf();
    drop(services);
    println!("    stopped swtpm and dbus-daemon; removed {}", dir.display());

    println!(
        "\nWhat ran: the workspace builds, and the TPM and bus that records and the D-Bus API \
         will use start, answer and stop cleanly.\n\
         Not built yet: device drivers and emulators, the simulated unit, recipes and their \
         signing, batch records, the supervisor, the D-Bus API, the touchscreen and the image. \
         Each lands with its issue and joins this demo."
    );
    Ok(())
}
