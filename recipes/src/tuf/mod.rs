//! Signed recipe distribution with TUF (`tough`): the manufacturer's publisher, the
//! appliance's intake and our pinned-CA HTTPS transport. This is the only library module that
//! does I/O.
//!
//! # Repository layout
//! ```text
//! repo/metadata/   N.root.json, timestamp.json, N.snapshot.json, N.targets.json
//! repo/targets/    <sha256>.<recipe-id>.toml      (consistent snapshots)
//! ```
//! The same directory is served over HTTPS (`<base>/metadata/`, `<base>/targets/`) or copied to
//! a USB stick. One target per recipe id, named `<id>.toml`; its `custom` metadata is a
//! [`RecipeCustom`]. Keys are Ed25519, PKCS#8 DER, one file per role
//! (`root.pk8`, `targets.pk8`, `snapshot.pk8`, `timestamp.pk8`).

pub mod intake;
pub mod publish;
pub mod transport;

use serde::{Deserialize, Serialize};

/// What a recipe target's `custom` metadata carries, so that a unit can refuse a recipe
/// before downloading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeCustom {
    /// Recipe id.
    pub recipe_id: String,
    /// Recipe revision.
    pub revision: u32,
    /// Oldest appliance software that can run it.
    pub min_appliance_version: String,
    /// Unit models it was validated on.
    pub unit_models: Vec<String>,
}

/// The key file name for a role in a key directory.
pub fn key_file(role: tough::schema::RoleType) -> &'static str {
    use tough::schema::RoleType;
    match role {
        RoleType::Root => "root.pk8",
        RoleType::Targets => "targets.pk8",
        RoleType::Snapshot => "snapshot.pk8",
        RoleType::Timestamp => "timestamp.pk8",
        RoleType::DelegatedTargets => "delegated.pk8",
    }
}

/// The four top-level roles.
pub const ROLES: [tough::schema::RoleType; 4] = [
    tough::schema::RoleType::Root,
    tough::schema::RoleType::Targets,
    tough::schema::RoleType::Snapshot,
    tough::schema::RoleType::Timestamp,
];

/// The target name of a recipe.
pub fn target_name(recipe_id: &str) -> String {
    format!("{recipe_id}.toml")
}
