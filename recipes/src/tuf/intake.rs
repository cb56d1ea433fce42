//! The appliance's side: verify a TUF repository (USB directory or HTTPS) against the root
//! shipped in the image, and install the recipes it may run.
//!
//! # State
//! `state_dir/tuf/` is tough's datastore (the last trusted root, timestamp, snapshot, targets
//! and `latest_known_time.json`); `state_dir/state.json` is ours: the highest metadata versions
//! seen and, per recipe id, the installed revision and hash; `state_dir/installed/<id>/<rev>.toml`
//! holds the verified recipe files. An installed recipe that the latest verified targets no
//! longer list is marked withdrawn in `state.json` and [`Intake::load_installed`] refuses it
//! (until a later signed targets lists it again). Both must live on persistent storage: rollback protection is
//! only as good as this state (a later step anchors the versions in a TPM NV counter).
//!
//! # Time
//! `now` is a parameter and every expiry is checked against it here. tough itself cannot be
//! given a time: it also reads the system clock, records it in `latest_known_time.json`, and
//! refuses to load if the clock has gone back (`ClockSteppedBack` below). An appliance whose RTC
//! was reset must have its clock corrected before it can take recipes.
//!
//! # Refusals
//! Whole-repository problems (tampered or unsigned metadata, expiry, rollback, unknown keys,
//! unmet threshold) are an [`IntakeError`]; nothing is installed. Per-recipe problems (another
//! unit model, a newer appliance version, a revision rollback, a tampered target, a recipe that
//! does not lint) are a [`Refused`] entry in the report while the other recipes install.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tough::schema::RoleType;
use tough::{ExpirationEnforcement, FilesystemTransport, Limits, RepositoryLoader, Transport};
use url::Url;

use super::RecipeCustom;
use crate::authoring::{self, MAX_RECIPE_BYTES};
use crate::model::{Recipe, Version};
use crate::pharmcat::hex;

/// Size limits for metadata, checked before any signature is: roots and timestamps are small;
/// targets.json grows about 400 bytes per recipe.
pub const LIMITS: Limits = Limits {
    max_root_size: 256 * 1024,
    max_targets_size: 8 * 1024 * 1024,
    max_timestamp_size: 64 * 1024,
    max_snapshot_size: 256 * 1024,
    max_root_updates: 64,
};

/// Why a whole repository was refused. Each reads as one line.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Metadata was changed after signing, truncated or malformed.
    #[error("tampered {what}: {detail}")]
    Tampered {
        /// Which file or role.
        what: String,
        /// tough's words.
        detail: String,
    },
    /// A role's metadata has expired.
    #[error("{role} metadata has expired ({detail})")]
    Expired {
        /// Role.
        role: String,
        /// When, and by which clock.
        detail: String,
    },
    /// A role's metadata is older than what the unit already trusts.
    #[error("rollback of {role} metadata: have version {have}, offered {offered}")]
    Rollback {
        /// Role.
        role: String,
        /// Trusted version.
        have: u64,
        /// Offered version.
        offered: u64,
    },
    /// No signature by any key the trusted root lists for the role.
    #[error("{role} metadata is signed only by keys this unit does not trust")]
    UnknownKeys {
        /// Role.
        role: String,
    },
    /// Some, but too few, trusted signatures.
    #[error("{role} metadata has {valid} of the {threshold} signatures required")]
    Threshold {
        /// Role.
        role: String,
        /// Required.
        threshold: u64,
        /// Found.
        valid: u64,
    },
    /// The system clock is earlier than a time tough recorded.
    #[error(
        "the system clock went back (now {now}, previously {previously}); correct the clock first"
    )]
    ClockSteppedBack {
        /// Now.
        now: String,
        /// Recorded.
        previously: String,
    },
    /// A file could not be fetched.
    #[error("could not fetch from the repository: {0}")]
    Fetch(String),
    /// Local state could not be read or written.
    #[error("{}: {source}", path.display())]
    State {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The shipped root or the state file is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Anything else tough reports.
    #[error("repository refused: {0}")]
    Other(String),
    /// The manufacturer withdrew the recipe: the latest verified targets no longer list it.
    #[error(
        "recipe {id} was withdrawn: the manufacturer's latest signed targets no longer list it"
    )]
    Withdrawn {
        /// Recipe id.
        id: String,
    },
}

/// Why one recipe was not installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusalReason {
    /// The target's bytes do not match its signed length or hash.
    #[error("tampered target: {0}")]
    Tampered(String),
    /// The target is larger than a recipe may be.
    #[error("target is {0} bytes; recipes are at most {MAX_RECIPE_BYTES}")]
    TooLarge(u64),
    /// The custom metadata is missing or malformed.
    #[error("custom metadata: {0}")]
    BadCustom(String),
    /// Not validated for this unit model.
    #[error("made for unit models {models}, this unit is {ours}")]
    OtherUnitModel {
        /// The recipe's models.
        models: String,
        /// Ours.
        ours: String,
    },
    /// Needs newer appliance software.
    #[error("needs appliance version {needs}, this unit runs {ours}")]
    NewerAppliance {
        /// Needed.
        needs: String,
        /// Ours.
        ours: String,
    },
    /// Lower than the installed revision.
    #[error("revision rollback: revision {installed} is installed, offered {offered}")]
    RevisionRollback {
        /// Installed.
        installed: u32,
        /// Offered.
        offered: u32,
    },
    /// Same revision, different content.
    #[error("revision {0} is installed with different content; a change needs a new revision")]
    RevisionReused(u32),
    /// The recipe does not lint.
    #[error("recipe does not validate: {0}")]
    Invalid(String),
    /// The recipe says something other than its signed custom metadata.
    #[error("recipe disagrees with its signed metadata: {0}")]
    Mismatch(String),
}

/// One recipe the intake refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Target name.
    pub target: String,
    /// Why.
    pub reason: RefusalReason,
}

/// One installed recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    /// The validated recipe.
    pub recipe: Recipe,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Where it was installed.
    pub path: PathBuf,
}

/// What one intake did.
#[derive(Debug, Clone, PartialEq)]
pub struct IntakeReport {
    /// Metadata versions now trusted: root, targets, snapshot, timestamp.
    pub versions: Versions,
    /// Newly installed.
    pub installed: Vec<Installed>,
    /// Already installed at the same revision and hash.
    pub unchanged: Vec<String>,
    /// Refused, each with its reason.
    pub refused: Vec<Refused>,
    /// Installed recipe ids that the verified targets no longer list: withdrawn, no longer
    /// loadable.
    pub withdrawn: Vec<String>,
}

/// Metadata versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// root.json.
    pub root: u64,
    /// targets.json.
    pub targets: u64,
    /// snapshot.json.
    pub snapshot: u64,
    /// timestamp.json.
    pub timestamp: u64,
}

/// Our persistent state (`state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    versions: Versions,
    recipes: BTreeMap<String, InstalledEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstalledEntry {
    revision: u32,
    sha256: String,
    /// The latest verified targets no longer list this recipe.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    withdrawn: bool,
}

/// The appliance's recipe intake.
#[derive(Debug, Clone)]
pub struct Intake {
    trusted_root: Vec<u8>,
    state_dir: PathBuf,
    unit_model: String,
    appliance_version: Version,
}

impl Intake {
    /// `trusted_root` is the `root.json` shipped in the read-only image; `state_dir` is on the
    /// persistent data partition.
    pub fn new(
        trusted_root: Vec<u8>,
        state_dir: PathBuf,
        unit_model: &str,
        appliance_version: Version,
    ) -> Result<Self, IntakeError> {
        if trusted_root.len() as u64 > LIMITS.max_root_size {
            return Err(IntakeError::Config("the shipped root.json is too large".into()));
        }
        for dir in [state_dir.clone(), state_dir.join("tuf"), state_dir.join("installed")] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| IntakeError::State { path: dir, source })?;
        }
        Ok(Self { trusted_root, state_dir, unit_model: unit_model.to_owned(), appliance_version })
    }

    /// Verifies and installs from a repository directory (a USB stick's mount point).
    pub async fn from_directory(
        &self,
        repo: &Path,
        now: Timestamp,
    ) -> Result<IntakeReport, IntakeError> {
        let url = |sub: &str| {
            let p = repo.join(sub);
            let abs = std::fs::canonicalize(&p)
                .map_err(|source| IntakeError::State { path: p.clone(), source })?;
            Url::from_directory_path(&abs)
                .map_err(|()| IntakeError::Config(format!("{} is not absolute", abs.display())))
        };
        self.load(FilesystemTransport, url("metadata")?, url("targets")?, now).await
    }

    /// Verifies and installs from `base` (the repository root URL) over the given transport,
    /// normally [`super::transport::HttpsTransport`] with the manufacturer CA pinned.
    pub async fn from_url<T: Transport + Send + Sync + 'static>(
        &self,
        transport: T,
        base: &Url,
        now: Timestamp,
    ) -> Result<IntakeReport, IntakeError> {
        let join = |sub: &str| {
            let mut b = base.clone();
            if !b.path().ends_with('/') {
                b.set_path(&format!("{}/", b.path()));
            }
            b.join(sub).map_err(|e| IntakeError::Config(format!("{base}: {e}")))
        };
        self.load(transport, join("metadata/")?, join("targets/")?, now).await
    }

    /// The recipes installed so far, withdrawn ones included: id → (revision, SHA-256).
    pub fn installed(&self) -> Result<BTreeMap<String, (u32, String)>, IntakeError> {
        Ok(self
            .read_state()?
            .recipes
            .into_iter()
            .map(|(k, v)| (k, (v.revision, v.sha256)))
            .collect())
    }

    /// Reads and validates the installed revision of a recipe (what the supervisor runs).
    pub fn load_installed(&self, id: &str) -> Result<Recipe, IntakeError> {
        let state = self.read_state()?;
        let entry = state
            .recipes
            .get(id)
            .ok_or_else(|| IntakeError::Config(format!("recipe {id} is not installed")))?;
        if entry.withdrawn {
            return Err(IntakeError::Withdrawn { id: id.to_owned() });
        }
        let path = self.recipe_path(id, entry.revision);
        let bytes = std::fs::read(&path)
            .map_err(|source| IntakeError::State { path: path.clone(), source })?;
        // The file was verified on intake; its hash is checked again in case the disk changed.
        if bytes.len() > MAX_RECIPE_BYTES || hex(&Sha256::digest(&bytes)) != entry.sha256 {
            return Err(IntakeError::Tampered {
                what: path.display().to_string(),
                detail: "differs from what was installed".into(),
            });
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| IntakeError::Config(format!("{} is not UTF-8", path.display())))?;
        authoring::parse(&path.display().to_string(), text)
            .map_err(|d| IntakeError::Config(d.to_string()))
    }

    /// Path of an installed recipe file.
    pub fn recipe_path(&self, id: &str, revision: u32) -> PathBuf {
        self.state_dir.join("installed").join(id).join(format!("{revision}.toml"))
    }

    async fn load<T: Transport + Send + Sync + 'static>(
        &self,
        transport: T,
        metadata: Url,
        targets: Url,
        now: Timestamp,
    ) -> Result<IntakeReport, IntakeError> {
        let mut state = self.read_state()?;
        let repo = RepositoryLoader::new(&self.trusted_root, metadata, targets)
            .transport(transport)
            .datastore(self.state_dir.join("tuf"))
            .limits(LIMITS)
            .expiration_enforcement(ExpirationEnforcement::Safe)
            .load()
            .await
            .map_err(map_tough)?;

        let versions = Versions {
            root: repo.root().signed.version.get(),
            targets: repo.targets().signed.version.get(),
            snapshot: repo.snapshot().signed.version.get(),
            timestamp: repo.timestamp().signed.version.get(),
        };
        // tough checked expiry with the system clock; the caller's `now` is what the record says.
        for (role, expires) in [
            ("root", repo.root().signed.expires),
            ("targets", repo.targets().signed.expires),
            ("snapshot", repo.snapshot().signed.expires),
            ("timestamp", repo.timestamp().signed.expires),
        ] {
            if now >= expires {
                return Err(IntakeError::Expired {
                    role: role.into(),
                    detail: format!("expired {expires}, now {now}"),
                });
            }
        }
        // Independent of tough's datastore, so that losing it cannot reopen a rollback.
        for (role, have, offered) in [
            ("root", state.versions.root, versions.root),
            ("targets", state.versions.targets, versions.targets),
            ("snapshot", state.versions.snapshot, versions.snapshot),
            ("timestamp", state.versions.timestamp, versions.timestamp),
        ] {
            if offered < have {
                return Err(IntakeError::Rollback { role: role.into(), have, offered });
            }
        }

        let mut report = IntakeReport {
            versions,
            installed: Vec::new(),
            unchanged: Vec::new(),
            refused: Vec::new(),
            withdrawn: Vec::new(),
        };
        let mut targets: Vec<_> = repo.all_targets().map(|(n, t)| (n.clone(), t.clone())).collect();
        targets.sort_by(|a, b| a.0.raw().cmp(b.0.raw()));
        // Withdrawal: an installed recipe whose target the verified metadata no longer lists.
        for (id, entry) in &mut state.recipes {
            let listed = targets.iter().any(|(n, _)| n.raw() == super::target_name(id));
            entry.withdrawn = !listed;
            if !listed {
                report.withdrawn.push(id.clone());
            }
        }
        for (name, target) in targets {
            let refuse = |reason| Refused { target: name.raw().to_owned(), reason };
            let custom = match self.check_custom(&name, &target, &state) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    report.unchanged.push(name.raw().to_owned());
                    continue;
                }
                Err(reason) => {
                    report.refused.push(refuse(reason));
                    continue;
                }
            };
            let bytes = match read_target(&repo, &name).await {
                Ok(b) => b,
                Err(reason) => {
                    report.refused.push(refuse(reason));
                    continue;
                }
            };
            let recipe = match check_recipe(name.raw(), &bytes, &custom) {
                Ok(r) => r,
                Err(reason) => {
                    report.refused.push(refuse(reason));
                    continue;
                }
            };
            let sha256 = hex(&Sha256::digest(&bytes));
            let path = self.recipe_path(recipe.id.as_str(), recipe.revision);
            write_atomic(&path, &bytes)?;
            state.recipes.insert(
                recipe.id.to_string(),
                InstalledEntry {
                    revision: recipe.revision,
                    sha256: sha256.clone(),
                    withdrawn: false,
                },
            );
            report.installed.push(Installed { recipe, sha256, path });
        }
        state.versions = versions;
        self.write_state(&state)?;
        Ok(report)
    }

    /// Decides from signed metadata alone whether to fetch a target: `Ok(None)` means already
    /// installed.
    fn check_custom(
        &self,
        name: &tough::TargetName,
        target: &tough::schema::Target,
        state: &State,
    ) -> Result<Option<RecipeCustom>, RefusalReason> {
        if target.length > MAX_RECIPE_BYTES as u64 {
            return Err(RefusalReason::TooLarge(target.length));
        }
        let custom: RecipeCustom = serde_json::from_value(serde_json::Value::Object(
            target.custom.clone().into_iter().collect(),
        ))
        .map_err(|e| RefusalReason::BadCustom(e.to_string()))?;
        if super::target_name(&custom.recipe_id) != name.raw() {
            return Err(RefusalReason::BadCustom(format!(
                "recipe_id {} does not match the target name",
                custom.recipe_id
            )));
        }
        if !custom.unit_models.contains(&self.unit_model) {
            return Err(RefusalReason::OtherUnitModel {
                models: custom.unit_models.join(", "),
                ours: self.unit_model.clone(),
            });
        }
        let needs = Version::parse(&custom.min_appliance_version).ok_or_else(|| {
            RefusalReason::BadCustom(format!(
                "min_appliance_version {}",
                custom.min_appliance_version
            ))
        })?;
        if needs > self.appliance_version {
            return Err(RefusalReason::NewerAppliance {
                needs: needs.to_string(),
                ours: self.appliance_version.to_string(),
            });
        }
        if let Some(have) = state.recipes.get(&custom.recipe_id) {
            let sha = hex(&target.hashes.sha256.clone().into_vec());
            if custom.revision < have.revision {
                return Err(RefusalReason::RevisionRollback {
                    installed: have.revision,
                    offered: custom.revision,
                });
            }
            if custom.revision == have.revision {
                return if sha == have.sha256 {
                    Ok(None)
                } else {
                    Err(RefusalReason::RevisionReused(have.revision))
                };
            }
        }
        Ok(Some(custom))
    }

    fn read_state(&self) -> Result<State, IntakeError> {
        let path = self.state_dir.join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| IntakeError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(IntakeError::State { path, source }),
        }
    }

    fn write_state(&self, state: &State) -> Result<(), IntakeError> {
        let bytes =
            serde_json::to_vec_pretty(state).map_err(|e| IntakeError::Config(e.to_string()))?;
        write_atomic(&self.state_dir.join("state.json"), &bytes)
    }
}

async fn read_target(
    repo: &tough::Repository,
    name: &tough::TargetName,
) -> Result<Vec<u8>, RefusalReason> {
    let stream = repo
        .read_target(name)
        .await
        .map_err(|e| RefusalReason::Tampered(e.to_string()))?
        .ok_or_else(|| RefusalReason::Tampered("listed but not found".into()))?;
    let mut stream = Box::pin(stream);
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        // tough checks length and hash as the stream ends; any error means the bytes are bad.
        let chunk = chunk.map_err(|e| RefusalReason::Tampered(e.to_string()))?;
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn check_recipe(name: &str, bytes: &[u8], custom: &RecipeCustom) -> Result<Recipe, RefusalReason> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| RefusalReason::Invalid("not UTF-8".into()))?;
    let recipe = authoring::parse(name, text).map_err(|d| RefusalReason::Invalid(d.to_string()))?;
    let mismatch = |what: &str| Err(RefusalReason::Mismatch(what.to_owned()));
    if recipe.id.as_str() != custom.recipe_id {
        return mismatch("id");
    }
    if recipe.revision != custom.revision {
        return mismatch("revision");
    }
    if recipe.min_appliance_version.to_string() != custom.min_appliance_version {
        return mismatch("min_appliance_version");
    }
    if recipe.unit_models != custom.unit_models {
        return mismatch("unit_models");
    }
    Ok(recipe)
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> IntakeError + '_ {
    move |source| IntakeError::State { path: path.to_owned(), source }
}

/// Write to a temporary file, sync, rename, sync the directory: a power cut leaves the old or
/// the new file, and once this returns, the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IntakeError> {
    write_atomic_with(path, bytes, &mut sync_dir)
}

/// Makes a directory's entries (a rename, a new file or subdirectory) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// [`write_atomic`] with the directory sync passed in, so that a test can see when it happens.
fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    sync_dir: &mut dyn FnMut(&Path) -> std::io::Result<()>,
) -> Result<(), IntakeError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        if let Some(up) = dir.parent().filter(|u| !u.as_os_str().is_empty()) {
            sync_dir(up).map_err(err(up))?;
        }
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
    std::io::Write::write_all(&mut f, bytes).map_err(err(&tmp))?;
    f.sync_all().map_err(err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err(path))?;
    // The rename lives in the directory: until the directory is synced a power cut can bring
    // the old file back, which for state.json would be a rollback of our own state.
    sync_dir(dir).map_err(err(dir))
}

fn role_name(role: RoleType) -> String {
    role.to_string()
}

/// One line per tough error, in the categories the appliance reports.
fn map_tough(e: tough::error::Error) -> IntakeError {
    use tough::error::Error as E;
    match e {
        E::ExpiredMetadata { role, .. } => {
            IntakeError::Expired { role: role_name(role), detail: "by the system clock".into() }
        }
        E::OlderMetadata { role, current_version, new_version, .. } => IntakeError::Rollback {
            role: role_name(role),
            have: current_version,
            offered: new_version,
        },
        E::OlderSnapshotInTimestamp { snapshot_new, snapshot_old, .. } => IntakeError::Rollback {
            role: "snapshot".into(),
            have: snapshot_old,
            offered: snapshot_new,
        },
        E::SnapshotRoleRollback { role, old_role_version, new_role_version, .. } => {
            IntakeError::Rollback { role, have: old_role_version, offered: new_role_version }
        }
        E::VerifyMetadata { role, source, .. } => signature(role_name(role), source),
        E::VerifyRoleMetadata { role, source, .. } => signature(role, source),
        E::VerifyTrustedMetadata { source, .. } => {
            IntakeError::Config(format!("the shipped root.json does not verify: {source}"))
        }
        E::ParseTrustedMetadata { source, .. } => {
            IntakeError::Config(format!("the shipped root.json does not parse: {source}"))
        }
        E::SystemTimeSteppedBackward { sys_time, latest_known_time, .. } => {
            IntakeError::ClockSteppedBack {
                now: sys_time.to_string(),
                previously: latest_known_time.to_string(),
            }
        }
        E::Transport { url, source, .. } => {
            let text = source.to_string();
            if source.kind() == tough::TransportErrorKind::FileNotFound {
                IntakeError::Fetch(format!("{url} is missing"))
            } else if text.contains("Hash mismatch") || text.contains("Maximum size") {
                // tough checks length and hash inside the fetch stream, so a file that does not
                // match its signed description surfaces as a transport error; it is tampering.
                IntakeError::Tampered { what: url.to_string(), detail: text }
            } else {
                IntakeError::Fetch(text)
            }
        }
        e @ (E::ParseMetadata { .. }
        | E::HashMismatch { .. }
        | E::MaxSizeExceeded { .. }
        | E::VersionMismatch { .. }
        | E::MetaMissing { .. }
        | E::MissingSnapshotMeta { .. }
        | E::SnapshotTargetsMetaMissing { .. }
        | E::TimestampMetaLength { .. }) => {
            IntakeError::Tampered { what: "metadata".into(), detail: e.to_string() }
        }
        other => IntakeError::Other(other.to_string()),
    }
}

fn signature(role: String, source: tough::schema::Error) -> IntakeError {
    match source {
        tough::schema::Error::SignatureThreshold { valid: 0, .. } => {
            IntakeError::UnknownKeys { role }
        }
        tough::schema::Error::SignatureThreshold { threshold, valid, .. } => {
            IntakeError::Threshold { role, threshold, valid }
        }
        other => {
            IntakeError::Tampered { what: format!("{role} metadata"), detail: other.to_string() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The directory holding the file is synced after the rename, so the rename is durable.
    #[test]
    fn write_atomic_syncs_the_directory_after_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"old").unwrap();
        let mut synced: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        write_atomic_with(&path, b"new", &mut |d| {
            synced.push((d.to_owned(), std::fs::read(&path)?));
            Ok(())
        })
        .unwrap();
        assert_eq!(synced, [(dir.path().to_owned(), b"new".to_vec())]);

        // A new subdirectory: its parent is synced too, then the subdirectory.
        let nested = dir.path().join("installed/aza/1.toml");
        std::fs::create_dir(dir.path().join("installed")).unwrap();
        let mut dirs = Vec::new();
        write_atomic_with(&nested, b"x", &mut |d| {
            dirs.push(d.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(dirs, [dir.path().join("installed"), dir.path().join("installed/aza")]);

        // A failing directory sync is an error, not a silent success.
        let err = write_atomic_with(&path, b"newer", &mut |_| Err(std::io::Error::other("EIO")))
            .unwrap_err();
        assert!(matches!(err, IntakeError::State { .. }), "{err}");

        // And the real one works on this file system.
        write_atomic(&path, b"real").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"real");
    }
}
