//! The people at the appliance, working through `galenctl` the way the screen would have them:
//! shared by the demo (galenctl on this machine's private bus) and the image's boot test
//! (galenctl inside the guest, through the test agent).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process;

/// The people the demo and the boot test add: (user, name, role, PIN). Test PINs, printed on
/// purpose; a real unit's people choose their own.
pub(crate) const PEOPLE: [(&str, &str, &str, &str); 4] = [
    ("ada", "Ada Lovelace", "pharmacist", "111111"),
    ("vic", "Victor Second", "verifier", "222222"),
    ("quinn", "Quinn Release", "qa", "333333"),
    ("ida", "Ida Inspector", "inspector", "444444"),
];

/// The patient the demo and the boot test make a batch for (a 35 kg child of 10), for
/// `recipe`, with how the genotype is given (`--lab-file …` or `--phenotype …`).
pub(crate) fn patient<'a>(recipe: &'a str, genotype: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--recipe", recipe, "--patient-id", "P-0001"];
    args.extend(["--weight-kg", "35", "--age-years", "10"]);
    args.extend_from_slice(genotype);
    args
}

/// The pharmacist who runs batches.
pub(crate) const PHARMACIST: &str = "ada";

/// The PIN of one of [`PEOPLE`], or `None` for anybody else.
pub(crate) fn pin_of(user: &str) -> Option<&'static str> {
    PEOPLE.iter().find(|p| p.0 == user).map(|p| p.3)
}

/// What one `galenctl` call printed.
pub(crate) struct Output {
    pub(crate) status: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// `galenctl` somewhere, logged in as one person per call.
pub(crate) trait Galenctl {
    /// Runs `galenctl <args>` as `user`, with `env` set (e.g. `GALEN_NEW_PIN`).
    fn run(&mut self, user: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Output>;

    /// How a path or text is shown to the reader (the demo shortens the checkout's path).
    fn tidy(&self, text: &str) -> String {
        text.to_owned()
    }

    /// Runs a command and returns its standard output; a failure carries what it said.
    fn output(&mut self, user: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
        let out = self.run(user, args, env)?;
        if out.status != 0 {
            bail!(
                "`galenctl -u {user} {}` failed (exit {}): {}",
                args.join(" "),
                out.status,
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }

    /// Runs a command as typed at a shell, and shows it with its output.
    fn show(&mut self, user: &str, args: &[&str]) -> Result<String> {
        self.show_with(user, args, &[])
    }

    fn show_with(&mut self, user: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
        let typed: Vec<String> = args
            .iter()
            .map(|a| if a.contains(' ') { format!("{a:?}") } else { (*a).to_owned() })
            .collect();
        println!("    $ galenctl -u {user} {}", self.tidy(&typed.join(" ")));
        let out = self.output(user, args, env)?;
        for line in out.lines() {
            println!("      {}", self.tidy(line));
        }
        Ok(out)
    }

    /// Runs a command with `--json` and returns what it printed.
    fn json(&mut self, user: &str, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.output(user, &all, &[])?;
        serde_json::from_str(&out)
            .with_context(|| format!("galenctl {} printed {out:?}", args.join(" ")))
    }

    /// `batch watch --until-operator`: returns once the operator has something to do or the
    /// batch has ended.
    fn watch(&mut self, user: &str, id: &str) -> Result<Value> {
        let out = self.run(user, &["batch", "watch", id, "--until-operator", "--json"], &[])?;
        // Exit 5: the batch ended other than Complete; its state says how.
        serde_json::from_str(&out.stdout).with_context(|| {
            format!(
                "galenctl batch watch (exit {}) printed {:?}; {}",
                out.status,
                out.stdout,
                out.stderr.trim()
            )
        })
    }

    /// Polls the unit until `done` holds, up to `within`.
    fn wait(
        &mut self,
        user: &str,
        within: Duration,
        done: &dyn Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let status = self.json(user, &["status"])?;
            if done(&status) || Instant::now() > deadline {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The administrator `admin` adds [`PEOPLE`].
pub(crate) fn add_people(ctl: &mut dyn Galenctl, admin: &str) -> Result<()> {
    for (user, name, role, pin) in PEOPLE {
        ctl.show_with(
            admin,
            &["users", "add", user, "--name", name, "--role", role, "--reason", "new staff"],
            &[("GALEN_NEW_PIN", pin)],
        )?;
    }
    Ok(())
}

/// Material lots the operator scans: (material, lot). Anything else scans as `LOT-1`.
const LOTS: [(&str, &str); 2] = [("azathioprine", "AZA-2291"), ("vehicle", "ORA-77")];

/// Does what the unit asks of the pharmacist until the batch is Complete: scans the labels,
/// weighs a powder onto the balance by hand (`hands(material, grams)`: the rig's console, as
/// the person at the unit would), confirms the cleaning.
pub(crate) fn operate(
    ctl: &mut dyn Galenctl,
    id: &str,
    hands: &mut dyn FnMut(&str, &str) -> Result<()>,
) -> Result<()> {
    let user = PHARMACIST;
    loop {
        let w = ctl.watch(user, id)?;
        let state = w["state"].as_str().unwrap_or_default();
        let instruction = w["instruction"].as_str().unwrap_or_default().to_owned();
        match state {
            "Complete" => {
                println!("    {id} is Complete");
                return Ok(());
            }
            "Running" => {}
            other => {
                ctl.show(user, &["status"])?;
                bail!("the batch stopped as {other}: {instruction}");
            }
        }
        println!("    the screen says: {instruction}");
        if let Some(rest) = instruction.strip_prefix("Scan the ") {
            let material = rest.split_whitespace().next().unwrap_or_default();
            let lot = LOTS.iter().find(|l| l.0 == material).map_or("LOT-1", |l| l.1);
            act(ctl, &instruction, &["batch", "scan", id, material, lot, "2030-12-31"])?;
        } else if let Some(rest) = instruction.strip_prefix("Add ") {
            // "Add 0.490 g of azathioprine onto the balance ..."
            let mut words = rest.split_whitespace();
            let grams = words.next().unwrap_or_default();
            let material = words.nth(2).unwrap_or_default();
            println!("    (the pharmacist weighs {grams} g of {material} into the vessel)");
            hands(material, grams)?;
            // A confirm while the pan still moves is refused: wait, as the screen says, and
            // confirm again.
            for _ in 0..5 {
                ctl.wait(user, Duration::from_secs(20), &|s| s["stable"] == true)?;
                match act(ctl, &instruction, &["batch", "confirm", id])? {
                    None => break,
                    Some(n) if n.contains("stable") => std::thread::sleep(Duration::from_secs(1)),
                    Some(n) => bail!("the hand addition was refused: {n}"),
                }
            }
        } else {
            println!("    (the pharmacist does it)");
            act(ctl, &instruction, &["batch", "confirm", id])?;
        }
    }
}

/// Does one operator action and waits until the batch has taken it in (the instruction moves
/// on), so the next watch sees the next step. Returns the refusal, if it was refused.
fn act(ctl: &mut dyn Galenctl, instruction: &str, args: &[&str]) -> Result<Option<String>> {
    let user = PHARMACIST;
    let before = ctl.json(user, &["status"])?["notice"].clone();
    ctl.show(user, args)?;
    let s = ctl.wait(user, Duration::from_secs(10), &|s| {
        s["instruction"].as_str() != Some(instruction) || s["notice"] != before
    })?;
    match s["notice"].as_str().filter(|n| !n.is_empty()) {
        Some(notice) if s["instruction"].as_str() == Some(instruction) => {
            println!("    refused: {notice}");
            Ok(Some(notice.to_owned()))
        }
        _ => Ok(None),
    }
}

/// Runs the `  $ ` commands of VERIFY.txt in the bundle and checks each against its `expect:`.
pub(crate) fn follow_verify_txt(bundle: &Path) -> Result<()> {
    let text = std::fs::read_to_string(bundle.join("VERIFY.txt")).context("reading VERIFY.txt")?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(command) = line.strip_prefix("  $ ") else { continue };
        let expect = lines.next().and_then(|l| l.trim().strip_prefix("expect: ")).unwrap_or("");
        let got = process::output(Command::new("sh").arg("-c").arg(command).current_dir(bundle))?;
        let got = got.trim();
        // The fingerprint is compared by a person against the commissioning record.
        let ok = got == expect || expect.starts_with("the fingerprint");
        println!("      $ {command}");
        println!("        {got}{}", if ok { "" } else { "   <-- UNEXPECTED" });
        if !ok {
            bail!("VERIFY.txt step `{command}` printed {got:?}, expected {expect:?}");
        }
    }
    Ok(())
}
