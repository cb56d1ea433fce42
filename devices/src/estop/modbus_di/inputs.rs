//! The pure part of the digital-input module: which input carries the E-stop contact and how
//! its level reads. The Modbus framing itself is tokio-modbus's.

use crate::estop::EstopState;

/// How the monitoring contact is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact {
    /// Closed (input on) while released; pressing, or a broken wire, opens it. The safe choice
    /// and the default: a fault reads as pressed.
    NormallyClosed,
    /// Open while released. Accepted for modules wired that way, but a broken wire then reads
    /// as released, so the unit file must say so explicitly.
    NormallyOpen,
}

/// Reading more inputs than the configured one answers nothing new; one is enough.
pub const INPUTS_READ: u16 = 1;

/// The E-stop state from the module's reply to Read Discrete Inputs for `INPUTS_READ` inputs
/// starting at the configured one; `None` when the reply holds no input (a malformed reply).
pub fn decode(bits: &[bool], contact: Contact) -> Option<EstopState> {
    let on = *bits.first()?;
    let pressed = match contact {
        Contact::NormallyClosed => !on,
        Contact::NormallyOpen => on,
    };
    Some(if pressed { EstopState::Pressed } else { EstopState::Released })
}

/// The input level the contact gives for `state`: what an emulated module reports.
pub fn level(state: EstopState, contact: Contact) -> bool {
    let pressed = state == EstopState::Pressed;
    match contact {
        Contact::NormallyClosed => !pressed,
        Contact::NormallyOpen => pressed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_normally_closed_contact_reads_open_as_pressed_and_levels_round_trip() {
        use Contact::*;
        use EstopState::*;
        assert_eq!(decode(&[true], NormallyClosed), Some(Released));
        assert_eq!(decode(&[false], NormallyClosed), Some(Pressed));
        assert_eq!(decode(&[true], NormallyOpen), Some(Pressed));
        assert_eq!(decode(&[false], NormallyOpen), Some(Released));
        assert_eq!(decode(&[], NormallyClosed), None);
        for contact in [NormallyClosed, NormallyOpen] {
            for state in [Released, Pressed] {
                assert_eq!(decode(&[level(state, contact)], contact), Some(state));
            }
        }
    }
}
