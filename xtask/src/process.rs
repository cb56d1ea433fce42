//! Child processes started by xtask, tracked so that a failure or Ctrl-C never leaves one behind.
//!
//! Every child is spawned through [`spawn`], which records its pid. The interrupt handler
//! (SIGINT, SIGTERM, SIGHUP) sends SIGTERM to every tracked child and raises a flag; the code
//! waiting on a child then sees [`interrupted`] and unwinds normally, so `Drop` impls remove
//! temporary directories as they would on any other error.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Tracked children; a negative entry is a process group (a child that leads its own).
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler that stops tracked children on Ctrl-C, SIGTERM or SIGHUP.
pub(crate) fn install_interrupt_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        let pids = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    })
    .context("installing the Ctrl-C handler")
}

/// True once the user asked xtask to stop.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with a clear message if the user interrupted us.
pub(crate) fn bail_if_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted; stopped every process xtask had started");
    }
    Ok(())
}

/// A running child that is stopped (SIGTERM, then SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Tracked {
    child: Child,
    what: String,
    /// The child leads its own process group, and signals go to the whole group.
    group: bool,
}

/// Starts `cmd` and tracks it until the returned handle is dropped.
pub(crate) fn spawn(cmd: &mut Command) -> Result<Tracked> {
    spawn_tracked(cmd, false)
}

fn spawn_tracked(cmd: &mut Command, group: bool) -> Result<Tracked> {
    bail_if_interrupted()?;
    let what = display(cmd);
    if group {
        cmd.process_group(0);
    }
    let child = cmd.spawn().with_context(|| format!("starting `{what}`"))?;
    let t = Tracked { child, what, group };
    CHILDREN.lock().expect("child registry poisoned").push(t.target());
    Ok(t)
}

/// Runs `cmd` in its own process group to completion, and stops the whole group (cargo and
/// the test binaries it started) if it is still running after `limit`: a stuck test then
/// fails the run in bounded time with its name on screen, instead of hanging CI.
pub(crate) fn run_with_deadline(cmd: &mut Command, limit: Duration) -> Result<()> {
    let mut child = spawn_tracked(cmd, true)?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            child.stop();
            bail!(
                "`{}` was still running after {} min and was stopped; the test cargo reported \
                 as \"running for over 60 seconds\" above is the one that hangs",
                child.what,
                limit.as_secs() / 60
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    bail_if_interrupted()?;
    if !status.success() {
        bail!("`{}` failed ({status})", child.what);
    }
    Ok(())
}

/// Runs `cmd` to completion and fails, naming the command, unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let mut child = spawn(cmd)?;
    let status = child.wait()?;
    bail_if_interrupted()?;
    if !status.success() {
        bail!("`{}` failed ({status})", child.what);
    }
    Ok(())
}

/// Runs `cmd`, capturing stdout, and fails with its stderr unless it exits 0.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    bail_if_interrupted()?;
    let what = display(cmd);
    let out = cmd.output().with_context(|| format!("running `{what}`"))?;
    if !out.status.success() {
        bail!("`{what}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{what}` printed invalid UTF-8"))
}

impl Tracked {
    /// Waits for the child to exit on its own.
    pub(crate) fn wait(&mut self) -> Result<ExitStatus> {
        self.child.wait().with_context(|| format!("waiting for `{}`", self.what))
    }

    /// The child's exit status if it has already exited.
    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().with_context(|| format!("checking on `{}`", self.what))
    }

    pub(crate) fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Asks the child to stop, and kills it if it has not stopped within two seconds.
    pub(crate) fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// The pid to signal: negative for a process group.
    fn target(&self) -> i32 {
        let pid = i32::try_from(self.child.id()).expect("pids fit in i32");
        if self.group { -pid } else { pid }
    }

    fn signal(&self, sig: Signal) {
        // The child may already be gone; there is nothing useful to do about ESRCH.
        let _ = kill(Pid::from_raw(self.target()), sig);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.stop();
        let target = self.target();
        if let Ok(mut children) = CHILDREN.lock() {
            children.retain(|&pid| pid != target);
        }
    }
}

/// The command as a person would type it, for messages.
pub(crate) fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.contains(' ') || arg.is_empty() {
            let _ = write!(s, " '{arg}'");
        } else {
            let _ = write!(s, " {arg}");
        }
    }
    s
}
