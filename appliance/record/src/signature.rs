//! Electronic signatures (21 CFR 11.50, 11.70): the manifestation a person sees and the
//! binding that ties a signature to exactly what was signed.
//!
//! A signature is an entry of kind `signature` whose payload is a [`SignatureRecord`]. It signs
//! one entry of the chain by `(seq, entry_hash)`; since every entry hash commits to all entries
//! before it, signing the batch's last entry signs the batch as it stood. The binding hash
//! `SHA-256("galen-signature-v1" ‖ fields…)` (length-prefixed like entries) makes a signature
//! unusable on any other record: change the batch, the signed entry, the signer, the meaning
//! or the time and the binding no longer matches.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::Hash;
use crate::time::UtcMillis;

/// What the signer means by signing (11.50(a)(3)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Meaning {
    /// The person who did the work attests to it.
    Authored,
    /// A second person checked a critical entry.
    Verified,
    /// QA reviewed the batch record.
    Reviewed,
    /// QA released the batch for the patient.
    Released,
    /// QA activated a recipe revision for use.
    Activated,
}

impl Meaning {
    /// The words shown next to the signature.
    pub fn as_words(self) -> &'static str {
        match self {
            Self::Authored => "Performed by",
            Self::Verified => "Verified by (second person)",
            Self::Reviewed => "Reviewed by",
            Self::Released => "Released by",
            Self::Activated => "Activated by",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Authored => "authored",
            Self::Verified => "verified",
            Self::Reviewed => "reviewed",
            Self::Released => "released",
            Self::Activated => "activated",
        }
    }
}

/// A signature as recorded: the manifestation plus the binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord {
    pub signer_id: u64,
    /// The signer's full printed name at the time of signing.
    pub printed_name: String,
    pub meaning: Meaning,
    pub utc: UtcMillis,
    /// The batch (or recipe revision) signed.
    pub subject: String,
    /// The entry whose hash is signed.
    pub signed_seq: u64,
    #[serde(with = "crate::entry::hex_hash")]
    pub signed_entry_hash: Hash,
    /// [`binding`] of the fields above.
    #[serde(with = "crate::entry::hex_hash")]
    pub binding: Hash,
}

impl SignatureRecord {
    /// A record whose binding is computed from its fields.
    pub fn new(
        signer_id: u64,
        printed_name: String,
        meaning: Meaning,
        utc: UtcMillis,
        subject: String,
        signed_seq: u64,
        signed_entry_hash: Hash,
    ) -> Self {
        let mut record = Self {
            signer_id,
            printed_name,
            meaning,
            utc,
            subject,
            signed_seq,
            signed_entry_hash,
            binding: [0; 32],
        };
        record.binding = binding(&record);
        record
    }

    /// True if the binding matches the fields.
    pub fn is_bound(&self) -> bool {
        binding(self) == self.binding
    }

    /// The manifestation: printed name, UTC time and meaning, as shown and printed.
    pub fn manifestation(&self) -> String {
        format!("{} {} at {}", self.meaning.as_words(), self.printed_name, self.utc)
    }
}

/// The binding hash over every field that gives the signature its meaning.
pub fn binding(r: &SignatureRecord) -> Hash {
    let mut h = Sha256::new();
    h.update(b"galen-signature-v1");
    for part in [
        r.signer_id.to_string().as_bytes(),
        r.printed_name.as_bytes(),
        r.meaning.as_str().as_bytes(),
        r.utc.to_rfc3339().as_bytes(),
        r.subject.as_bytes(),
        r.signed_seq.to_string().as_bytes(),
        &r.signed_entry_hash,
    ] {
        // Lengths of names and ids are far below 4 GiB.
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        h.update(len.to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SignatureRecord {
        SignatureRecord::new(
            7,
            "Ada Pharmacist".into(),
            Meaning::Released,
            UtcMillis(1_795_249_073_120),
            "B-1".into(),
            41,
            [9; 32],
        )
    }

    #[test]
    fn a_signature_moved_to_another_record_no_longer_binds() {
        assert!(record().is_bound());
        let mut copied = record();
        copied.subject = "B-2".into();
        assert!(!copied.is_bound());
        let mut other_entry = record();
        other_entry.signed_entry_hash = [8; 32];
        assert!(!other_entry.is_bound());
        let mut other_meaning = record();
        other_meaning.meaning = Meaning::Reviewed;
        assert!(!other_meaning.is_bound());
    }

    #[test]
    fn manifestation_shows_name_time_and_meaning() {
        assert_eq!(
            record().manifestation(),
            "Released by Ada Pharmacist at 2026-11-21T08:17:53.120Z"
        );
    }
}
