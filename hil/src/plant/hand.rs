//! Additions by hand: a pharmacist weighs a solid (a powder for a manual dispense) onto the
//! vessel standing on the balance. The mass lands at once, at ambient temperature; the
//! balance is disturbed by it and settles after its `settle_s`, as it does after a pour.
//!
//! Only solids: a liquid the plant knows arrives through the pumps, and keeping the two apart
//! keeps [`Plant::vessel_contents`] (liquids, mL) and [`Plant::vessel_solids`] (solids, g)
//! disjoint.

use std::collections::BTreeMap;

use super::config::builtin_liquids;
use super::{Plant, PlantConfig};

/// Specific heat of a powder, J/(g·K): organic solids lie around 1.0–1.5. A few grams beside a
/// 60 g glass vessel barely move the thermal mass, so one typical value is enough.
pub const SOLID_SPECIFIC_HEAT_J_GK: f64 = 1.2;

/// Longest material name: a label, not a document.
const MAX_NAME: usize = 64;

/// A hand addition the plant refuses; nothing was added.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HandAdditionError {
    /// The name is empty, too long, or has characters other than letters, digits, '-', '_'.
    #[error("material `{material}`: use 1 to 64 letters, digits, '-' or '_'")]
    Name {
        /// The name given.
        material: String,
    },
    /// A liquid of the plant's: those arrive through the pumps.
    #[error("`{material}` is a liquid: liquids arrive through the pumps, not by hand")]
    Liquid {
        /// The liquid's name.
        material: String,
    },
    /// Not a finite number (NaN or infinite).
    #[error("{grams} g of {material}: not a number of grams")]
    NotFinite {
        /// The material.
        material: String,
        /// The mass given.
        grams: f64,
    },
    /// Zero or negative: a hand cannot take powder back out of the vessel.
    #[error("{grams} g of {material}: must be more than 0 g")]
    NotPositive {
        /// The material.
        material: String,
        /// The mass given.
        grams: f64,
    },
    /// More than the balance can weigh: nobody weighs that by hand on this balance.
    #[error("{grams} g of {material}: more than the balance's capacity of {capacity_g} g")]
    AboveCapacity {
        /// The material.
        material: String,
        /// The mass given.
        grams: f64,
        /// The balance's capacity, g.
        capacity_g: f64,
    },
}

impl PlantConfig {
    /// Whether a plant built from this configuration accepts adding `grams` of `material` by
    /// hand (pure; scenarios and the rig check before they schedule one).
    pub fn check_hand_addition(&self, material: &str, grams: f64) -> Result<(), HandAdditionError> {
        let material_owned = || material.to_owned();
        if material.is_empty()
            || material.len() > MAX_NAME
            || !material.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(HandAdditionError::Name { material: material_owned() });
        }
        if self.liquids.contains_key(material) || builtin_liquids().contains_key(material) {
            return Err(HandAdditionError::Liquid { material: material_owned() });
        }
        if !grams.is_finite() {
            return Err(HandAdditionError::NotFinite { material: material_owned(), grams });
        }
        if grams <= 0.0 {
            return Err(HandAdditionError::NotPositive { material: material_owned(), grams });
        }
        let capacity_g = self.balance.capacity_g;
        if grams > capacity_g {
            return Err(HandAdditionError::AboveCapacity {
                material: material_owned(),
                grams,
                capacity_g,
            });
        }
        Ok(())
    }
}

impl Plant {
    /// Weighs `grams` of the solid `material` into the vessel by hand, now. The balance senses
    /// the new load from the next step and calls it stable `settle_s` later; the ledger counts
    /// it in [`super::Ledger::by_hand_g`].
    pub fn add_by_hand(&mut self, material: &str, grams: f64) -> Result<(), HandAdditionError> {
        self.cfg.check_hand_addition(material, grams)?;
        // The powder arrives at ambient and mixes into the lumped thermal mass.
        let c_before = self.heat_capacity_j_k();
        let added_c = grams * SOLID_SPECIFIC_HEAT_J_GK;
        self.vessel_c =
            (c_before * self.vessel_c + added_c * self.ambient_c) / (c_before + added_c);
        *self.solids_g.entry(material.to_owned()).or_default() += grams;
        self.ledger.by_hand_g += grams;
        self.last_disturbed_s = self.t_s;
        // The pan moves the moment the powder lands, before the next step samples the new
        // load: a stable reading must not be taken from the old sample in between.
        if !self.frozen {
            self.sample.settled = false;
        }
        Ok(())
    }

    /// Solids added by hand, by name, g.
    pub fn vessel_solids(&self) -> BTreeMap<String, f64> {
        self.solids_g.clone()
    }

    /// Solids in the vessel, g.
    pub fn vessel_solids_g(&self) -> f64 {
        // Not `sum()`: the float sum of nothing is −0.0, which logs print as "-0.000 g".
        self.solids_g.values().fold(0.0, |total, g| total + g)
    }

    pub(super) fn solids_heat_capacity_j_k(&self) -> f64 {
        self.vessel_solids_g() * SOLID_SPECIFIC_HEAT_J_GK
    }
}
