//! Recipes on the appliance: installed only through the TUF intake, usable only after a QA
//! user activated the revision with an e-signature.
//!
//! Installation and activation are recorded under the subject `recipe:<id>@<revision>`, so
//! the activation signature is bound to the install entry that names the file's SHA-256.

use std::path::Path;

use galen_recipes::model::Recipe;
use galen_record::EntryKind;
use galen_record::signature::Meaning;
use serde::Serialize;

use super::{Caller, Needs, Service, ServiceError};
use crate::records::NewEntry;
use crate::records::users::{Action, Session};

/// One installed recipe as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipeSummary {
    pub id: String,
    pub revision: u32,
    pub name: String,
    pub sha256: String,
    /// A QA user activated this revision.
    pub active: bool,
}

/// The record subject of a recipe revision.
pub(super) fn subject(id: &str, revision: u32) -> String {
    format!("recipe:{id}@{revision}")
}

impl Service {
    /// Every installed recipe, with whether its revision is active.
    pub fn recipes(&self, caller: &Caller) -> Result<Vec<RecipeSummary>, ServiceError> {
        self.authorize(caller, "Recipes.List", Needs::Permit(Action::ViewRecords))?;
        let mut out = Vec::new();
        for (id, (revision, sha256)) in self.intake.installed()? {
            // Withdrawn recipes no longer load; they are not offered.
            let Ok(recipe) = self.intake.load_installed(&id) else { continue };
            let active = !self.signed_by(&subject(&id, revision), Meaning::Activated)?.is_empty();
            out.push(RecipeSummary { id, revision, name: recipe.name, sha256, active });
        }
        Ok(out)
    }

    /// One installed recipe, whole.
    pub fn recipe(&self, caller: &Caller, id: &str) -> Result<Recipe, ServiceError> {
        self.authorize(caller, "Recipes.Details", Needs::Permit(Action::ViewRecords))?;
        self.load_recipe(id)
    }

    pub(super) fn load_recipe(&self, id: &str) -> Result<Recipe, ServiceError> {
        if !self.intake.installed()?.contains_key(id) {
            return Err(ServiceError::NoSuchRecipe(id.to_owned()));
        }
        Ok(self.intake.load_installed(id)?)
    }

    /// The recipe, if its installed revision is active.
    pub(super) fn active_recipe(&self, id: &str) -> Result<Recipe, ServiceError> {
        let recipe = self.load_recipe(id)?;
        if self.signed_by(&subject(id, recipe.revision), Meaning::Activated)?.is_empty() {
            return Err(ServiceError::RecipeNotActive {
                id: id.to_owned(),
                revision: recipe.revision,
            });
        }
        Ok(recipe)
    }

    /// Verifies and installs the recipes of a TUF repository in `dir` (a folder on the unit).
    /// Returns one line per recipe: installed, unchanged, refused (with why) or withdrawn.
    pub fn install_recipes(
        &self,
        caller: &Caller,
        dir: &Path,
    ) -> Result<Vec<String>, ServiceError> {
        let session =
            self.authorize(caller, "Recipes.Install", Needs::Permit(Action::ImportRecipes))?;
        self.install_from(&session, dir, &dir.display().to_string())
    }

    /// Installs from `dir`, recording `source` as where the update came from.
    pub(super) fn install_from(
        &self,
        session: &Session,
        dir: &Path,
        source: &str,
    ) -> Result<Vec<String>, ServiceError> {
        let now = jiff::Timestamp::from_millisecond(self.clock.now().0)
            .map_err(|e| ServiceError::InvalidInput(format!("the clock is out of range: {e}")))?;
        let report = self.runtime.block_on(self.intake.from_directory(dir, now))?;
        let at = self.at();
        let mut lines = Vec::new();
        let mut store = self.store()?;
        for i in &report.installed {
            let r = &i.recipe;
            store.append(
                at,
                NewEntry {
                    user_id: Some(session.user_id),
                    batch_id: Some(subject(r.id.as_str(), r.revision)),
                    new_value: Some(format!("{} revision {} installed", r.id, r.revision)),
                    reason: Some(format!("signed update from {source}")),
                    payload: serde_json::json!({
                        "recipe": r.id.as_str(), "revision": r.revision, "sha256": i.sha256,
                        "source": source,
                        "tuf": { "root": report.versions.root, "targets": report.versions.targets,
                                 "snapshot": report.versions.snapshot, "timestamp": report.versions.timestamp },
                    }),
                    ..NewEntry::new(EntryKind::Audit, "recipe.installed")
                },
            )?;
            lines.push(format!(
                "installed {} revision {} (waiting for QA activation)",
                r.id, r.revision
            ));
        }
        lines.extend(report.unchanged.iter().map(|id| format!("unchanged {id}")));
        lines.extend(report.refused.iter().map(|r| format!("refused {}: {}", r.target, r.reason)));
        lines.extend(report.withdrawn.iter().map(|id| format!("withdrawn {id}")));
        Ok(lines)
    }

    /// QA activates the installed revision of a recipe (an e-signature, PIN re-asked).
    pub fn activate_recipe(
        &self,
        caller: &Caller,
        id: &str,
        pin: &str,
    ) -> Result<u32, ServiceError> {
        self.authorize(
            caller,
            "Recipes.Activate",
            Needs::Permit(Action::Sign(Meaning::Activated)),
        )?;
        let recipe = self.load_recipe(id)?;
        let subject = subject(id, recipe.revision);
        if !self.signed_by(&subject, Meaning::Activated)?.is_empty() {
            return Err(ServiceError::InvalidInput(format!(
                "{id} revision {} is already active",
                recipe.revision
            )));
        }
        self.sign(caller, "Recipes.Activate", pin, Meaning::Activated, &subject)?;
        Ok(recipe.revision)
    }
}
