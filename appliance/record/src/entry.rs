//! One batch-record entry and its canonical bytes.
//!
//! # Format (version 1)
//! An entry's *body* is every field except its position in the chain. Its canonical bytes are
//! the ASCII tag `galen-entry-v1`, then each field in the order of [`EntryBody`] as a 4-byte
//! big-endian length followed by the field's UTF-8 bytes; an absent optional field is the
//! length `0xFFFF_FFFF` and no bytes. Integers are written in decimal, time as RFC 3339 UTC
//! with milliseconds, and `payload` is the exact JSON text stored, never re-serialised.
//!
//! `body_hash = SHA-256(canonical bytes)`, and the chain links bodies by
//! `entry_hash = SHA-256(0x00 ‖ seq as u64 big-endian ‖ prev_hash ‖ body_hash)`.
//!
//! Hashing the body separately (rather than hashing it inline, as a plain chain would) lets an
//! export prove that one batch's entries sit in the sealed chain while listing only the hashes
//! of other patients' entries: the inspector recomputes every link without seeing their data.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::Hash;
use crate::time::UtcMillis;

const TAG: &[u8] = b"galen-entry-v1";
const ABSENT: u32 = u32::MAX;

/// What an entry records. The names are stable: they are stored and exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A batch was created for a patient and recipe.
    BatchCreated,
    /// The batch moved to another state (running, held, complete, …).
    BatchState,
    /// A process setpoint was set (pump rate, heater target, …).
    Setpoint,
    /// A summary of readings over an interval, at the rate the recipe sets.
    ReadingSummary,
    /// An alarm was raised or acknowledged.
    Alarm,
    /// Something a person did at the unit.
    OperatorAction,
    /// A material lot was scanned and checked.
    MaterialScan,
    /// Patient inputs became process parameters; the payload holds the explanation.
    Personalisation,
    /// A deviation from the recipe or the procedure, opened or closed.
    Deviation,
    /// An electronic signature; see [`crate::bundle::SignatureRecord`].
    Signature,
    /// A change to users, roles or configuration, with old and new value and the reason.
    Audit,
    /// A login, a logout, a failed attempt or a lockout.
    Access,
    /// The supervisor itself: start, shutdown, integrity checks, exports.
    System,
}

impl EntryKind {
    /// The stored name, e.g. `reading_summary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BatchCreated => "batch_created",
            Self::BatchState => "batch_state",
            Self::Setpoint => "setpoint",
            Self::ReadingSummary => "reading_summary",
            Self::Alarm => "alarm",
            Self::OperatorAction => "operator_action",
            Self::MaterialScan => "material_scan",
            Self::Personalisation => "personalisation",
            Self::Deviation => "deviation",
            Self::Signature => "signature",
            Self::Audit => "audit",
            Self::Access => "access",
            Self::System => "system",
        }
    }

    /// Every kind, for parsing stored names and for exhaustive tests.
    pub const ALL: [Self; 13] = [
        Self::BatchCreated,
        Self::BatchState,
        Self::Setpoint,
        Self::ReadingSummary,
        Self::Alarm,
        Self::OperatorAction,
        Self::MaterialScan,
        Self::Personalisation,
        Self::Deviation,
        Self::Signature,
        Self::Audit,
        Self::Access,
        Self::System,
    ];

    /// The kind with this stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// The content of an entry: who did what to which object, when, why, with what values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody {
    /// When it happened (the supervisor's UTC clock).
    pub utc: UtcMillis,
    /// The TPM's clock in milliseconds when known: a cross-check on UTC that cannot be set.
    pub tpm_clock_ms: Option<u64>,
    /// The appliance that wrote it.
    pub device_id: String,
    /// The person, if a person acted (`None` for the supervisor itself).
    pub user_id: Option<u64>,
    /// The batch it belongs to, if any.
    pub batch_id: Option<String>,
    pub kind: EntryKind,
    /// What was acted on, e.g. `pump.syringe.rate` or `user:7`.
    pub object: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    /// Why: mandatory for changes that matter to GMP (the store enforces which).
    pub reason: Option<String>,
    /// Structured detail as JSON text (`{}` when there is none).
    pub payload: String,
}

impl EntryBody {
    /// The canonical bytes described in the module documentation.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.payload.len());
        out.extend_from_slice(TAG);
        field(&mut out, Some(&self.utc.to_rfc3339()));
        field(&mut out, self.tpm_clock_ms.map(|c| c.to_string()).as_deref());
        field(&mut out, Some(&self.device_id));
        field(&mut out, self.user_id.map(|u| u.to_string()).as_deref());
        field(&mut out, self.batch_id.as_deref());
        field(&mut out, Some(self.kind.as_str()));
        field(&mut out, Some(&self.object));
        field(&mut out, self.old_value.as_deref());
        field(&mut out, self.new_value.as_deref());
        field(&mut out, self.reason.as_deref());
        field(&mut out, Some(&self.payload));
        out
    }

    /// SHA-256 of the canonical bytes.
    pub fn hash(&self) -> Hash {
        Sha256::digest(self.canonical_bytes()).into()
    }
}

fn field(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        // A field longer than 4 GiB cannot reach here: the store bounds payloads far below.
        Some(v) => {
            let len = u32::try_from(v.len()).unwrap_or(ABSENT - 1);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        None => out.extend_from_slice(&ABSENT.to_be_bytes()),
    }
}

/// An entry in its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    #[serde(flatten)]
    pub body: EntryBody,
    /// `entry_hash` of the previous entry ([`crate::GENESIS`] for the first).
    #[serde(with = "hex_hash")]
    pub prev_hash: Hash,
    #[serde(with = "hex_hash")]
    pub entry_hash: Hash,
}

/// Hashes as hex strings in JSON, as people compare them by eye against sha256sum output.
pub(crate) mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use crate::chain::Hash;

    pub(crate) fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::hex::encode(h))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let text = String::deserialize(d)?;
        crate::hex::decode(&text).ok_or_else(|| D::Error::custom("expected 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn body() -> EntryBody {
        EntryBody {
            utc: UtcMillis(1_795_249_073_120),
            tpm_clock_ms: Some(42),
            device_id: "galen-0001".into(),
            user_id: None,
            batch_id: Some("B-1".into()),
            kind: EntryKind::Setpoint,
            object: "heater.setpoint".into(),
            old_value: None,
            new_value: Some("37.0".into()),
            reason: None,
            payload: "{}".into(),
        }
    }

    #[test]
    fn canonical_bytes_are_length_prefixed_and_mark_absence() {
        let bytes = body().canonical_bytes();
        assert!(bytes.starts_with(b"galen-entry-v1\x00\x00\x00\x18"));
        // user_id is absent: it must not read as an empty string.
        let mut with_empty_user = body();
        with_empty_user.batch_id = Some(String::new());
        assert_ne!(with_empty_user.canonical_bytes(), {
            let mut b = body();
            b.batch_id = None;
            b.canonical_bytes()
        });
    }

    #[test]
    fn moving_text_between_fields_changes_the_hash() {
        let mut a = body();
        a.object = "heater.setpoint37.0".into();
        a.new_value = Some(String::new());
        assert_ne!(a.hash(), body().hash());
    }

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for kind in EntryKind::ALL {
            assert_eq!(EntryKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
