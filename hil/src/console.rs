//! The console of `hil rig`: commands typed on stdin while the rig runs — by an engineer, or by
//! `cargo xtask demo` playing the pharmacist's hand — parsed purely into rig actions, and the
//! one line each gets back.
//!
//! # Grammar
//! One command per line, words separated by blanks:
//! ```text
//! add <material> <grams>   weigh a solid into the vessel on the balance by hand
//! unplug <device>          pull a device's cable: its port vanishes
//! replug <device>          plug it back in: a fresh pty behind the same link
//! estop press|release      push the emergency stop in, or pull it back out
//! status                   the plant's state now
//! help                     the commands
//! ```
//! `<material>` is 1 to 64 letters, digits, '-' or '_' and not one of the plant's liquids;
//! `<grams>` is a decimal number above 0 and at most the balance's capacity; `<device>` is
//! `balance`, `syringe`, `peristaltic`, `heater` or `estop`.
//!
//! Every line that is not blank gets exactly one answer line: `ok <what was done>`, or
//! `error: <why>` when nothing was done. Blank lines get none. On stdout, answers are the lines
//! that begin with `ok` or `error:`; the rig's log lines begin otherwise.

use crate::rig::{Injection, Rig};

/// The grammar, for `hil rig --help`.
pub const HELP: &str = "\
Commands on stdin, one per line (each answered by one line, `ok ...` or `error: ...`):
  add <material> <grams>   weigh a solid into the vessel on the balance by hand,
                           e.g. `add azathioprine 1.4`
  unplug <device>          pull a device's cable: its port vanishes
  replug <device>          plug it back in: a fresh pty behind the same link
  estop press|release      push the emergency stop in (the actuators lose power), or pull
                           it back out (nothing restarts by itself)
  status                   the plant's state now
  help                     the commands
Devices: balance, syringe, peristaltic, heater, estop. End of input leaves the rig running.";

/// The commands on one line, for the `help` answer.
const SUMMARY: &str = "commands: add <material> <grams>, unplug <device>, replug <device>, estop press|release, \
     status, help";

/// A parsed console command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Something done to the unit.
    Inject(Injection),
    /// Report the plant's state.
    Status,
    /// List the commands.
    Help,
}

/// A line that is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The first word names no command.
    #[error("unknown command `{0}` ({SUMMARY})")]
    Unknown(String),
    /// A known command with the wrong words after it.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// The mass does not parse as a number.
    #[error("`{0}` is not a number of grams")]
    Grams(String),
}

/// Parses one line: `Ok(None)` for a blank one (pure).
pub fn parse(line: &str) -> Result<Option<Command>, CommandError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&command, args)) = words.split_first() else { return Ok(None) };
    let command = match (command, args) {
        ("add", [material, grams]) => {
            let grams = grams.parse().map_err(|_| CommandError::Grams((*grams).to_owned()))?;
            Command::Inject(Injection::HandAddition { material: (*material).to_owned(), grams })
        }
        ("add", _) => return Err(CommandError::Usage("add <material> <grams>")),
        ("unplug", [device]) => Command::Inject(Injection::Unplug((*device).to_owned())),
        ("unplug", _) => return Err(CommandError::Usage("unplug <device>")),
        ("replug", [device]) => Command::Inject(Injection::Replug((*device).to_owned())),
        ("replug", _) => return Err(CommandError::Usage("replug <device>")),
        ("estop", ["press"]) => Command::Inject(Injection::EmergencyStop(true)),
        ("estop", ["release"]) => Command::Inject(Injection::EmergencyStop(false)),
        ("estop", _) => return Err(CommandError::Usage("estop press|release")),
        ("status", []) => Command::Status,
        ("status", _) => return Err(CommandError::Usage("status")),
        ("help", _) => Command::Help,
        (other, _) => return Err(CommandError::Unknown(other.to_owned())),
    };
    Ok(Some(command))
}

/// Carries out one line on `rig` and returns its answer; `None` for a blank line.
pub fn answer(rig: &Rig, line: &str) -> Option<String> {
    let command = match parse(line) {
        Ok(Some(command)) => command,
        Ok(None) => return None,
        Err(e) => return Some(format!("error: {e}")),
    };
    Some(match command {
        Command::Inject(injection) => {
            let done = match &injection {
                Injection::Unplug(d) => format!("{d} unplugged"),
                Injection::Replug(d) => format!("{d} plugged back in"),
                other => other.to_string(),
            };
            match rig.inject(injection) {
                Ok(()) => format!("ok {done}"),
                Err(e) => format!("error: {e}"),
            }
        }
        Command::Status => {
            let s = rig.plant().snapshot();
            format!(
                "ok plant {:.2} s: balance senses {:.3} g; vessel holds {:.3} g liquid and \
                 {:.3} g solids at {:.1} °C; heater {:.1} W",
                s.t_s,
                s.balance_g,
                s.vessel_liquid_g,
                s.vessel_solids_g,
                s.vessel_temp_c,
                s.heater_w
            )
        }
        Command::Help => format!("ok {SUMMARY}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str) -> String {
        match parse(line) {
            Ok(Some(c)) => format!("{line:?} → {c:?}"),
            Ok(None) => format!("{line:?} → nothing"),
            Err(e) => format!("{line:?} → error: {e}"),
        }
    }

    #[test]
    fn console_lines_parse_or_say_why_not() {
        let lines = [
            "add azathioprine 1.4",
            "  add\tlactose   0.25  ",
            "add azathioprine",
            "add azathioprine 1,4",
            "add azathioprine 1.4 g",
            "unplug balance",
            "replug heater",
            "estop press",
            "estop release",
            "estop",
            "estop push",
            "unplug",
            "status",
            "status now",
            "help me",
            "",
            "   ",
            "weigh azathioprine 1.4",
        ];
        insta::assert_snapshot!(lines.map(check).join("\n"));
    }
}
