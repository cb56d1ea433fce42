//! The export bundle an inspector receives, how it is laid out, and how it is verified.
//!
//! # Layout (version 1)
//! - `VERIFY.txt`: how to check everything with sha256sum and openssl alone.
//! - `MANIFEST.sha256`: `sha256sum` lines for every other file, sorted by name.
//! - `MANIFEST.sha256.sig`: the TPM key's ECDSA signature (DER) over `MANIFEST.sha256`.
//! - `pubkey.pem`: the appliance's TPM signing key (SubjectPublicKeyInfo, PEM).
//! - `checkpoint.txt`, `checkpoint.attest`, `checkpoint.sig`: the checkpoint taken for this
//!   export, covering the whole chain (see [`crate::checkpoint`]).
//! - `chain.csv`: `seq,prev_hash,body_hash,entry_hash` for every entry up to the checkpoint,
//!   so the whole chain can be recomputed; entries outside the export appear only as hashes.
//! - `record.json`: the exported entries in full, with the scope of the export.
//! - `entries.csv`: the same entries for a spreadsheet.
//! - `record.pdf`: the human-readable batch record, when the appliance rendered one.
//!
//! Everything but the manifest and its signature is listed in the manifest, so a file added,
//! removed or changed after export is found, and the manifest itself is signed by the TPM key.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::chain::{ChainError, ChainVerifier, Hash};
use crate::checkpoint::{self, CheckpointError, SignedCheckpoint, Statement, TpmClock};
use crate::entry::{Entry, EntryKind};
use crate::hex;
use crate::signature::SignatureRecord;
use crate::time::UtcMillis;

pub const MANIFEST: &str = "MANIFEST.sha256";
pub const MANIFEST_SIG: &str = "MANIFEST.sha256.sig";
pub const PUBKEY: &str = "pubkey.pem";
pub const CHECKPOINT_TXT: &str = "checkpoint.txt";
pub const CHECKPOINT_ATTEST: &str = "checkpoint.attest";
pub const CHECKPOINT_SIG: &str = "checkpoint.sig";
pub const CHAIN: &str = "chain.csv";
pub const RECORD_JSON: &str = "record.json";
pub const ENTRIES_CSV: &str = "entries.csv";
pub const RECORD_PDF: &str = "record.pdf";
pub const VERIFY_TXT: &str = "VERIFY.txt";

const FORMAT: &str = "galen-export-v1";

/// One line of `chain.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainRow {
    pub seq: u64,
    pub prev_hash: Hash,
    pub body_hash: Hash,
    pub entry_hash: Hash,
}

/// `record.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordJson {
    pub format: String,
    pub device_id: String,
    pub exported_at: UtcMillis,
    /// In words, e.g. `batch B-20261121-001` or `2026-11-01 to 2026-11-21`.
    pub scope: String,
    pub entries: Vec<Entry>,
}

/// Everything an export holds, before it is written.
#[derive(Debug, Clone)]
pub struct Export {
    pub record: RecordJson,
    pub chain: Vec<ChainRow>,
    pub checkpoint: SignedCheckpoint,
    pub public_key_pem: String,
    pub pdf: Option<Vec<u8>>,
}

impl Export {
    /// A record of `entries` in a given scope, in the current format.
    pub fn record(
        device_id: String,
        exported_at: UtcMillis,
        scope: String,
        entries: Vec<Entry>,
    ) -> RecordJson {
        RecordJson { format: FORMAT.into(), device_id, exported_at, scope, entries }
    }

    /// Every file except the manifest's signature, manifest last: `(name, contents)`.
    /// The caller signs the manifest with the TPM and writes [`MANIFEST_SIG`].
    pub fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut files: Vec<(&'static str, Vec<u8>)> = vec![
            (VERIFY_TXT, verify_txt(&self.checkpoint.statement).into_bytes()),
            (PUBKEY, self.public_key_pem.clone().into_bytes()),
            (CHECKPOINT_TXT, self.checkpoint.statement.to_text().into_bytes()),
            (CHECKPOINT_ATTEST, self.checkpoint.attest.clone()),
            (CHECKPOINT_SIG, self.checkpoint.signature.clone()),
            (CHAIN, chain_csv(&self.chain).into_bytes()),
            (
                RECORD_JSON,
                serde_json::to_vec_pretty(&self.record).expect("record serialises to JSON"),
            ),
            (ENTRIES_CSV, entries_csv(&self.record.entries).into_bytes()),
        ];
        if let Some(pdf) = &self.pdf {
            files.push((RECORD_PDF, pdf.clone()));
        }
        let manifest = manifest(&files);
        files.push((MANIFEST, manifest.into_bytes()));
        files
    }
}

/// `sha256sum` output for `files`, sorted by name.
pub fn manifest(files: &[(&str, Vec<u8>)]) -> String {
    let mut sorted: Vec<_> = files.iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    let mut out = String::new();
    for (name, contents) in sorted {
        let _ = writeln!(out, "{}  {name}", hex::encode(&Sha256::digest(contents)));
    }
    out
}

fn chain_csv(rows: &[ChainRow]) -> String {
    let mut out = String::from("seq,prev_hash,body_hash,entry_hash\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{}",
            r.seq,
            hex::encode(&r.prev_hash),
            hex::encode(&r.body_hash),
            hex::encode(&r.entry_hash)
        );
    }
    out
}

fn entries_csv(entries: &[Entry]) -> String {
    let mut out = String::from(
        "seq,utc,tpm_clock_ms,device_id,user_id,batch_id,kind,object,old_value,new_value,reason,payload,entry_hash\n",
    );
    for e in entries {
        let b = &e.body;
        let fields = [
            e.seq.to_string(),
            b.utc.to_rfc3339(),
            b.tpm_clock_ms.map(|c| c.to_string()).unwrap_or_default(),
            b.device_id.clone(),
            b.user_id.map(|u| u.to_string()).unwrap_or_default(),
            b.batch_id.clone().unwrap_or_default(),
            b.kind.as_str().to_owned(),
            b.object.clone(),
            b.old_value.clone().unwrap_or_default(),
            b.new_value.clone().unwrap_or_default(),
            b.reason.clone().unwrap_or_default(),
            b.payload.clone(),
            hex::encode(&e.entry_hash),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        let _ = writeln!(out, "{}", line.join(","));
    }
    out
}

/// RFC 4180 quoting, and a leading apostrophe against spreadsheet formula injection.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) && value.parse::<f64>().is_err() {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// `VERIFY.txt`: commands a person can run with no Galen software. Lines starting with `  $ `
/// are commands run in the bundle's folder; the `    expect:` line under each is what it must
/// print. The test suite runs them literally.
pub fn verify_txt(statement: &Statement) -> String {
    format!(
        r#"HOW TO VERIFY THIS EXPORT
=========================

This folder is an export of electronic batch records from Galen appliance
{device}. It covers record entries 1 to {entries}, sealed by the appliance's TPM.
You need only sha256sum and openssl. Run each command in this folder.

1. The manifest was signed by the appliance's TPM key:
  $ openssl dgst -sha256 -verify pubkey.pem -signature MANIFEST.sha256.sig MANIFEST.sha256
    expect: Verified OK

2. Every file is exactly as exported:
  $ sha256sum --quiet -c MANIFEST.sha256 && echo ALL FILES OK
    expect: ALL FILES OK

3. The TPM signed the checkpoint attestation:
  $ openssl dgst -sha256 -verify pubkey.pem -signature checkpoint.sig checkpoint.attest
    expect: Verified OK

4. The attestation vouches for checkpoint.txt (its SHA-256 appears inside it):
  $ od -An -tx1 -v checkpoint.attest | tr -d ' \n' | grep -c "$(sha256sum checkpoint.txt | cut -c1-64)"
    expect: 1

5. The key is this appliance's. Compare this fingerprint with the one in the
   appliance's commissioning record (Settings > About on the appliance):
  $ openssl pkey -pubin -in pubkey.pem -outform DER | sha256sum | cut -c1-64
    expect: {fingerprint_hint}

What the checks above prove: the files are the ones the appliance exported, and
the appliance's TPM vouched for checkpoint.txt, which names the number of
entries ({entries}) and the hash of the last one ({head}).

6. The entries themselves. chain.csv lists every entry's hashes; record.json
   holds this export's entries in full. Each entry links to the one before:
     entry_hash = SHA-256(0x00 || seq as 8-byte big-endian || prev_hash || body_hash)
   and body_hash is the SHA-256 of the entry's canonical bytes (format
   "galen-entry-v1", described in record.json's documentation). The last
   entry_hash must equal "head" in checkpoint.txt. The galen-verify program
   (it needs no TPM) recomputes all of this and names the first bad entry:
     galen-verify .
"#,
        device = statement.device_id,
        entries = statement.entries,
        head = hex::encode(&statement.head),
        fingerprint_hint = "the fingerprint recorded when the appliance was commissioned",
    )
}

/// The files of a bundle, by name.
#[derive(Debug, Clone, Default)]
pub struct BundleFiles(pub BTreeMap<String, Vec<u8>>);

/// Reads every regular file in `dir` (not recursively: a bundle is flat).
pub fn read_dir(dir: &Path) -> std::io::Result<BundleFiles> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.insert(
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path())?,
            );
        }
    }
    Ok(BundleFiles(files))
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub device_id: String,
    pub scope: String,
    pub chain_entries: u64,
    pub exported_entries: usize,
    pub checkpoint_utc: UtcMillis,
    pub checkpoint_reason: String,
    pub tpm_clock: TpmClock,
    pub public_key_fingerprint: String,
    pub signatures: Vec<String>,
}

/// Why a bundle does not verify. The first problem found is reported.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("{0} is missing from the bundle")]
    Missing(&'static str),
    #[error("{file} is malformed: {why}")]
    Malformed { file: String, why: String },
    #[error("MANIFEST.sha256 was not signed by the key in pubkey.pem: {0}")]
    Manifest(CheckpointError),
    #[error("{0} was changed after export (its SHA-256 differs from the manifest)")]
    Changed(String),
    #[error("{0} is listed in the manifest but absent")]
    Absent(String),
    #[error("{0} is in the bundle but not in the manifest")]
    Unlisted(String),
    #[error("the checkpoint does not verify: {0}")]
    Checkpoint(CheckpointError),
    #[error("the chain is broken at {0}")]
    Chain(ChainError),
    #[error("entry {0} in record.json differs from the sealed chain; it was altered")]
    ExportedEntryAltered(u64),
    #[error("entry {0} in record.json is not part of the sealed chain")]
    NotInChain(u64),
    #[error("the chain has {found} entries but the checkpoint covers {expected}")]
    Count { expected: u64, found: u64 },
    #[error("the chain's last hash is not the one the checkpoint names")]
    Head,
    #[error("entry {seq} is a signature that {why}")]
    Signature { seq: u64, why: &'static str },
}

/// Verifies a bundle the way `VERIFY.txt` describes, and more: the whole chain and every
/// exported entry and signature.
pub fn verify(bundle: &BundleFiles) -> Result<Report, VerifyError> {
    let get = |name: &'static str| bundle.0.get(name).ok_or(VerifyError::Missing(name));
    let pem = text(PUBKEY, get(PUBKEY)?)?;
    let key = VerifyingKey::from_public_key_pem(pem)
        .map_err(|e| malformed(PUBKEY, format!("not a P-256 public key: {e}")))?;

    let manifest = get(MANIFEST)?;
    checkpoint::verify_signature(&key, manifest, get(MANIFEST_SIG)?)
        .map_err(VerifyError::Manifest)?;
    check_manifest(bundle, text(MANIFEST, manifest)?)?;

    let statement = parse_statement(text(CHECKPOINT_TXT, get(CHECKPOINT_TXT)?)?)?;
    let cp = SignedCheckpoint {
        statement,
        attest: get(CHECKPOINT_ATTEST)?.clone(),
        signature: get(CHECKPOINT_SIG)?.clone(),
    };
    let tpm_clock = checkpoint::verify(&key, &cp).map_err(VerifyError::Checkpoint)?;

    let record: RecordJson = serde_json::from_slice(get(RECORD_JSON)?)
        .map_err(|e| malformed(RECORD_JSON, e.to_string()))?;
    if record.format != FORMAT {
        return Err(malformed(RECORD_JSON, format!("unknown format {:?}", record.format)));
    }
    let chain = parse_chain(text(CHAIN, get(CHAIN)?)?)?;
    verify_chain(&chain, &cp.statement)?;
    let signatures = verify_entries(&record.entries, &chain)?;

    let der = p256::pkcs8::EncodePublicKey::to_public_key_der(&key)
        .map_err(|e| malformed(PUBKEY, e.to_string()))?;
    Ok(Report {
        device_id: cp.statement.device_id.clone(),
        scope: record.scope,
        chain_entries: cp.statement.entries,
        exported_entries: record.entries.len(),
        checkpoint_utc: cp.statement.utc,
        checkpoint_reason: cp.statement.reason.clone(),
        tpm_clock,
        public_key_fingerprint: hex::encode(&Sha256::digest(der.as_bytes())),
        signatures,
    })
}

fn check_manifest(bundle: &BundleFiles, manifest: &str) -> Result<(), VerifyError> {
    let mut listed = Vec::new();
    for line in manifest.lines() {
        let (digest, name) = line
            .split_once("  ")
            .ok_or_else(|| malformed(MANIFEST, format!("bad line {line:?}")))?;
        let digest: Hash = hex::decode(digest)
            .ok_or_else(|| malformed(MANIFEST, format!("bad digest on line {line:?}")))?;
        let contents = bundle.0.get(name).ok_or_else(|| VerifyError::Absent(name.to_owned()))?;
        if <Hash>::from(Sha256::digest(contents)) != digest {
            return Err(VerifyError::Changed(name.to_owned()));
        }
        listed.push(name);
    }
    for name in bundle.0.keys() {
        if name != MANIFEST && name != MANIFEST_SIG && !listed.contains(&name.as_str()) {
            return Err(VerifyError::Unlisted(name.clone()));
        }
    }
    Ok(())
}

fn verify_chain(chain: &[ChainRow], statement: &Statement) -> Result<(), VerifyError> {
    let mut v = ChainVerifier::default();
    for r in chain {
        v.push(r.seq, &r.prev_hash, &r.body_hash, &r.entry_hash).map_err(VerifyError::Chain)?;
    }
    if v.count() != statement.entries {
        return Err(VerifyError::Count { expected: statement.entries, found: v.count() });
    }
    if v.head() != statement.head {
        return Err(VerifyError::Head);
    }
    Ok(())
}

/// Each exported entry must be in the chain with the same body; each signature must bind.
fn verify_entries(entries: &[Entry], chain: &[ChainRow]) -> Result<Vec<String>, VerifyError> {
    let row = |seq: u64| {
        usize::try_from(seq).ok().and_then(|s| s.checked_sub(1)).and_then(|i| chain.get(i))
    };
    let mut signatures = Vec::new();
    for e in entries {
        let r = row(e.seq).ok_or(VerifyError::NotInChain(e.seq))?;
        if r.body_hash != e.body.hash()
            || r.entry_hash != e.entry_hash
            || r.prev_hash != e.prev_hash
        {
            return Err(VerifyError::ExportedEntryAltered(e.seq));
        }
        if e.body.kind == EntryKind::Signature {
            let sig: SignatureRecord = serde_json::from_str(&e.body.payload)
                .map_err(|_| VerifyError::Signature { seq: e.seq, why: "cannot be read" })?;
            if !sig.is_bound() {
                return Err(VerifyError::Signature {
                    seq: e.seq,
                    why: "does not bind to what it claims to sign",
                });
            }
            if e.body.batch_id.as_deref() != Some(sig.subject.as_str()) {
                return Err(VerifyError::Signature { seq: e.seq, why: "sits in another record" });
            }
            let signed = row(sig.signed_seq)
                .filter(|r| sig.signed_seq < e.seq && r.entry_hash == sig.signed_entry_hash);
            if signed.is_none() {
                return Err(VerifyError::Signature {
                    seq: e.seq,
                    why: "signs an entry that is not in the chain",
                });
            }
            signatures.push(sig.manifestation());
        }
    }
    Ok(signatures)
}

fn parse_statement(text: &str) -> Result<Statement, VerifyError> {
    let bad = |why: &str| malformed(CHECKPOINT_TXT, why.to_owned());
    let mut lines = text.lines();
    if lines.next() != Some("galen-checkpoint-v1") {
        return Err(bad("not a galen-checkpoint-v1 statement"));
    }
    let mut fields = BTreeMap::new();
    for line in lines {
        let (k, v) = line.split_once(": ").ok_or_else(|| bad("a line is not `key: value`"))?;
        fields.insert(k, v);
    }
    let field = |k: &str| fields.get(k).copied().ok_or_else(|| bad("a field is missing"));
    let number = |k: &str| field(k)?.parse::<u64>().map_err(|_| bad("a count is not a number"));
    let statement = Statement {
        device_id: field("device")?.to_owned(),
        entries: number("entries")?,
        head: hex::decode(field("head")?).ok_or_else(|| bad("head is not 64 hex digits"))?,
        nv_counter: number("nv-counter")?,
        utc: UtcMillis(0),
        reason: field("reason")?.to_owned(),
    };
    // Time is only carried in text; recover it by matching the rendering exactly.
    let utc_text = field("utc")?;
    let utc = parse_rfc3339(utc_text).ok_or_else(|| bad("utc is not RFC 3339"))?;
    let statement = Statement { utc, ..statement };
    if statement.to_text() != text {
        return Err(bad("it is not in canonical form"));
    }
    Ok(statement)
}

/// Parses exactly the form [`UtcMillis::to_rfc3339`] writes.
fn parse_rfc3339(s: &str) -> Option<UtcMillis> {
    let b = s.as_bytes();
    if b.len() != 24 || b[23] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // days_from_civil, the inverse of the conversion in crate::time.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t = UtcMillis((((days * 24 + hh) * 60 + mm) * 60 + ss) * 1000 + ms);
    (t.to_rfc3339() == s).then_some(t)
}

fn parse_chain(text: &str) -> Result<Vec<ChainRow>, VerifyError> {
    let mut lines = text.lines();
    if lines.next() != Some("seq,prev_hash,body_hash,entry_hash") {
        return Err(malformed(CHAIN, "unexpected header".into()));
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let bad = || malformed(CHAIN, format!("line {} is not seq,hash,hash,hash", i + 2));
            let mut f = line.split(',');
            let seq = f.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            let mut hash = || f.next().and_then(hex::decode::<32>).ok_or_else(bad);
            Ok(ChainRow { seq, prev_hash: hash()?, body_hash: hash()?, entry_hash: hash()? })
        })
        .collect()
}

fn text<'a>(name: &'static str, bytes: &'a [u8]) -> Result<&'a str, VerifyError> {
    std::str::from_utf8(bytes).map_err(|_| malformed(name, "not UTF-8 text".into()))
}

fn malformed(file: &str, why: String) -> VerifyError {
    VerifyError::Malformed { file: file.to_owned(), why }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for ms in [0, 951_782_400_000, 1_795_249_073_120, 4_102_444_799_999] {
            let t = UtcMillis(ms);
            assert_eq!(parse_rfc3339(&t.to_rfc3339()), Some(t));
        }
        assert_eq!(parse_rfc3339("2026-02-30T00:00:00.000Z"), None);
        assert_eq!(parse_rfc3339("2026-11-21T08:17:53Z"), None);
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-12.5"), "-12.5");
    }
}
