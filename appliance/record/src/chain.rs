//! The hash chain over record entries, and finding the first entry that breaks it.
//!
//! See [`crate::entry`] for the link formula. Verification is incremental so that the store
//! can check millions of entries streamed from SQLite, and the verifier an export, with the
//! same code and constant memory.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev_hash` of the first entry.
pub const GENESIS: Hash = [0; 32];

/// `SHA-256(0x00 ‖ seq ‖ prev_hash ‖ body_hash)`.
pub fn link(seq: u64, prev_hash: &Hash, body_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(seq.to_be_bytes());
    h.update(prev_hash);
    h.update(body_hash);
    h.finalize().into()
}

/// Why the chain is broken, naming the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainError {
    #[error(
        "entry {found}: expected entry {expected} here; an entry is missing, duplicated or out of order"
    )]
    Sequence { expected: u64, found: u64 },
    #[error(
        "entry {seq}: does not follow the entry before it; entries were removed, inserted or swapped"
    )]
    BrokenLink { seq: u64 },
    #[error("entry {seq}: its content does not match its hash; the entry was altered")]
    Altered { seq: u64 },
    #[error("entry {seq}: its MAC is wrong; it was not written by this appliance's sealed key")]
    BadMac { seq: u64 },
}

impl ChainError {
    /// The sequence number of the first bad entry.
    pub fn seq(&self) -> u64 {
        match *self {
            Self::Sequence { found, .. } => found,
            Self::BrokenLink { seq } | Self::Altered { seq } | Self::BadMac { seq } => seq,
        }
    }
}

/// Walks a chain from its first entry, one entry at a time.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: u64,
    head: Hash,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self { next_seq: 1, head: GENESIS }
    }
}

impl ChainVerifier {
    /// Checks the next entry: its position, its link to the previous one, and that its stored
    /// `entry_hash` is what its (recomputed) `body_hash` gives.
    pub fn push(
        &mut self,
        seq: u64,
        prev_hash: &Hash,
        body_hash: &Hash,
        entry_hash: &Hash,
    ) -> Result<(), ChainError> {
        if seq != self.next_seq {
            return Err(ChainError::Sequence { expected: self.next_seq, found: seq });
        }
        if *prev_hash != self.head {
            return Err(ChainError::BrokenLink { seq });
        }
        if link(seq, prev_hash, body_hash) != *entry_hash {
            return Err(ChainError::Altered { seq });
        }
        self.head = *entry_hash;
        self.next_seq += 1;
        Ok(())
    }

    /// How many entries have been verified.
    pub fn count(&self) -> u64 {
        self.next_seq - 1
    }

    /// The `entry_hash` of the last verified entry ([`GENESIS`] if none).
    pub fn head(&self) -> Hash {
        self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `n` entries whose bodies hash to `[i; 32]`.
    fn chain(n: u8) -> Vec<(u64, Hash, Hash, Hash)> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|i| {
                let body = [i; 32];
                let seq = u64::from(i);
                let hash = link(seq, &prev, &body);
                let row = (seq, prev, body, hash);
                prev = hash;
                row
            })
            .collect()
    }

    fn check(rows: &[(u64, Hash, Hash, Hash)]) -> Result<u64, ChainError> {
        let mut v = ChainVerifier::default();
        for (seq, prev, body, hash) in rows {
            v.push(*seq, prev, body, hash)?;
        }
        Ok(v.count())
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(check(&chain(5)), Ok(5));
    }

    #[test]
    fn each_kind_of_damage_names_the_first_bad_entry() {
        let mut altered = chain(5);
        altered[2].2[0] ^= 1;
        assert_eq!(check(&altered), Err(ChainError::Altered { seq: 3 }));

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(check(&deleted), Err(ChainError::Sequence { expected: 2, found: 3 }));

        // Swapping two rows and renumbering them, as someone hiding the swap would.
        let mut swapped = chain(5);
        swapped.swap(1, 2);
        swapped[1].0 = 2;
        swapped[2].0 = 3;
        assert_eq!(check(&swapped), Err(ChainError::BrokenLink { seq: 2 }));
    }
}
