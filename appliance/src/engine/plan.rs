//! From a verified recipe and a patient's personalised parameters to the concrete phases the
//! engine runs: every mass, rate and temperature fixed before the batch starts, so that what
//! the pharmacist approved is exactly what runs.
//!
//! Pure: recipe and parameters in, a plan or a one-line reason out.

use std::time::Duration;

use galen_recipes::model::{DispenseTarget, Equipment, PhaseKind, PumpKind, Recipe, ScanTarget};
use galen_recipes::personalise::Parameters;
use galen_recipes::quantity::Fixed;

use super::batch::{Planned, Pump};
use super::dispense::Spec;

/// What this unit's instruments can do, from its configuration (`None`: not fitted, or not
/// stated).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Instruments {
    pub syringe_max_ml_min: Option<f64>,
    pub peristaltic_max_ml_min: Option<f64>,
    pub balance_capacity_g: Option<f64>,
    pub balance_readability_g: Option<f64>,
    /// The heater's setpoint range, °C.
    pub heater_c: Option<(f64, f64)>,
}

impl Instruments {
    fn max(&self, pump: Pump) -> Option<f64> {
        match pump {
            Pump::Syringe => self.syringe_max_ml_min,
            Pump::Peristaltic => self.peristaltic_max_ml_min,
        }
    }

    /// Every way this unit falls short of the equipment the recipe's author signed for; empty
    /// when it is fit. A tolerance finer than the balance can read cannot be met, however
    /// careful the operator.
    pub fn shortfalls(&self, recipe: &Recipe) -> Vec<String> {
        let mut out = Vec::new();
        for e in &recipe.equipment {
            match e {
                Equipment::Balance { capacity, readability } => {
                    let (cap, read) = (f(capacity.value()), f(readability.value()));
                    match self.balance_capacity_g {
                        None => out.push("this unit has no balance".to_owned()),
                        Some(c) if c < cap => out.push(format!(
                            "the balance weighs up to {c} g; the recipe needs {cap} g"
                        )),
                        Some(_) => {}
                    }
                    match self.balance_readability_g {
                        Some(r) if r <= read + 1e-12 => {}
                        Some(r) => out.push(format!(
                            "the balance reads to {r} g; the recipe needs {read} g or finer"
                        )),
                        None if self.balance_capacity_g.is_some() => out.push(format!(
                            "the balance's readability is not configured; the recipe needs \
                             {read} g or finer"
                        )),
                        None => {}
                    }
                }
                Equipment::Pump { pump, max_rate } => {
                    let (p, need) = (pump_of(*pump), f(max_rate.value()));
                    match self.max(p) {
                        None => out.push(format!("this unit has no {}", pump_name(p))),
                        Some(m) if m + 1e-9 < need => out.push(format!(
                            "the {} delivers up to {m} mL/min; the recipe needs {need} mL/min",
                            pump_name(p)
                        )),
                        Some(_) => {}
                    }
                }
                Equipment::Heater { min, max } => {
                    let (lo, hi) = (f(min.value()), f(max.value()));
                    match self.heater_c {
                        None => out.push("this unit has no heater".to_owned()),
                        Some((a, b)) if a > lo || b < hi => out.push(format!(
                            "the heater is set between {a} and {b} °C; the recipe needs {lo} to \
                             {hi} °C"
                        )),
                        Some(_) => {}
                    }
                }
                // The unit model has no mixer device: the mix phase is timed, and the mixer's
                // speed is set by hand. Nothing here can check it.
                Equipment::Mixer { .. } => {}
            }
        }
        out
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
    #[error("this unit is not fit for the recipe: {}", .0.join("; "))]
    Unfit(Vec<String>),
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
    pumps: &Instruments,
) -> Result<Vec<Planned>, PlanError> {
    let short = pumps.shortfalls(recipe);
    if !short.is_empty() {
        return Err(PlanError::Unfit(short));
    }
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

    fn folate() -> Recipe {
        let path = examples().join("folate-mthfr.toml");
        authoring::parse("folate", &std::fs::read_to_string(path).unwrap()).unwrap()
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

    const UNIT: Instruments = Instruments {
        syringe_max_ml_min: Some(50.0),
        peristaltic_max_ml_min: Some(100.0),
        balance_capacity_g: Some(520.0),
        balance_readability_g: Some(0.0001),
        heater_c: Some((0.0, 200.0)),
    };

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
        let err =
            plan(&recipe, Some(&params), &Instruments { peristaltic_max_ml_min: None, ..UNIT })
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "this unit is not fit for the recipe: this unit has no peristaltic pump"
        );
    }

    #[test]
    fn a_unit_short_of_the_signed_equipment_is_refused_with_every_reason() {
        let (recipe, params) = azathioprine_for_tpmt_intermediate();
        let coarse = Instruments {
            balance_capacity_g: Some(220.0),
            balance_readability_g: Some(0.01),
            peristaltic_max_ml_min: Some(60.0),
            ..UNIT
        };
        let err = plan(&recipe, Some(&params), &coarse).unwrap_err();
        assert_eq!(
            err,
            PlanError::Unfit(vec![
                "the balance weighs up to 220 g; the recipe needs 500 g".into(),
                "the balance reads to 0.01 g; the recipe needs 0.001 g or finer".into(),
                "the peristaltic pump delivers up to 60 mL/min; the recipe needs 100 mL/min".into(),
            ])
        );
        let unstated = Instruments { balance_readability_g: None, ..UNIT };
        assert_eq!(
            unstated.shortfalls(&recipe),
            ["the balance's readability is not configured; the recipe needs 0.001 g or finer"]
        );
        let folate = folate();
        assert_eq!(
            Instruments { heater_c: Some((30.0, 60.0)), ..UNIT }.shortfalls(&folate).len(),
            1,
            "a heater range that does not cover the recipe's"
        );
        assert!(UNIT.shortfalls(&folate).is_empty());
    }

    #[test]
    fn a_personalised_recipe_without_parameters_is_refused() {
        let (recipe, _) = azathioprine_for_tpmt_intermediate();
        let err = plan(&recipe, None, &UNIT).unwrap_err();
        assert!(matches!(err, PlanError::NoParameters { .. }), "{err}");
    }
}
