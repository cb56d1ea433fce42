//! From a verified recipe and a patient's personalised parameters to the concrete phases the
//! engine runs: every mass, rate and temperature fixed before the batch starts, so that what
//! the pharmacist approved is exactly what runs.
//!
//! Pure: recipe and parameters in, a plan or a one-line reason out.

use std::time::Duration;

use galen_recipes::model::{DispenseTarget, PhaseKind, PumpKind, Recipe, ScanTarget};
use galen_recipes::personalise::Parameters;
use galen_recipes::quantity::Fixed;

use super::batch::{Planned, Pump};
use super::dispense::Spec;

/// What this unit's pumps can do (from the unit configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pumps {
    pub syringe_max_ml_min: Option<f64>,
    pub peristaltic_max_ml_min: Option<f64>,
}

impl Pumps {
    fn max(&self, pump: Pump) -> Option<f64> {
        match pump {
            Pump::Syringe => self.syringe_max_ml_min,
            Pump::Peristaltic => self.peristaltic_max_ml_min,
        }
    }
}

/// Why a recipe cannot be run on this unit for this patient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("phase {phase}: the recipe is personalised but no parameters were computed")]
    NoParameters { phase: String },
    #[error("phase {phase}: the computed mass is outside the recipe's bounds")]
    OutOfBounds { phase: String },
    #[error("phase {phase}: material {material} is not in the recipe")]
    UnknownMaterial { phase: String, material: String },
    #[error("phase {phase}: {material} is dispensed by pump but the recipe gives it no density")]
    NoDensity { phase: String, material: String },
    #[error("phase {phase}: this unit has no {pump}")]
    NoPump { phase: String, pump: &'static str },
    #[error("phase {phase}: the recipe has a vehicle dispense but the product has no vehicle")]
    NoVehicle { phase: String },
}

fn f(v: Fixed) -> f64 {
    // Micro-units fit f64's 53-bit mantissa exactly up to 9e9, far beyond any quantity here.
    #[allow(clippy::cast_precision_loss)]
    let micros = v.micros() as f64;
    micros / 1_000_000.0
}

fn pump_of(kind: PumpKind) -> Pump {
    match kind {
        PumpKind::Syringe => Pump::Syringe,
        PumpKind::Peristaltic => Pump::Peristaltic,
    }
}

fn pump_name(p: Pump) -> &'static str {
    match p {
        Pump::Syringe => "syringe pump",
        Pump::Peristaltic => "peristaltic pump",
    }
}

fn secs(v: Fixed) -> Duration {
    Duration::from_secs_f64(f(v).max(0.0))
}

/// The phases of `recipe` with the targets fixed for this batch.
pub fn plan(
    recipe: &Recipe,
    params: Option<&Parameters>,
    pumps: &Pumps,
) -> Result<Vec<Planned>, PlanError> {
    let mut out = Vec::new();
    for (_, _, phase) in recipe.phases() {
        let id = phase.id.to_string();
        let need_pump = |p: Pump| {
            pumps.max(p).ok_or(PlanError::NoPump { phase: id.clone(), pump: pump_name(p) })
        };
        let planned = match &phase.kind {
            PhaseKind::Scan { material } => {
                let material = match material {
                    ScanTarget::Material(m) => m.to_string(),
                    ScanTarget::Active => params
                        .ok_or(PlanError::NoParameters { phase: id.clone() })?
                        .active
                        .to_string(),
                };
                Planned::Scan { id, material }
            }
            PhaseKind::Prime { pump, volume } => {
                let pump = pump_of(*pump);
                let max = need_pump(pump)?;
                Planned::Prime { id, pump, volume_ml: f(volume.value()), ml_min: max }
            }
            PhaseKind::Tare => Planned::Tare { id },
            PhaseKind::Dispense { target, tolerance, pump } => {
                let mass = match (target, params) {
                    (DispenseTarget::Fixed { mass, .. }, _) => Some(*mass),
                    (_, Some(p)) => p.dispense_mass(target),
                    (_, None) => return Err(PlanError::NoParameters { phase: id }),
                }
                .ok_or(PlanError::NoParameters { phase: id.clone() })?;
                let within = match target {
                    DispenseTarget::Fixed { .. } => true,
                    DispenseTarget::Active { bounds } | DispenseTarget::Vehicle { bounds } => {
                        bounds.contains(mass)
                    }
                };
                if !within {
                    return Err(PlanError::OutOfBounds { phase: id });
                }
                let material = match target {
                    DispenseTarget::Fixed { material, .. } => material.clone(),
                    DispenseTarget::Active { .. } => {
                        params.ok_or(PlanError::NoParameters { phase: id.clone() })?.active.clone()
                    }
                    DispenseTarget::Vehicle { .. } => recipe
                        .personalisation
                        .as_ref()
                        .and_then(|p| p.product.vehicle.clone())
                        .ok_or(PlanError::NoVehicle { phase: id.clone() })?,
                };
                let m = recipe.material(&material).ok_or_else(|| PlanError::UnknownMaterial {
                    phase: id.clone(),
                    material: material.to_string(),
                })?;
                match pump {
                    None => Planned::ManualDispense {
                        id,
                        material: material.to_string(),
                        target_g: f(mass.value()),
                        tolerance_g: f(tolerance.value()),
                    },
                    Some(kind) => {
                        let pump = pump_of(*kind);
                        let max = need_pump(pump)?;
                        let density = m.density.ok_or_else(|| PlanError::NoDensity {
                            phase: id.clone(),
                            material: material.to_string(),
                        })?;
                        Planned::Dispense {
                            id,
                            material: material.to_string(),
                            pump,
                            spec: Spec {
                                target_g: f(mass.value()),
                                tolerance_g: f(tolerance.value()),
                                density_g_ml: f(density.value()),
                                max_rate_ml_min: max,
                            },
                        }
                    }
                }
            }
            PhaseKind::Heat { target, ramp } => {
                Planned::Heat { id, target_c: f(target.value()), ramp_c_per_min: f(ramp.value()) }
            }
            PhaseKind::Hold { band, duration } => Planned::Hold {
                id,
                min_c: f(band.min.value()),
                max_c: f(band.max.value()),
                duration: secs(duration.value()),
            },
            PhaseKind::Mix { duration, .. } => {
                Planned::Timed { id, duration: secs(duration.value()) }
            }
            PhaseKind::Cool { target, within } => {
                Planned::Cool { id, target_c: f(target.value()), within: secs(within.value()) }
            }
            PhaseKind::Clean { description, .. } => {
                Planned::Clean { id, instruction: description.clone() }
            }
        };
        out.push(planned);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use galen_recipes::patient::{Patient, PatientId, Source, Sourced};
    use galen_recipes::quantity::BodyWeight;
    use galen_recipes::{authoring, personalise, pharmcat};

    fn examples() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/examples")
    }

    fn azathioprine_for_tpmt_intermediate() -> (Recipe, Parameters) {
        let path = examples().join("azathioprine-oral-suspension.toml");
        let recipe =
            authoring::parse("azathioprine", &std::fs::read_to_string(path).unwrap()).unwrap();
        let lab = pharmcat::import(
            "lab.tsv",
            &std::fs::read(examples().join("lab/tpmt-intermediate.tsv")).unwrap(),
        )
        .unwrap();
        let entered = Source::Entered { by: "ada".into(), verified_by: Some("vic".into()) };
        let patient = Patient {
            id: PatientId::new("P-0001").unwrap(),
            weight: Some(Sourced {
                value: BodyWeight::new(Fixed::parse("70").unwrap()).unwrap(),
                source: entered.clone(),
            }),
            age_years: Some(Sourced { value: 34, source: entered }),
            genes: lab.to_patient_genes("ada"),
        };
        let params = personalise::evaluate(&recipe, &patient).unwrap().parameters.unwrap();
        (recipe, params)
    }

    const UNIT: Pumps =
        Pumps { syringe_max_ml_min: Some(20.0), peristaltic_max_ml_min: Some(60.0) };

    #[test]
    fn the_personalised_masses_become_the_dispense_targets() {
        let (recipe, params) = azathioprine_for_tpmt_intermediate();
        let plan = plan(&recipe, Some(&params), &UNIT).unwrap();
        let text: Vec<String> = plan.iter().map(|p| format!("{p:?}")).collect();
        insta::assert_snapshot!(text.join("\n"));
        let api = plan.iter().find(|p| p.id() == "dispense-api").unwrap();
        assert!(
            matches!(api, Planned::ManualDispense { target_g, .. } if (*target_g - 0.98).abs() < 1e-9),
            "{api:?}"
        );
    }

    #[test]
    fn a_unit_without_the_pump_a_recipe_needs_is_refused_by_name() {
        let (recipe, params) = azathioprine_for_tpmt_intermediate();
        let err = plan(&recipe, Some(&params), &Pumps { peristaltic_max_ml_min: None, ..UNIT })
            .unwrap_err();
        assert_eq!(err.to_string(), "phase prime-vehicle: this unit has no peristaltic pump");
    }

    #[test]
    fn a_personalised_recipe_without_parameters_is_refused() {
        let (recipe, _) = azathioprine_for_tpmt_intermediate();
        let err = plan(&recipe, None, &UNIT).unwrap_err();
        assert!(matches!(err, PlanError::NoParameters { .. }), "{err}");
    }
}
