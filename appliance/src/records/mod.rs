//! The batch-record store: the only code that opens the record database, and its single writer.
//!
//! Every entry is appended to a hash chain (format in `galen_record::entry`), MACed with a key
//! sealed by the TPM, and committed durably (WAL, `synchronous=FULL`) before `append` returns.
//! Checkpoints, signed inside the TPM, are taken at each e-signature, batch end, shutdown,
//! export and every [`CHECKPOINT_EVERY`] entries.
//!
//! # Checkpoint order and rollback detection
//! A checkpoint is quoted by the TPM for counter value `c + 1` (where `c` is the TPM's NV
//! counter now), committed to the database, and only then is the counter incremented. So at
//! start the database's last checkpoint counter `d` and the TPM's counter `t` stand in one of
//! three relations:
//! - `d == t`: consistent.
//! - `d == t + 1`: the power failed between commit and increment; the increment is completed
//!   and a system entry says so. Only this appliance's TPM key can have produced that
//!   checkpoint, so this cannot be forged by restoring a file.
//! - anything else: the database was rolled back, restored from an older copy, truncated, or
//!   belongs to another TPM. New batches are refused and an alarm entry is written; nothing is
//!   deleted.
//!
//! **Lifetime:** opened once by `applianced` at start, closed at shutdown after a final
//! checkpoint. **Concurrency:** one owner; not `Sync`. Callers on async tasks send it work
//! through a channel or `spawn_blocking`.

mod pdf;
pub mod schema;
pub mod users;

use std::path::{Path, PathBuf};

use galen_record::bundle::{self, ChainRow, Export};
use galen_record::chain::{ChainError, ChainVerifier, GENESIS, Hash, link};
use galen_record::checkpoint::{self, SignedCheckpoint, Statement};
use galen_record::signature::{Meaning, SignatureRecord};
use galen_record::{Entry, EntryBody, EntryKind, UtcMillis};
use hmac::{Hmac, KeyInit as _, Mac as _};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use rusqlite::{Connection, OptionalExtension as _, Row, TransactionBehavior, params};
use sha2::Sha256;

use crate::tpm::{MacKey, Tpm, TpmError};
use schema::SchemaError;
use users::{Action, AuthError, Policy, Role, Session, User};

/// Entries between periodic checkpoints. Each checkpoint increments a TPM NV counter, whose
/// writes wear and are rate-limited, so this is a balance between the window a crash leaves
/// unsealed and the TPM's endurance.
pub const CHECKPOINT_EVERY: u64 = 500;

/// Largest payload accepted, so one entry cannot bloat the database or an export.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest text field (object, values, reason).
pub const MAX_FIELD: usize = 4 * 1024;

/// The time of an event, as the runtime knows it. The store reads no clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub utc: UtcMillis,
    /// The TPM clock, if the runtime tracks it (from the last checkpoint's attested clock).
    pub tpm_clock_ms: Option<u64>,
}

impl At {
    pub fn utc(utc: UtcMillis) -> Self {
        Self { utc, tpm_clock_ms: None }
    }
}

/// An entry to append. `reason` is mandatory for audit entries (Annex 11 §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub user_id: Option<u64>,
    pub batch_id: Option<String>,
    pub kind: EntryKind,
    pub object: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub reason: Option<String>,
    pub payload: serde_json::Value,
}

impl NewEntry {
    /// An entry with no values, reason or payload.
    pub fn new(kind: EntryKind, object: impl Into<String>) -> Self {
        Self {
            user_id: None,
            batch_id: None,
            kind,
            object: object.into(),
            old_value: None,
            new_value: None,
            reason: None,
            payload: serde_json::Value::Object(serde_json::Map::new()),
        }
    }
}

/// A batch the supervisor was running when it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub batch_id: String,
    /// Its last recorded state.
    pub state: String,
    /// The phase that had started and not finished.
    pub phase: Option<String>,
}

/// The reason recovery gives when it holds a batch at start; a batch whose last state entry
/// carries it has been recovered from that restart already.
pub const RESTART_REASON: &str = "supervisor restart";

/// The state of the records after the start-up check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    Sound,
    /// Records are kept, but no new batch may start until someone investigates.
    Compromised(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("no record database at {}; the appliance must be commissioned first", .0.display())]
    Missing(PathBuf),
    #[error("a record database already exists at {}; commissioning never overwrites records", .0.display())]
    Exists(PathBuf),
    #[error("record database {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("record database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the record database failed SQLite's integrity check: {0}")]
    Corrupt(String),
    #[error("records are damaged: {0}")]
    Chain(#[from] ChainError),
    #[error("checkpoint {id} is damaged: {why}")]
    Checkpoint { id: i64, why: String },
    #[error(transparent)]
    Tpm(#[from] TpmError),
    #[error("records failed the start-up check and new batches are refused: {0}")]
    Compromised(String),
    #[error("{field} is too long: {len} bytes, at most {max}")]
    TooLarge { field: &'static str, len: usize, max: usize },
    #[error("a reason is required for {0}")]
    ReasonRequired(&'static str),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("there is already a user named {0:?}")]
    UserExists(String),
    #[error(transparent)]
    NewUser(#[from] users::NewUserError),
    #[error("user {0}'s account differs from what its audit trail records; it was altered")]
    UserTampered(u64),
    #[error("no user with id {0}")]
    NoSuchUser(u64),
    #[error("batch {0} has no entries")]
    NoSuchBatch(String),
    #[error("the stored entry {0} cannot be read back: {1}")]
    Stored(u64, String),
}

/// The record store with its TPM.
#[derive(Debug)]
pub struct RecordStore {
    conn: Connection,
    tpm: Tpm,
    mac_key: MacKey,
    device_id: String,
    count: u64,
    head: Hash,
    policy: Policy,
    integrity: Integrity,
}

/// A person to add as a user.
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    pub username: &'a str,
    /// The printed name that signatures show.
    pub full_name: &'a str,
    pub role: Role,
    pub pin: &'a str,
}

/// The first administrator, created at commissioning.
#[derive(Debug, Clone)]
pub struct FirstAdmin<'a> {
    pub username: &'a str,
    pub full_name: &'a str,
    pub pin: &'a str,
}

impl RecordStore {
    /// Commissions a new appliance: creates the database, seals a new record key, records the
    /// first administrator and takes the genesis checkpoint. Refuses if a database exists.
    pub fn create(
        path: &Path,
        device_id: &str,
        mut tpm: Tpm,
        admin: &FirstAdmin<'_>,
        at: At,
    ) -> Result<Self, RecordError> {
        if path.exists() {
            return Err(RecordError::Exists(path.to_path_buf()));
        }
        // Before anything is created: an appliance commissioned without its administrator
        // could never be administered.
        users::check_new_user(admin.username, admin.full_name, admin.pin)?;
        if admin.pin.len() < Policy::default().min_pin_len {
            return Err(AuthError::PinTooShort(Policy::default().min_pin_len).into());
        }
        let conn = connect(path, rusqlite::OpenFlags::SQLITE_OPEN_CREATE)?;
        let mac_key = tpm.unseal_mac_key()?;
        let mut store = Self::assemble(conn, tpm, mac_key, device_id)?;
        store.append(
            at,
            NewEntry {
                payload: serde_json::json!({ "software": env!("CARGO_PKG_VERSION") }),
                ..NewEntry::new(EntryKind::System, "appliance.commissioned")
            },
        )?;
        let first = NewUser {
            username: admin.username,
            full_name: admin.full_name,
            role: Role::Admin,
            pin: admin.pin,
        };
        store.insert_user(None, &first, "commissioning", at)?;
        store.checkpoint("genesis", at)?;
        Ok(store)
    }

    /// Opens the records at start: SQLite integrity check, the record key from the TPM, the
    /// whole chain and every MAC, every checkpoint signature, and the NV counter. A damaged or
    /// rolled-back store still opens — nothing is deleted — but reports
    /// [`Integrity::Compromised`] and refuses new batches.
    pub fn open(path: &Path, device_id: &str, mut tpm: Tpm, at: At) -> Result<Self, RecordError> {
        if !path.exists() {
            return Err(RecordError::Missing(path.to_path_buf()));
        }
        let conn = connect(path, rusqlite::OpenFlags::empty())?;
        let mac_key = tpm.unseal_mac_key()?;
        let mut store = Self::assemble(conn, tpm, mac_key, device_id)?;
        let problem = match store.check() {
            Ok(()) => None,
            Err(
                e @ (RecordError::Chain(_)
                | RecordError::Checkpoint { .. }
                | RecordError::Corrupt(_)
                | RecordError::UserTampered(_)),
            ) => Some(e.to_string()),
            Err(e) => return Err(e),
        };
        let problem = match problem {
            Some(p) => Some(p),
            None => store.reconcile_counter(at)?,
        };
        if problem.is_none() {
            store.seal_signature(at)?;
        }
        if let Some(why) = problem {
            store.integrity = Integrity::Compromised(why.clone());
            // Appending after damage is still safe: the chain continues from the stored head,
            // and the damage stays where it is for investigation.
            store.append(
                at,
                NewEntry {
                    new_value: Some(why),
                    payload: serde_json::json!({ "severity": "critical" }),
                    ..NewEntry::new(EntryKind::Alarm, "records.integrity")
                },
            )?;
        }
        Ok(store)
    }

    fn assemble(
        mut conn: Connection,
        tpm: Tpm,
        mac_key: MacKey,
        device_id: &str,
    ) -> Result<Self, RecordError> {
        schema::migrate(&mut conn)?;
        let last: Option<(u64, Vec<u8>)> = conn
            .query_row("SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let (count, head) = match last {
            Some((seq, hash)) => (seq, to_hash(seq, &hash)?),
            None => (0, GENESIS),
        };
        Ok(Self {
            conn,
            tpm,
            mac_key,
            device_id: device_id.to_owned(),
            count,
            head,
            policy: Policy::default(),
            integrity: Integrity::Sound,
        })
    }

    pub fn integrity(&self) -> &Integrity {
        &self.integrity
    }

    /// Entries in the chain.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The appliance's checkpoint public key as PEM.
    pub fn public_key_pem(&self) -> String {
        self.tpm
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key encodes as PEM")
    }

    /// SHA-256 of the checkpoint key (SubjectPublicKeyInfo, DER), as VERIFY.txt prints it:
    /// the value the commissioning record keeps for inspectors to compare.
    pub fn public_key_fingerprint(&self) -> String {
        use sha2::Digest as _;
        let der = self.tpm.verifying_key().to_public_key_der().expect("a P-256 key encodes as DER");
        galen_record::hex::encode(&Sha256::digest(der.as_bytes()))
    }

    /// Appends one entry durably and returns it as stored.
    pub fn append(&mut self, at: At, e: NewEntry) -> Result<Entry, RecordError> {
        if e.kind == EntryKind::BatchCreated
            && let Integrity::Compromised(why) = &self.integrity
        {
            return Err(RecordError::Compromised(why.clone()));
        }
        if e.kind == EntryKind::Audit && e.reason.as_deref().is_none_or(str::is_empty) {
            return Err(RecordError::ReasonRequired("a change to users or configuration"));
        }
        let payload = e.payload.to_string();
        limit("payload", payload.len(), MAX_PAYLOAD)?;
        for (field, value) in [
            ("object", Some(&e.object)),
            ("old value", e.old_value.as_ref()),
            ("new value", e.new_value.as_ref()),
            ("reason", e.reason.as_ref()),
            ("batch id", e.batch_id.as_ref()),
        ] {
            limit(field, value.map_or(0, String::len), MAX_FIELD)?;
        }
        let body = EntryBody {
            utc: at.utc,
            tpm_clock_ms: at.tpm_clock_ms,
            device_id: self.device_id.clone(),
            user_id: e.user_id,
            batch_id: e.batch_id,
            kind: e.kind,
            object: e.object,
            old_value: e.old_value,
            new_value: e.new_value,
            reason: e.reason,
            payload,
        };
        let seq = self.count + 1;
        let entry_hash = link(seq, &self.head, &body.hash());
        let mac = self.mac(&entry_hash);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO entries (seq, utc_ms, tpm_clock_ms, device_id, user_id, batch_id, kind, \
             object, old_value, new_value, reason, payload, prev_hash, entry_hash, mac) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                seq,
                body.utc.0,
                body.tpm_clock_ms,
                body.device_id,
                body.user_id,
                body.batch_id,
                body.kind.as_str(),
                body.object,
                body.old_value,
                body.new_value,
                body.reason,
                body.payload,
                self.head.as_slice(),
                entry_hash.as_slice(),
                mac.as_slice(),
            ],
        )?;
        tx.commit()?;
        let entry = Entry { seq, body, prev_hash: self.head, entry_hash };
        self.count = seq;
        self.head = entry_hash;
        if seq.is_multiple_of(CHECKPOINT_EVERY) {
            self.checkpoint("periodic", at)?;
        }
        Ok(entry)
    }

    /// Seals the chain as it stands now with a TPM-signed checkpoint.
    pub fn checkpoint(&mut self, reason: &str, at: At) -> Result<SignedCheckpoint, RecordError> {
        let next = self.tpm.counter()? + 1;
        let statement = Statement {
            device_id: self.device_id.clone(),
            entries: self.count,
            head: self.head,
            nv_counter: next,
            utc: at.utc,
            reason: reason.to_owned(),
        };
        let (attest, signature) = self.tpm.quote(&statement.digest())?;
        let clock =
            checkpoint::parse_attest(&attest).map_err(|_| TpmError::Unexpected("Quote"))?.clock;
        self.conn.execute(
            "INSERT INTO checkpoints (entries, head, nv_counter, utc_ms, reason, device_id, \
             attest, signature, tpm_clock_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                statement.entries,
                statement.head.as_slice(),
                statement.nv_counter,
                statement.utc.0,
                statement.reason,
                statement.device_id,
                attest,
                signature,
                clock.clock_ms,
            ],
        )?;
        let counter = self.tpm.increment()?;
        if counter != next {
            // Another user of the TPM counter: not ours to fix, but it must be seen.
            return Err(RecordError::Compromised(format!(
                "the TPM counter moved to {counter} while checkpoint {next} was taken"
            )));
        }
        Ok(SignedCheckpoint { statement, attest, signature })
    }

    /// SQLite's own check, then the chain, every MAC and every checkpoint.
    fn check(&self) -> Result<(), RecordError> {
        let report: String = self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if report != "ok" {
            return Err(RecordError::Corrupt(report));
        }
        self.verify_chain()?;
        self.verify_checkpoints()?;
        self.verify_users()
    }

    /// Recomputes every entry hash and MAC from the first entry.
    pub fn verify_chain(&self) -> Result<u64, RecordError> {
        let mut stmt =
            self.conn.prepare(&format!("SELECT {ENTRY_COLUMNS}, mac FROM entries ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        let mut verifier = ChainVerifier::default();
        while let Some(row) = rows.next()? {
            let entry = read_entry(row)?;
            verifier.push(entry.seq, &entry.prev_hash, &entry.body.hash(), &entry.entry_hash)?;
            let mac: Vec<u8> = row.get(14)?;
            if mac.as_slice() != self.mac(&entry.entry_hash).as_slice() {
                return Err(ChainError::BadMac { seq: entry.seq }.into());
            }
        }
        Ok(verifier.count())
    }

    fn verify_checkpoints(&self) -> Result<(), RecordError> {
        let mut stmt = self.conn.prepare(
            "SELECT c.id, c.entries, c.head, c.nv_counter, c.utc_ms, c.reason, c.device_id, \
             c.attest, c.signature, e.entry_hash FROM checkpoints c \
             LEFT JOIN entries e ON e.seq = c.entries ORDER BY c.id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let bad = |why: String| RecordError::Checkpoint { id, why };
            let entries: u64 = r.get(1)?;
            let head: Vec<u8> = r.get(2)?;
            let statement = Statement {
                device_id: r.get(6)?,
                entries,
                head: head
                    .as_slice()
                    .try_into()
                    .map_err(|_| bad("its head is not a hash".into()))?,
                nv_counter: r.get(3)?,
                utc: UtcMillis(r.get(4)?),
                reason: r.get(5)?,
            };
            let cp = SignedCheckpoint { statement, attest: r.get(7)?, signature: r.get(8)? };
            checkpoint::verify(self.tpm.verifying_key(), &cp).map_err(|e| bad(e.to_string()))?;
            let at_head: Option<Vec<u8>> = r.get(9)?;
            let expected = if entries == 0 { Some(GENESIS.to_vec()) } else { at_head };
            if expected.as_deref() != Some(cp.statement.head.as_slice()) {
                return Err(bad(format!("entry {entries} is not the entry it sealed")));
            }
        }
        Ok(())
    }

    /// Compares the last checkpoint with the TPM counter (see the module documentation).
    /// Returns a problem description if the store was rolled back.
    fn reconcile_counter(&mut self, at: At) -> Result<Option<String>, RecordError> {
        let stored: Option<u64> = self
            .conn
            .query_row("SELECT nv_counter FROM checkpoints ORDER BY id DESC LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let tpm = self.tpm.counter()?;
        match stored {
            Some(d) if d == tpm => Ok(None),
            Some(d) if d == tpm + 1 => {
                self.tpm.increment()?;
                self.append(
                    at,
                    NewEntry {
                        new_value: Some(d.to_string()),
                        reason: Some("power was lost while checkpoint was being taken".into()),
                        ..NewEntry::new(EntryKind::System, "records.checkpoint.completed")
                    },
                )?;
                Ok(None)
            }
            Some(d) => Ok(Some(format!(
                "the last checkpoint carries TPM counter {d} but the TPM is at {tpm}: the \
                 records were rolled back, restored from an older copy or truncated"
            ))),
            None => Ok(Some("the record database has no checkpoint at all".into())),
        }
    }

    /// Seals the last signature if the supervisor stopped between its entry and its
    /// checkpoint: a signature in the record is always a sealed one, as if the power had not
    /// failed. A system entry says why the checkpoint came late.
    fn seal_signature(&mut self, at: At) -> Result<(), RecordError> {
        let last: Option<u64> = self.conn.query_row(
            "SELECT max(seq) FROM entries WHERE kind = 'signature'",
            [],
            |r| r.get(0),
        )?;
        let Some(seq) = last else { return Ok(()) };
        let sealed: bool = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM checkpoints WHERE reason = 'signature' AND entries >= ?1)",
            [seq],
            |r| r.get(0),
        )?;
        if !sealed {
            self.append(
                at,
                NewEntry {
                    new_value: Some(seq.to_string()),
                    reason: Some(
                        "the supervisor stopped after the signature was recorded and before it \
                         was sealed"
                            .into(),
                    ),
                    ..NewEntry::new(EntryKind::System, "records.signature.sealed")
                },
            )?;
            self.checkpoint("signature", at)?;
        }
        Ok(())
    }

    fn mac(&self, entry_hash: &Hash) -> Hash {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.mac_key.as_slice())
            .expect("HMAC accepts any key length");
        mac.update(entry_hash);
        mac.finalize().into_bytes().into()
    }

    // ----- users, sessions, signatures -----

    /// Logs a person in, recording the attempt; wrong PINs count towards a lockout.
    pub fn login(&mut self, username: &str, pin: &str, at: At) -> Result<Session, RecordError> {
        let Some((user, hash)) = self.user_by_name(username)? else {
            self.access(at, None, "login.failed", Some(username))?;
            return Err(AuthError::WrongCredentials.into());
        };
        self.authenticate(&user, &hash, pin, at)?;
        self.access(at, Some(user.id), "login", None)?;
        Ok(Session::new(&user, at.utc))
    }

    /// The authentication policy in force.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Every user, active or not, by id.
    pub fn users(&self) -> Result<Vec<User>, RecordError> {
        let ids: Vec<u64> = self
            .conn
            .prepare("SELECT id FROM users ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.user_by_id(id)?.map(|(u, _)| u));
        }
        Ok(out)
    }

    /// How many distinct batches have an id starting with `prefix` (for numbering the next).
    pub fn batches_with_prefix(&self, prefix: &str) -> Result<u64, RecordError> {
        let pattern = format!("{}%", prefix.replace(['%', '_'], ""));
        Ok(self.conn.query_row(
            "SELECT COUNT(DISTINCT batch_id) FROM entries WHERE batch_id LIKE ?1",
            [pattern],
            |r| r.get(0),
        )?)
    }

    /// Ends a session and records it.
    pub fn logout(&mut self, session: Session, at: At) -> Result<(), RecordError> {
        self.access(at, Some(session.user_id), "logout", None)
    }

    fn authenticate(
        &mut self,
        user: &User,
        hash: &str,
        pin: &str,
        at: At,
    ) -> Result<(), RecordError> {
        if let Err(e) = users::may_attempt(user, at.utc) {
            self.access(at, Some(user.id), "login.refused", Some(&e.to_string()))?;
            return Err(e.into());
        }
        if users::pin_matches(pin, hash) {
            if user.failed_attempts > 0 {
                self.conn.execute(
                    "UPDATE users SET failed_attempts = 0, locked_until_ms = NULL WHERE id = ?1",
                    [user.id],
                )?;
            }
            return Ok(());
        }
        let (failures, lock) = users::after_failure(user, at.utc, &self.policy);
        self.conn.execute(
            "UPDATE users SET failed_attempts = ?1, locked_until_ms = ?2 WHERE id = ?3",
            params![failures, lock.map(|l| l.0), user.id],
        )?;
        self.access(at, Some(user.id), "login.failed", None)?;
        if let Some(until) = lock {
            // 11.300(d): unauthorised attempts are reported immediately and urgently.
            self.append(
                at,
                NewEntry {
                    user_id: Some(user.id),
                    new_value: Some(format!("locked until {until}")),
                    payload: serde_json::json!({ "severity": "high", "failures": failures }),
                    ..NewEntry::new(EntryKind::Alarm, format!("user:{}.lockout", user.id))
                },
            )?;
            return Err(AuthError::LockedOut { until }.into());
        }
        Err(AuthError::WrongCredentials.into())
    }

    fn access(
        &mut self,
        at: At,
        user_id: Option<u64>,
        what: &str,
        detail: Option<&str>,
    ) -> Result<(), RecordError> {
        self.append(
            at,
            NewEntry {
                user_id,
                new_value: detail.map(str::to_owned),
                ..NewEntry::new(EntryKind::Access, what)
            },
        )
        .map(drop)
    }

    /// Adds a user. Only administrators may, and they must say why.
    pub fn add_user(
        &mut self,
        admin: &mut Session,
        user: &NewUser<'_>,
        reason: &str,
        at: At,
    ) -> Result<u64, RecordError> {
        admin.touch(at.utc, &self.policy)?;
        admin.require(Action::ManageUsers)?;
        self.insert_user(Some(admin.user_id), user, reason, at)
    }

    fn insert_user(
        &mut self,
        by: Option<u64>,
        user: &NewUser<'_>,
        reason: &str,
        at: At,
    ) -> Result<u64, RecordError> {
        let NewUser { username, full_name, role, pin } = *user;
        users::check_new_user(username, full_name, pin)?;
        if pin.chars().count() < self.policy.min_pin_len {
            return Err(AuthError::PinTooShort(self.policy.min_pin_len).into());
        }
        if self.user_by_name(username)?.is_some() {
            return Err(RecordError::UserExists(username.to_owned()));
        }
        self.conn.execute(
            "INSERT INTO users (username, full_name, role, pin_hash) VALUES (?1, ?2, ?3, ?4)",
            params![username, full_name, role.as_str(), users::hash_pin(pin, &self.tpm.random()?)],
        )?;
        let id = u64::try_from(self.conn.last_insert_rowid()).expect("row ids are positive");
        self.append(
            at,
            NewEntry {
                user_id: by,
                new_value: Some(format!("{username} ({full_name}), {}", role.as_str())),
                reason: Some(reason.to_owned()),
                payload: self.user_state(id)?,
                ..NewEntry::new(EntryKind::Audit, format!("user:{id}.created"))
            },
        )?;
        Ok(id)
    }

    /// Deactivates a user; the id is never reused and their records keep their name.
    pub fn deactivate_user(
        &mut self,
        admin: &mut Session,
        id: u64,
        reason: &str,
        at: At,
    ) -> Result<(), RecordError> {
        admin.touch(at.utc, &self.policy)?;
        admin.require(Action::ManageUsers)?;
        if reason.trim().is_empty() {
            return Err(RecordError::ReasonRequired("deactivating a user"));
        }
        if self.conn.execute("UPDATE users SET active = 0 WHERE id = ?1 AND active = 1", [id])? == 0
        {
            return Err(RecordError::NoSuchUser(id));
        }
        self.append(
            at,
            NewEntry {
                user_id: Some(admin.user_id),
                old_value: Some("active".into()),
                new_value: Some("deactivated".into()),
                reason: Some(reason.to_owned()),
                payload: self.user_state(id)?,
                ..NewEntry::new(EntryKind::Audit, format!("user:{id}.active"))
            },
        )
        .map(drop)
    }

    /// Signs the current state of `subject` (a batch): re-authenticates with the PIN,
    /// checks the role may give this meaning, binds the signature to the subject's last entry
    /// and seals it with a checkpoint.
    pub fn sign(
        &mut self,
        session: &mut Session,
        pin: &str,
        meaning: Meaning,
        subject: &str,
        at: At,
    ) -> Result<SignatureRecord, RecordError> {
        session.touch(at.utc, &self.policy)?;
        session.require(Action::Sign(meaning))?;
        let (user, hash) =
            self.user_by_id(session.user_id)?.ok_or(RecordError::NoSuchUser(session.user_id))?;
        self.authenticate(&user, &hash, pin, at)?;
        let (signed_seq, signed_hash): (u64, Vec<u8>) = self
            .conn
            .query_row(
                "SELECT seq, entry_hash FROM entries WHERE batch_id = ?1 ORDER BY seq DESC LIMIT 1",
                [subject],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| RecordError::NoSuchBatch(subject.to_owned()))?;
        let record = SignatureRecord::new(
            user.id,
            user.full_name.clone(),
            meaning,
            at.utc,
            subject.to_owned(),
            signed_seq,
            to_hash(signed_seq, &signed_hash)?,
        );
        self.append(
            at,
            NewEntry {
                user_id: Some(user.id),
                batch_id: Some(subject.to_owned()),
                new_value: Some(record.manifestation()),
                payload: serde_json::to_value(&record).expect("a signature serialises"),
                ..NewEntry::new(EntryKind::Signature, format!("signature.{}", meaning.as_words()))
            },
        )?;
        self.checkpoint("signature", at)?;
        Ok(record)
    }

    /// The identity-bearing columns of a user row, as chained into every audit entry that
    /// changes it; the PIN hash enters as its SHA-256 so the record never carries it.
    fn user_state(&self, id: u64) -> Result<serde_json::Value, RecordError> {
        Ok(self.conn.query_row(
            "SELECT id, username, full_name, role, pin_hash, active FROM users WHERE id = ?1",
            [id],
            |r| {
                use sha2::Digest as _;
                let pin_hash: String = r.get(4)?;
                Ok(serde_json::json!({ "user": {
                    "id": r.get::<_, u64>(0)?,
                    "username": r.get::<_, String>(1)?,
                    "full_name": r.get::<_, String>(2)?,
                    "role": r.get::<_, String>(3)?,
                    "pin_hash_sha256": galen_record::hex::encode(&Sha256::digest(pin_hash.as_bytes())),
                    "active": r.get::<_, bool>(5)?,
                }}))
            },
        )?)
    }

    /// `users` is not chained (lockout counters must change), so every row must equal the
    /// state recorded by the last audit entry that changed it.
    fn verify_users(&self) -> Result<(), RecordError> {
        let ids: Vec<u64> = self
            .conn
            .prepare("SELECT id FROM users ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids {
            let recorded: Option<String> = self
                .conn
                .query_row(
                    "SELECT payload FROM entries WHERE kind = 'audit' AND object LIKE ?1 \
                     ORDER BY seq DESC LIMIT 1",
                    [format!("user:{id}.%")],
                    |r| r.get(0),
                )
                .optional()?;
            let recorded: Option<serde_json::Value> =
                recorded.and_then(|p| serde_json::from_str(&p).ok());
            if recorded.as_ref() != Some(&self.user_state(id)?) {
                return Err(RecordError::UserTampered(id));
            }
        }
        Ok(())
    }

    fn user_by_name(&self, username: &str) -> Result<Option<(User, String)>, RecordError> {
        self.user_where("username = ?1", username)
    }

    fn user_by_id(&self, id: u64) -> Result<Option<(User, String)>, RecordError> {
        self.user_where("id = ?1", id)
    }

    fn user_where(
        &self,
        cond: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<Option<(User, String)>, RecordError> {
        let sql = format!(
            "SELECT id, username, full_name, role, active, failed_attempts, locked_until_ms, \
             pin_hash FROM users WHERE {cond}"
        );
        Ok(self
            .conn
            .query_row(&sql, [value], |r| {
                let role: String = r.get(3)?;
                Ok((
                    User {
                        id: r.get(0)?,
                        username: r.get(1)?,
                        full_name: r.get(2)?,
                        role: Role::parse(&role).ok_or_else(|| {
                            rusqlite::Error::InvalidColumnType(
                                3,
                                role.clone(),
                                rusqlite::types::Type::Text,
                            )
                        })?,
                        active: r.get(4)?,
                        failed_attempts: r.get(5)?,
                        locked_until: r.get::<_, Option<i64>>(6)?.map(UtcMillis),
                    },
                    r.get(7)?,
                ))
            })
            .optional()?)
    }

    // ----- queries and export -----

    /// Every entry of a batch, in order.
    pub fn batch_entries(&self, batch_id: &str) -> Result<Vec<Entry>, RecordError> {
        self.query_entries("WHERE batch_id = ?1 ORDER BY seq", [batch_id])
    }

    /// Batches the record says were in progress when the supervisor last stopped: their last
    /// `batch.state` is Running or a transient state, or Held by anything but a restart (a
    /// batch held by an operator or a fault loses the engine's memory of its phase at a restart
    /// too). With each, the phase that had started and not finished, if any. A batch already
    /// held by a restart is not listed again, so recovery records each restart once.
    pub fn interrupted_batches(&self) -> Result<Vec<Interrupted>, RecordError> {
        let mut stmt = self.conn.prepare(
            "SELECT e.batch_id, e.new_value, e.reason FROM entries e \
             WHERE e.kind = 'batch_state' AND e.object = 'batch.state' AND e.seq = ( \
               SELECT max(seq) FROM entries WHERE batch_id = e.batch_id \
               AND kind = 'batch_state' AND object = 'batch.state') ORDER BY e.seq",
        )?;
        let last: Vec<(String, String, Option<String>)> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default(), r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (batch_id, state, reason) in last {
            let in_progress = match state.as_str() {
                "Running" | "Holding" | "Restarting" | "Stopping" | "Aborting" => true,
                "Held" => reason.as_deref() != Some(RESTART_REASON),
                _ => false,
            };
            if !in_progress {
                continue;
            }
            // The last phase entry says "started" if the phase never finished.
            let phase: Option<(String, Option<String>)> = self
                .conn
                .query_row(
                    "SELECT object, new_value FROM entries WHERE batch_id = ?1 \
                     AND kind = 'batch_state' AND object LIKE 'phase.%' ORDER BY seq DESC LIMIT 1",
                    [&batch_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let phase = phase
                .filter(|(_, v)| v.as_deref() == Some("started"))
                .and_then(|(o, _)| o.strip_prefix("phase.").map(str::to_owned));
            out.push(Interrupted { batch_id, state, phase });
        }
        Ok(out)
    }

    /// Every batch ever created, oldest first.
    pub fn batch_ids(&self) -> Result<Vec<String>, RecordError> {
        let mut stmt = self.conn.prepare(
            "SELECT batch_id FROM entries WHERE kind = 'batch_created' AND batch_id IS NOT NULL \
             ORDER BY seq",
        )?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// Every entry with `from <= utc < to`, in order.
    pub fn entries_between(
        &self,
        from: UtcMillis,
        to: UtcMillis,
    ) -> Result<Vec<Entry>, RecordError> {
        self.query_entries("WHERE utc_ms >= ?1 AND utc_ms < ?2 ORDER BY seq", [from.0, to.0])
    }

    fn query_entries(
        &self,
        tail: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<Entry>, RecordError> {
        let mut stmt = self.conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM entries {tail}"))?;
        let mut rows = stmt.query(p)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(read_entry(row)?);
        }
        Ok(out)
    }

    /// Builds an export of `entries` (already selected by the caller): seals the chain with an
    /// export checkpoint and lists every entry's hashes so the inspector can recompute it.
    pub fn export(
        &mut self,
        session: &mut Session,
        scope: &str,
        entries: Vec<Entry>,
        at: At,
    ) -> Result<Export, RecordError> {
        session.touch(at.utc, &self.policy)?;
        session.require(Action::ExportRecords)?;
        self.append(
            at,
            NewEntry {
                user_id: Some(session.user_id),
                new_value: Some(scope.to_owned()),
                payload: serde_json::json!({ "entries": entries.len() }),
                ..NewEntry::new(EntryKind::System, "records.export")
            },
        )?;
        let checkpoint = self.checkpoint("export", at)?;
        let chain = self.chain_rows()?;
        let record = Export::record(self.device_id.clone(), at.utc, scope.to_owned(), entries);
        let pdf = pdf::render(&record, &self.printed_names()?, &checkpoint.statement);
        Ok(Export {
            record,
            chain,
            checkpoint,
            public_key_pem: self.public_key_pem(),
            pdf: Some(pdf),
        })
    }

    /// Every user's printed name, for rendering who did what.
    fn printed_names(&self) -> Result<std::collections::BTreeMap<u64, String>, RecordError> {
        let mut stmt = self.conn.prepare("SELECT id, full_name FROM users")?;
        let names =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        Ok(names)
    }

    fn chain_rows(&self) -> Result<Vec<ChainRow>, RecordError> {
        let mut stmt =
            self.conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM entries ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::with_capacity(usize::try_from(self.count).unwrap_or(0));
        while let Some(row) = rows.next()? {
            let e = read_entry(row)?;
            out.push(ChainRow {
                seq: e.seq,
                prev_hash: e.prev_hash,
                body_hash: e.body.hash(),
                entry_hash: e.entry_hash,
            });
        }
        Ok(out)
    }

    /// The files of `export` ready to write, with the manifest signed by the TPM key.
    /// Write them with [`crate::export::write_bundle`].
    pub fn seal_bundle(&mut self, export: &Export) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        let mut files: Vec<(String, Vec<u8>)> =
            export.files().into_iter().map(|(n, c)| (n.to_owned(), c)).collect();
        let manifest = files
            .iter()
            .find(|(n, _)| n == bundle::MANIFEST)
            .map(|(_, c)| c.clone())
            .expect("files() lists the manifest");
        files.push((bundle::MANIFEST_SIG.to_owned(), self.tpm.sign(&manifest)?));
        Ok(files)
    }

    /// A final checkpoint before the appliance stops.
    pub fn shutdown(mut self, at: At) -> Result<(), RecordError> {
        self.close(at)
    }

    /// The final checkpoint, taken through a shared store: the caller keeps the lock until
    /// the process ends, so nothing can be appended after it.
    pub fn close(&mut self, at: At) -> Result<(), RecordError> {
        self.append(at, NewEntry::new(EntryKind::System, "appliance.shutdown"))?;
        self.checkpoint("shutdown", at)?;
        Ok(())
    }
}

const ENTRY_COLUMNS: &str = "seq, utc_ms, tpm_clock_ms, device_id, user_id, batch_id, kind, \
    object, old_value, new_value, reason, payload, prev_hash, entry_hash";

fn read_entry(r: &Row<'_>) -> Result<Entry, RecordError> {
    let seq: u64 = r.get(0)?;
    let kind: String = r.get(6)?;
    let prev: Vec<u8> = r.get(12)?;
    let hash: Vec<u8> = r.get(13)?;
    Ok(Entry {
        seq,
        body: EntryBody {
            utc: UtcMillis(r.get(1)?),
            tpm_clock_ms: r.get(2)?,
            device_id: r.get(3)?,
            user_id: r.get(4)?,
            batch_id: r.get(5)?,
            kind: EntryKind::parse(&kind)
                .ok_or_else(|| RecordError::Stored(seq, format!("unknown kind {kind:?}")))?,
            object: r.get(7)?,
            old_value: r.get(8)?,
            new_value: r.get(9)?,
            reason: r.get(10)?,
            payload: r.get(11)?,
        },
        prev_hash: to_hash(seq, &prev)?,
        entry_hash: to_hash(seq, &hash)?,
    })
}

fn to_hash(seq: u64, bytes: &[u8]) -> Result<Hash, RecordError> {
    bytes.try_into().map_err(|_| RecordError::Stored(seq, "a hash is not 32 bytes".into()))
}

fn limit(field: &'static str, len: usize, max: usize) -> Result<(), RecordError> {
    if len > max { Err(RecordError::TooLarge { field, len, max }) } else { Ok(()) }
}

fn connect(path: &Path, create: rusqlite::OpenFlags) -> Result<Connection, RecordError> {
    use rusqlite::OpenFlags as F;
    let open = |source| RecordError::Open { path: path.to_path_buf(), source };
    let conn = Connection::open_with_flags(
        path,
        F::SQLITE_OPEN_READ_WRITE | F::SQLITE_OPEN_NO_MUTEX | create,
    )
    .map_err(open)?;
    // WAL with FULL: a commit is on disk when it returns (GMP records may not roll back on
    // power loss, which NORMAL allows). The rest guards against corrupt or hostile files.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA trusted_schema = OFF; PRAGMA cell_size_check = ON;",
    )
    .map_err(open)?;
    Ok(conn)
}
