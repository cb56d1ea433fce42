//! The manufacturer's side: generate keys, create and rotate `root.json`, and publish recipes
//! into a TUF repository with `tough`'s editor.
//!
//! Publishing refuses a recipe that does not lint, and a revision that is not higher than the
//! one already published under the same id (identical bytes are skipped): revisions only go up,
//! on the publisher as on the unit.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::{Hashes, KeyHolder, RoleKeys, RoleType, Root, Signed, Target};
use tough::{ExpirationEnforcement, FilesystemTransport, RepositoryLoader};
use url::Url;

use super::{RecipeCustom, target_name};
use crate::authoring::{self, Diagnostics, MAX_RECIPE_BYTES};
use crate::pharmcat::hex;

/// Published recipes by target name: their custom metadata and SHA-256.
type Published = HashMap<String, (RecipeCustom, Vec<u8>)>;

/// TUF specification version written into new metadata.
const SPEC_VERSION: &str = "1.0.0";

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A recipe does not lint.
    #[error("{0}")]
    Recipe(Diagnostics),
    /// A key file is missing or not a PKCS#8 DER key tough accepts.
    #[error("{}: {message}", path.display())]
    Key {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// tough refused an operation.
    #[error("{what}: {source}")]
    Tuf {
        /// What we were doing.
        what: String,
        /// tough's error.
        source: Box<tough::error::Error>,
    },
    /// The revision does not go up.
    #[error(
        "{id}: revision {offered} is not higher than the published revision {published}; raise `revision`"
    )]
    RevisionNotHigher {
        /// Recipe id.
        id: String,
        /// Published revision.
        published: u32,
        /// Offered revision.
        offered: u32,
    },
    /// Anything else about the request.
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io { path: path.to_owned(), source }
}

fn tuf(what: impl Into<String>) -> impl FnOnce(tough::error::Error) -> PublishError {
    let what = what.into();
    move |source| PublishError::Tuf { what, source: Box::new(source) }
}

/// Writes a new Ed25519 key as PKCS#8 DER, refusing to overwrite an existing file.
pub fn generate_key(path: &Path) -> Result<(), PublishError> {
    let rng = SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|e| PublishError::Key { path: path.to_owned(), message: e.to_string() })?;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io(path))?;
    std::io::Write::write_all(&mut file, doc.as_ref()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// The public TUF key of a private key file.
fn public_key(path: &Path) -> Result<tough::schema::key::Key, PublishError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let pair = tough::sign::parse_keypair(&bytes)
        .map_err(|e| PublishError::Key { path: path.to_owned(), message: e.to_string() })?;
    Ok(tough::sign::Sign::tuf_key(&pair))
}

fn key_sources(paths: &[PathBuf]) -> Vec<Box<dyn KeySource>> {
    paths
        .iter()
        .map(|p| Box::new(LocalKeySource { path: p.clone() }) as Box<dyn KeySource>)
        .collect()
}

/// Who may sign one role.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    /// The role.
    pub role: RoleType,
    /// Private key files whose public halves the root lists.
    pub keys: Vec<PathBuf>,
    /// Signatures required.
    pub threshold: u64,
}

/// Creates a signed `root.json` (version 1) listing the keys of every role, signed by the
/// root keys among `sign_with`. Returns the file's bytes.
pub async fn create_root(
    roles: &[RoleSpec],
    expires: Timestamp,
    sign_with: &[PathBuf],
) -> Result<Vec<u8>, PublishError> {
    let mut root = Root {
        spec_version: SPEC_VERSION.to_owned(),
        consistent_snapshot: true,
        version: NonZeroU64::MIN,
        expires,
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: HashMap::new(),
    };
    for spec in roles {
        set_role(&mut root, spec)?;
    }
    let signed = SignedRole::new(
        root.clone(),
        &KeyHolder::Root(root),
        &key_sources(sign_with),
        &SystemRandom::new(),
    )
    .await
    .map_err(tuf("signing root.json"))?;
    Ok(signed.buffer().clone())
}

fn set_role(root: &mut Root, spec: &RoleSpec) -> Result<(), PublishError> {
    let threshold = NonZeroU64::new(spec.threshold)
        .filter(|t| t.get() <= spec.keys.len() as u64)
        .ok_or_else(|| {
        PublishError::Invalid(format!(
            "{}: threshold must be 1–{} (the number of keys)",
            spec.role,
            spec.keys.len()
        ))
    })?;
    let mut keyids = Vec::new();
    for path in &spec.keys {
        let key = public_key(path)?;
        let id = key
            .key_id()
            .map_err(|e| PublishError::Key { path: path.clone(), message: e.to_string() })?;
        root.keys.insert(id.clone(), key);
        keyids.push(id);
    }
    root.roles.insert(spec.role, RoleKeys { keyids, threshold, _extra: HashMap::new() });
    Ok(())
}

/// Expiry of each role written by a publish.
#[derive(Debug, Clone, Copy)]
pub struct Expiries {
    /// targets.json.
    pub targets: Timestamp,
    /// snapshot.json.
    pub snapshot: Timestamp,
    /// timestamp.json.
    pub timestamp: Timestamp,
}

/// Progress of a long publish, for the CLI to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Checked and staged one recipe.
    Recipe {
        /// 1-based.
        done: usize,
        /// Of.
        total: usize,
        /// Recipe id.
        id: String,
    },
    /// Signing metadata.
    Signing,
    /// Writing metadata.
    Writing,
}

/// What a publish produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// Versions written: targets, snapshot, timestamp.
    pub versions: (u64, u64, u64),
    /// Root version in force.
    pub root_version: u64,
    /// Recipes added or updated: id and revision.
    pub published: Vec<(String, u32)>,
    /// Recipes skipped because the same bytes were already published.
    pub unchanged: Vec<String>,
    /// Number of targets in the repository after the publish.
    pub targets: usize,
}

/// `N.root.json` files in a metadata directory, sorted by version.
pub fn root_files(metadata: &Path) -> Result<Vec<(u64, PathBuf)>, PublishError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(metadata) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(metadata)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(metadata))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_suffix(".root.json").and_then(|n| n.parse::<u64>().ok()) {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn dir_url(path: &Path) -> Result<Url, PublishError> {
    let abs = std::fs::canonicalize(path).map_err(io(path))?;
    Url::from_directory_path(&abs)
        .map_err(|()| PublishError::Invalid(format!("{} is not an absolute path", abs.display())))
}

/// Creates or updates the repository at `repo` with these recipe files (name, bytes).
///
/// A new repository needs `initial_root` (the `root.json` from `create_root`); an existing one
/// uses its newest `N.root.json`. `keys` are the private key files to sign with.
pub async fn publish(
    repo: &Path,
    initial_root: Option<&Path>,
    keys: &[PathBuf],
    recipes: &[(String, Vec<u8>)],
    expiries: Expiries,
    progress: &mut dyn FnMut(Progress),
) -> Result<PublishReport, PublishError> {
    let metadata = repo.join("metadata");
    let targets_dir = repo.join("targets");
    std::fs::create_dir_all(&metadata).map_err(io(&metadata))?;
    std::fs::create_dir_all(&targets_dir).map_err(io(&targets_dir))?;

    let mut roots = root_files(&metadata)?;
    if roots.is_empty() {
        let Some(initial) = initial_root else {
            return Err(PublishError::Invalid(format!(
                "{} holds no N.root.json; give the root.json made by `recipe keys`",
                metadata.display()
            )));
        };
        let bytes = std::fs::read(initial).map_err(io(initial))?;
        let root: Signed<Root> = serde_json::from_slice(&bytes)
            .map_err(|e| PublishError::Invalid(format!("{}: {e}", initial.display())))?;
        let path = metadata.join(format!("{}.root.json", root.signed.version));
        std::fs::write(&path, &bytes).map_err(io(&path))?;
        roots = root_files(&metadata)?;
    }
    let (root_version, latest_root) =
        roots.last().cloned().ok_or_else(|| PublishError::Invalid("no root".into()))?;
    let (_, first_root) =
        roots.first().cloned().ok_or_else(|| PublishError::Invalid("no root".into()))?;

    let existing = if metadata.join("timestamp.json").exists() {
        let trusted = std::fs::read(&first_root).map_err(io(&first_root))?;
        // The publisher re-signs whatever is there, expired or not; the unit enforces expiry.
        let loaded = RepositoryLoader::new(&trusted, dir_url(&metadata)?, dir_url(&targets_dir)?)
            .transport(FilesystemTransport)
            .expiration_enforcement(ExpirationEnforcement::Unsafe)
            .load()
            .await
            .map_err(tuf("loading the existing repository"))?;
        Some(loaded)
    } else {
        None
    };
    let (next, published_custom): ((u64, u64, u64), Published) = match &existing {
        Some(r) => {
            let mut custom = HashMap::new();
            for (name, t) in r.all_targets() {
                if let Ok(c) = serde_json::from_value::<RecipeCustom>(serde_json::Value::Object(
                    t.custom.clone().into_iter().collect(),
                )) {
                    custom.insert(name.raw().to_owned(), (c, t.hashes.sha256.clone().into_vec()));
                }
            }
            (
                (
                    r.targets().signed.version.get() + 1,
                    r.snapshot().signed.version.get() + 1,
                    r.timestamp().signed.version.get() + 1,
                ),
                custom,
            )
        }
        None => ((1, 1, 1), HashMap::new()),
    };
    let mut editor = match existing {
        Some(r) => RepositoryEditor::from_repo(&latest_root, r).await,
        None => RepositoryEditor::new(&latest_root).await,
    }
    .map_err(tuf("opening the repository for editing"))?;

    let mut published = Vec::new();
    let mut unchanged = Vec::new();
    for (i, (file, bytes)) in recipes.iter().enumerate() {
        if bytes.len() > MAX_RECIPE_BYTES {
            return Err(PublishError::Invalid(format!(
                "{file}: larger than {MAX_RECIPE_BYTES} bytes"
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| PublishError::Invalid(format!("{file}: not UTF-8")))?;
        let recipe = authoring::parse(file, text).map_err(PublishError::Recipe)?;
        let name = target_name(recipe.id.as_str());
        let sha = Sha256::digest(bytes).to_vec();
        if let Some((old, old_sha)) = published_custom.get(&name) {
            if *old_sha == sha {
                unchanged.push(recipe.id.to_string());
                progress(Progress::Recipe {
                    done: i + 1,
                    total: recipes.len(),
                    id: recipe.id.to_string(),
                });
                continue;
            }
            if recipe.revision <= old.revision {
                return Err(PublishError::RevisionNotHigher {
                    id: recipe.id.to_string(),
                    published: old.revision,
                    offered: recipe.revision,
                });
            }
        }
        let custom = RecipeCustom {
            recipe_id: recipe.id.to_string(),
            revision: recipe.revision,
            min_appliance_version: recipe.min_appliance_version.to_string(),
            unit_models: recipe.unit_models.clone(),
        };
        let custom = match serde_json::to_value(&custom) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
            _ => return Err(PublishError::Invalid("custom metadata is not an object".into())),
        };
        let target = Target {
            length: bytes.len() as u64,
            hashes: Hashes { sha256: Decoded::<Hex>::from(sha.clone()), _extra: HashMap::new() },
            custom,
            _extra: HashMap::new(),
        };
        let path = targets_dir.join(format!("{}.{name}", hex(&sha)));
        write_atomic(&path, bytes)?;
        editor.add_target(name.as_str(), target).map_err(tuf(format!("adding {name}")))?;
        published.push((recipe.id.to_string(), recipe.revision));
        progress(Progress::Recipe { done: i + 1, total: recipes.len(), id: recipe.id.to_string() });
    }

    let nz = |v: u64| NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN);
    editor
        .targets_version(nz(next.0))
        .map_err(tuf("setting the targets version"))?
        .targets_expires(expiries.targets)
        .map_err(tuf("setting the targets expiry"))?
        .snapshot_version(nz(next.1))
        .snapshot_expires(expiries.snapshot)
        .timestamp_version(nz(next.2))
        .timestamp_expires(expiries.timestamp);
    progress(Progress::Signing);
    let signed = editor.sign(&key_sources(keys)).await.map_err(tuf("signing the repository"))?;
    progress(Progress::Writing);
    signed.write(&metadata).await.map_err(tuf("writing metadata"))?;
    let targets = signed_targets_count(&metadata, next.0)?;
    Ok(PublishReport { versions: next, root_version, published, unchanged, targets })
}

fn signed_targets_count(metadata: &Path, version: u64) -> Result<usize, PublishError> {
    let path = metadata.join(format!("{version}.targets.json"));
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let t: Signed<tough::schema::Targets> = serde_json::from_slice(&bytes)
        .map_err(|e| PublishError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(t.signed.targets.len())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Writes root version N+1 into the repository, with the given roles' keys replaced, signed by
/// the old root keys (`old_root_keys`) and by the new ones (`new_root_keys`, which may equal the
/// old when the root key is not rotated). Returns the new version.
pub async fn rotate_root(
    repo: &Path,
    replace: &[RoleSpec],
    expires: Timestamp,
    old_root_keys: &[PathBuf],
    new_root_keys: &[PathBuf],
) -> Result<u64, PublishError> {
    let metadata = repo.join("metadata");
    let (version, path) = root_files(&metadata)?.pop().ok_or_else(|| {
        PublishError::Invalid(format!("{} holds no N.root.json", metadata.display()))
    })?;
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let old: Signed<Root> = serde_json::from_slice(&bytes)
        .map_err(|e| PublishError::Invalid(format!("{}: {e}", path.display())))?;
    let mut new = old.signed.clone();
    new.version = NonZeroU64::new(version + 1).unwrap_or(NonZeroU64::MIN);
    new.expires = expires;
    for spec in replace {
        set_role(&mut new, spec)?;
    }
    // Drop keys no role lists any more: that is what revokes them.
    let used: Vec<Decoded<Hex>> =
        new.roles.values().flat_map(|r| r.keyids.iter().cloned()).collect();
    new.keys.retain(|id, _| used.contains(id));

    let rng = SystemRandom::new();
    let by_new = SignedRole::new(
        new.clone(),
        &KeyHolder::Root(new.clone()),
        &key_sources(new_root_keys),
        &rng,
    )
    .await
    .map_err(tuf("signing the new root with the new root keys"))?;
    let by_old = SignedRole::new(new.clone(), &KeyHolder::Root(old.signed.clone()), &key_sources(old_root_keys), &rng)
        .await
        .map_err(|e| {
            PublishError::Invalid(format!(
                "the new root needs a threshold of signatures from both the old and the new root keys; the old root keys given: {e}"
            ))
        })?;
    if by_old.signed().signatures.len() < threshold(&old.signed)
        || by_new.signed().signatures.len() < threshold(&new)
    {
        return Err(PublishError::Invalid(
            "the new root needs a threshold of signatures from both the old and the new root keys"
                .into(),
        ));
    }
    let signed = by_new
        .add_old_signatures(by_old.signed().signatures.clone())
        .map_err(tuf("combining root signatures"))?;
    signed.write(&metadata, true).await.map_err(tuf("writing the new root"))?;
    Ok(version + 1)
}

fn threshold(root: &Root) -> usize {
    root.roles
        .get(&RoleType::Root)
        .map_or(usize::MAX, |r| usize::try_from(r.threshold.get()).unwrap_or(usize::MAX))
}
