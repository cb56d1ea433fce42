//! `galen-hmi`: the touchscreen app. Connects to `applianced` over D-Bus and runs the window
//! (winit on a desktop; DRM/KMS with the software renderer on the appliance's image).

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use galen_hmi::client::{BUS_NAME, Bus, Client};
use galen_hmi::{AppWindow, Options, view};
use slint::ComponentHandle as _;

/// The Galen touchscreen.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// `system`, `session`, or a D-Bus address (a private bus).
    #[arg(long, default_value = "system", env = "GALEN_BUS")]
    bus: String,
    /// The appliance's bus name.
    #[arg(long, default_value = BUS_NAME)]
    name: String,
    /// Seconds without a touch before the screen locks.
    #[arg(long, default_value_t = view::LOCK_AFTER_S)]
    lock_after: u64,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let bus = Bus::parse(&args.bus);
    let client = rt
        .block_on(Client::connect(&bus, &args.name))
        .with_context(|| format!("connecting to {} on the {} bus", args.name, args.bus))?;
    let ui = AppWindow::new().context("creating the window")?;
    let options = Options { bus, lock_after: Duration::from_secs(args.lock_after) };
    let _running = galen_hmi::init(&ui, client, rt.handle().clone(), options);
    // Under systemd (the appliance's kiosk unit is Type=notify) "ready" means connected to
    // applianced and the event loop turning with the window shown: the timer fires only from
    // inside the loop that paints. The boot test reports this moment and checks the pixels.
    slint::Timer::single_shot(Duration::ZERO, || {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    });
    ui.run().context("running the window")?;
    Ok(())
}
