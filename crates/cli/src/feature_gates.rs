//! `--feature-gates` / `FEATURE_GATES`: upstream's `Name=bool,...` format, the gates this
//! controller implements, and upstream's others accepted at their defaults only.

/// The feature gates this controller acts on (see [`parse_feature_gates`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureGates {
    /// `SpotToSpotConsolidation`: consolidation may replace spot with spot.
    pub spot_to_spot_consolidation: bool,
    /// `NodeOverlay`: NodeOverlays change the catalog's prices and capacity.
    pub node_overlay: bool,
    /// `NodeRepair`: replace nodes the provider's repair policies call unhealthy.
    pub node_repair: bool,
    /// `ReservedCapacity`: launch into the provider's capacity reservations (default on).
    pub reserved_capacity: bool,
    /// `StaticCapacity`: static NodePools (`spec.replicas`) are kept at their size.
    pub static_capacity: bool,
    /// `CapacityBuffer`: CapacityBuffers (`autoscaling.x-k8s.io`) keep room for placeholder
    /// pods.
    pub capacity_buffer: bool,
}

impl Default for FeatureGates {
    /// Upstream's defaults: every gate off but `ReservedCapacity`.
    fn default() -> Self {
        Self {
            spot_to_spot_consolidation: false,
            node_overlay: false,
            node_repair: false,
            reserved_capacity: true,
            static_capacity: false,
            capacity_buffer: false,
        }
    }
}

/// The gates this controller implements.
const IMPLEMENTED_GATES: [&str; 6] = [
    "SpotToSpotConsolidation",
    "NodeOverlay",
    "NodeRepair",
    "ReservedCapacity",
    "StaticCapacity",
    "CapacityBuffer",
];

/// Upstream's gates that this controller does not implement, with their upstream defaults:
/// naming one at its default is accepted (charts set them all), anything else is an error, so
/// a gate never silently does nothing.
/// (Every gate of upstream v1.15 is implemented now; the check stays for the next one.)
const UNIMPLEMENTED_GATES: [(&str, bool); 0] = [];

/// Parses `Name=bool,Name=bool` (spaces around items allowed, empty items skipped); an
/// unknown gate, a value other than `true`/`false`, or an unimplemented gate away from its
/// default is an error naming the gate.
pub fn parse_feature_gates(s: &str) -> Result<FeatureGates, String> {
    let mut gates = FeatureGates::default();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| format!("feature gate {item:?} is not Name=true|false"))?;
        let (name, value) = (name.trim(), value.trim());
        let on = match value.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(format!(
                    "feature gate {name}: {value:?} is not true or false"
                ));
            }
        };
        if name == "SpotToSpotConsolidation" {
            gates.spot_to_spot_consolidation = on;
        } else if name == "NodeOverlay" {
            gates.node_overlay = on;
        } else if name == "NodeRepair" {
            gates.node_repair = on;
        } else if name == "ReservedCapacity" {
            gates.reserved_capacity = on;
        } else if name == "StaticCapacity" {
            gates.static_capacity = on;
        } else if name == "CapacityBuffer" {
            gates.capacity_buffer = on;
        } else if let Some((_, default)) = UNIMPLEMENTED_GATES.iter().find(|(g, _)| *g == name) {
            if on != *default {
                return Err(format!(
                    "feature gate {name}={on} is not supported (only its default, {default})"
                ));
            }
        } else {
            return Err(format!(
                "unknown feature gate {name:?} (known: {})",
                IMPLEMENTED_GATES.join(", ")
            ));
        }
    }
    Ok(gates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_gates() {
        let spot = |on| FeatureGates {
            spot_to_spot_consolidation: on,
            ..FeatureGates::default()
        };
        assert_eq!(parse_feature_gates(""), Ok(FeatureGates::default()));
        assert_eq!(
            parse_feature_gates("SpotToSpotConsolidation=true"),
            Ok(spot(true))
        );
        assert_eq!(
            parse_feature_gates(" SpotToSpotConsolidation = True ,"),
            Ok(spot(true))
        );
        assert_eq!(
            parse_feature_gates("SpotToSpotConsolidation=false"),
            Ok(spot(false))
        );
        // The last mention wins, as with upstream's map.
        assert_eq!(
            parse_feature_gates("SpotToSpotConsolidation=true,SpotToSpotConsolidation=false"),
            Ok(spot(false))
        );
        // Upstream's chart default: every gate named, all at their defaults.
        assert_eq!(
            parse_feature_gates(
                "NodeRepair=false,ReservedCapacity=true,SpotToSpotConsolidation=true,\
                 NodeOverlay=false,StaticCapacity=false,CapacityBuffer=false"
            ),
            Ok(spot(true))
        );
        assert_eq!(
            parse_feature_gates("NodeOverlay=true"),
            Ok(FeatureGates {
                node_overlay: true,
                ..FeatureGates::default()
            })
        );
        assert_eq!(
            parse_feature_gates("NodeRepair=true,NodeOverlay=true"),
            Ok(FeatureGates {
                node_overlay: true,
                node_repair: true,
                ..FeatureGates::default()
            })
        );
        assert_eq!(
            parse_feature_gates("StaticCapacity=true"),
            Ok(FeatureGates {
                static_capacity: true,
                ..FeatureGates::default()
            })
        );
        assert_eq!(
            parse_feature_gates("CapacityBuffer=true"),
            Ok(FeatureGates {
                capacity_buffer: true,
                ..FeatureGates::default()
            })
        );
        assert_eq!(
            parse_feature_gates("StaticCapacity=true,StaticCapacity=false"),
            Ok(FeatureGates::default())
        );
        assert_eq!(
            parse_feature_gates("NodeOverlay=true,SpotToSpotConsolidation=true,NodeOverlay=false"),
            Ok(spot(true))
        );
    }

    #[test]
    fn reserved_capacity_is_on_unless_turned_off() {
        assert!(FeatureGates::default().reserved_capacity);
        assert!(
            parse_feature_gates("")
                .unwrap_or_default()
                .reserved_capacity
        );
        assert_eq!(
            parse_feature_gates("ReservedCapacity=false"),
            Ok(FeatureGates {
                reserved_capacity: false,
                ..FeatureGates::default()
            })
        );
        assert_eq!(
            parse_feature_gates("ReservedCapacity=false,ReservedCapacity=true"),
            Ok(FeatureGates::default())
        );
    }

    #[test]
    fn feature_gate_errors_name_the_gate() {
        let err = |s: &str| parse_feature_gates(s).err().unwrap_or_default();
        assert!(err("SpotToSpot=true").contains("\"SpotToSpot\""));
        assert!(err("StaticCapacity=maybe").contains("StaticCapacity"));
        assert!(err("CapacityBuffer=maybe").contains("CapacityBuffer"));
        assert!(err("NodeRepair=maybe").contains("NodeRepair"));
        assert!(err("ReservedCapacity=maybe").contains("ReservedCapacity"));
        assert!(err("SpotToSpotConsolidation=yes").contains("SpotToSpotConsolidation"));
        assert!(err("SpotToSpotConsolidation").contains("SpotToSpotConsolidation"));
        assert!(err("NodeOverlay=maybe").contains("NodeOverlay"));
        assert!(
            err("Overlay=true").contains("NodeOverlay"),
            "the known gates are listed"
        );
    }
}
