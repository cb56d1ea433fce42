//! The batch's ISA-88 state machine: which states exist and which commands move between them.
//!
//! The transient states (Holding, Restarting, Stopping, Aborting) are left only when the runtime
//! reports that their work is done ([`Command::Settled`]): for Holding, that pumps are stopped
//! and the heater is off. A batch never reaches Held while something may still be moving.
//! Terminal states (Complete, Stopped, Aborted) accept nothing: a new batch is a new machine.

use serde::{Deserialize, Serialize};

/// Where a batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Idle,
    Running,
    Holding,
    Held,
    Restarting,
    Stopping,
    Stopped,
    Aborting,
    Aborted,
    Complete,
}

/// What moves a batch between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// An operator starts an idle batch.
    Start,
    /// An operator, or the safety monitor, holds a running batch.
    Hold,
    /// An operator resumes a held batch.
    Restart,
    /// An operator ends the batch early but orderly (product kept for QA).
    Stop,
    /// An operator ends the batch at once (product discarded).
    Abort,
    /// The runtime reports that a transient state's work is done.
    Settled,
    /// The last phase finished.
    Finished,
}

impl State {
    /// Every state, for exhaustive tests and documentation.
    pub const ALL: [Self; 10] = [
        Self::Idle,
        Self::Running,
        Self::Holding,
        Self::Held,
        Self::Restarting,
        Self::Stopping,
        Self::Stopped,
        Self::Aborting,
        Self::Aborted,
        Self::Complete,
    ];

    /// Whether the batch has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Complete | Self::Stopped | Self::Aborted)
    }

    /// Whether pumps and heater may be driven by the phase controllers.
    pub fn drives_outputs(self) -> bool {
        matches!(self, Self::Running)
    }
}

impl Command {
    pub const ALL: [Self; 7] = [
        Self::Start,
        Self::Hold,
        Self::Restart,
        Self::Stop,
        Self::Abort,
        Self::Settled,
        Self::Finished,
    ];
}

/// `state` cannot take `command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a batch that is {state:?} cannot {command:?}")]
pub struct Illegal {
    pub state: State,
    pub command: Command,
}

/// The transition table. Exhaustive on both sides, so a new state or command does not compile
/// until someone decides what it does everywhere.
pub fn next(state: State, command: Command) -> Result<State, Illegal> {
    use Command as C;
    use State as S;
    let to = match (state, command) {
        (S::Idle, C::Start) => S::Running,
        (S::Idle, C::Abort) => S::Aborted,
        (S::Running, C::Hold) => S::Holding,
        (S::Running, C::Finished) => S::Complete,
        (S::Holding, C::Settled) => S::Held,
        (S::Held, C::Restart) => S::Restarting,
        (S::Restarting, C::Settled) => S::Running,
        // A fault while restarting holds again.
        (S::Restarting, C::Hold) => S::Holding,
        (S::Running | S::Holding | S::Held | S::Restarting, C::Stop) => S::Stopping,
        (S::Stopping, C::Settled) => S::Stopped,
        (S::Running | S::Holding | S::Held | S::Restarting | S::Stopping, C::Abort) => S::Aborting,
        (S::Aborting, C::Settled) => S::Aborted,
        (
            S::Idle
            | S::Running
            | S::Holding
            | S::Held
            | S::Restarting
            | S::Stopping
            | S::Stopped
            | S::Aborting
            | S::Aborted
            | S::Complete,
            C::Start | C::Hold | C::Restart | C::Stop | C::Abort | C::Settled | C::Finished,
        ) => return Err(Illegal { state, command }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_transition_table() {
        let mut table = String::new();
        for s in State::ALL {
            let moves: Vec<String> = Command::ALL
                .iter()
                .filter_map(|c| next(s, *c).ok().map(|to| format!("{c:?} -> {to:?}")))
                .collect();
            table.push_str(&format!(
                "{s:?}: {}\n",
                if moves.is_empty() { "(none)".into() } else { moves.join(", ") }
            ));
        }
        insta::assert_snapshot!(table);
    }

    #[test]
    fn terminal_states_take_nothing() {
        for s in State::ALL.into_iter().filter(|s| s.is_terminal()) {
            for c in Command::ALL {
                assert_eq!(next(s, c), Err(Illegal { state: s, command: c }));
            }
        }
    }

    #[test]
    fn every_non_terminal_state_can_be_aborted_or_is_already_aborting() {
        for s in State::ALL.into_iter().filter(|s| !s.is_terminal()) {
            let aborted = next(s, Command::Abort);
            assert!(
                matches!(aborted, Ok(State::Aborting | State::Aborted)) || s == State::Aborting,
                "{s:?} cannot be aborted: {aborted:?}"
            );
        }
    }

    #[test]
    fn only_running_drives_outputs_and_held_is_reached_only_after_settling() {
        assert_eq!(State::ALL.iter().filter(|s| s.drives_outputs()).count(), 1);
        assert_eq!(next(State::Running, Command::Hold), Ok(State::Holding));
        assert!(next(State::Holding, Command::Restart).is_err(), "cannot restart before safe");
        assert_eq!(next(State::Holding, Command::Settled), Ok(State::Held));
    }
}
