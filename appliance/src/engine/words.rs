//! What a phase does, in words a pharmacist reads at arm's length: "Pump 51.45 g of vehicle
//! (peristaltic pump)" rather than `dispense-vehicle`. For display only; the record keeps the
//! phase ids and the figures themselves.

use std::time::Duration;

use super::batch::{Planned, Pump};

impl Planned {
    /// The phase in a few words, with its target.
    pub fn title(&self) -> String {
        match self {
            Self::Scan { material, .. } => format!("Scan the {material} label"),
            Self::Tare { .. } => "Tare the balance with the empty vessel".to_owned(),
            Self::Dispense { material, pump, spec, .. } => {
                format!("Pump {} of {material} ({})", grams(spec.target_g), pump_name(*pump))
            }
            Self::ManualDispense { material, target_g, .. } => {
                format!("Weigh {} of {material} by hand", grams(*target_g))
            }
            Self::Prime { pump, volume_ml, .. } => {
                format!("Prime the {} with {volume_ml:.0} mL", pump_name(*pump))
            }
            Self::Heat { target_c, .. } => format!("Heat to {target_c:.1} °C"),
            Self::Hold { min_c, max_c, duration, .. } => {
                format!("Hold {min_c:.1}–{max_c:.1} °C for {}", span(*duration))
            }
            Self::Timed { duration, .. } => format!("Mix for {}", span(*duration)),
            Self::Cool { target_c, within, .. } => {
                format!("Cool below {target_c:.1} °C within {}", span(*within))
            }
            Self::Clean { instruction, .. } => instruction.clone(),
        }
    }
}

fn pump_name(pump: Pump) -> &'static str {
    match pump {
        Pump::Syringe => "syringe pump",
        Pump::Peristaltic => "peristaltic pump",
    }
}

/// Grams to the precision a dose is weighed at: three decimals below 10 g, two above.
fn grams(g: f64) -> String {
    if g < 10.0 { format!("{g:.3} g") } else { format!("{g:.2} g") }
}

/// "45 s", "2 min", "1 h 30 min".
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::dispense::Spec;

    #[test]
    fn every_phase_reads_in_words_with_its_target() {
        let id = String::new;
        let spec =
            Spec { target_g: 51.45, tolerance_g: 0.5, density_g_ml: 1.0, max_rate_ml_min: 60.0 };
        let cases = [
            (Planned::Scan { id: id(), material: "vehicle".into() }, "Scan the vehicle label"),
            (Planned::Tare { id: id() }, "Tare the balance with the empty vessel"),
            (
                Planned::Dispense {
                    id: id(),
                    material: "vehicle".into(),
                    pump: Pump::Peristaltic,
                    spec,
                },
                "Pump 51.45 g of vehicle (peristaltic pump)",
            ),
            (
                Planned::ManualDispense {
                    id: id(),
                    material: "azathioprine".into(),
                    target_g: 0.49,
                    tolerance_g: 0.005,
                },
                "Weigh 0.490 g of azathioprine by hand",
            ),
            (
                Planned::Prime { id: id(), pump: Pump::Syringe, volume_ml: 2.0, ml_min: 10.0 },
                "Prime the syringe pump with 2 mL",
            ),
            (Planned::Heat { id: id(), target_c: 60.0, ramp_c_per_min: 2.0 }, "Heat to 60.0 °C"),
            (
                Planned::Hold {
                    id: id(),
                    min_c: 59.0,
                    max_c: 61.0,
                    duration: Duration::from_secs(5400),
                },
                "Hold 59.0–61.0 °C for 1 h 30 min",
            ),
            (Planned::Timed { id: id(), duration: Duration::from_secs(120) }, "Mix for 2 min"),
            (Planned::Timed { id: id(), duration: Duration::from_secs(2) }, "Mix for 2 s"),
            (
                Planned::Cool { id: id(), target_c: 25.0, within: Duration::from_secs(1830) },
                "Cool below 25.0 °C within 30 min 30 s",
            ),
            (Planned::Clean { id: id(), instruction: "Flush the line".into() }, "Flush the line"),
        ];
        for (phase, words) in cases {
            assert_eq!(phase.title(), words);
        }
    }
}
