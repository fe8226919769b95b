//! The instance-type catalog: `kwok` (the kwok provider's generated one), `aws` (the AWS
//! provider's embedded us-east-1 catalog) or a catalog JSON file (design.md §6).

use std::collections::BTreeMap;
use std::path::Path;

use karpenter_solver::labels::CAPACITY_TYPE_RESERVED;
use karpenter_solver::quantity::parse_for_resource;
use karpenter_solver::{InstanceType, Offering, Overhead, Reservation, Resources};
use serde::Deserialize;

/// Why the catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The AWS provider's embedded catalog could not be read (a bad regeneration).
    #[error("{0}")]
    Aws(&'static karpenter_aws::catalog::CatalogDataError),
    /// The file could not be read.
    #[error("{file}: {error}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error (in the message, not chained: it would print twice).
        error: std::io::Error,
    },
    /// The file is not valid JSON of the catalog's shape.
    #[error("{file}: {path}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// JSON path of the offending value, e.g. `instanceTypes[3].capacity.cpu`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Loads the catalog named by `--catalog`.
pub fn load(spec: &str) -> Result<Vec<InstanceType>, CatalogError> {
    match spec {
        "kwok" => Ok(karpenter_providers::kwok::catalog()),
        "aws" => karpenter_aws::catalog().map_err(CatalogError::Aws),
        path => {
            let text =
                std::fs::read_to_string(Path::new(path)).map_err(|error| CatalogError::Io {
                    file: path.to_owned(),
                    error,
                })?;
            parse(path, &text)
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CatalogFile {
    instance_types: Vec<InstanceTypeEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceTypeEntry {
    name: String,
    capacity: BTreeMap<String, Amount>,
    #[serde(default)]
    overhead: OverheadEntry,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    offerings: Vec<OfferingEntry>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OverheadEntry {
    #[serde(default)]
    kube_reserved: BTreeMap<String, Amount>,
    #[serde(default)]
    system_reserved: BTreeMap<String, Amount>,
    #[serde(default)]
    eviction_threshold: BTreeMap<String, Amount>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OfferingEntry {
    zone: String,
    capacity_type: String,
    price: f64,
    #[serde(default = "available_by_default")]
    available: bool,
    /// The capacity reservation of a `reserved` offering.
    #[serde(default)]
    reservation_id: Option<String>,
    /// Instances the reservation can still launch (required with `reservationId`).
    #[serde(default)]
    reservation_capacity: Option<i64>,
}

fn available_by_default() -> bool {
    true
}

/// A quantity written as a string (`"8Gi"`) or a plain JSON number (`8`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Amount {
    Text(String),
    Number(serde_json::Number),
}

impl Amount {
    fn text(&self) -> String {
        match self {
            Amount::Text(s) => s.clone(),
            Amount::Number(n) => n.to_string(),
        }
    }
}

/// Parses catalog JSON; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Vec<InstanceType>, CatalogError> {
    let invalid = |path: String, message: String| CatalogError::Invalid {
        file: file.to_owned(),
        path,
        message,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let catalog: CatalogFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        invalid(path, e.into_inner().to_string())
    })?;
    let mut out: Vec<InstanceType> = Vec::with_capacity(catalog.instance_types.len());
    for (i, it) in catalog.instance_types.into_iter().enumerate() {
        let at = format!("instanceTypes[{i}]");
        if it.name.is_empty() {
            return Err(invalid(format!("{at}.name"), "must not be empty".into()));
        }
        if out.iter().any(|o| o.name == it.name) {
            let msg = format!("instance type {:?} is listed twice", it.name);
            return Err(invalid(format!("{at}.name"), msg));
        }
        let resources = |field: &str, list: &BTreeMap<String, Amount>| {
            let mut r = Resources::new();
            for (name, amount) in list {
                let text = amount.text();
                let path = format!("{at}.{field}.{name}");
                let v = parse_for_resource(name, &text)
                    .map_err(|e| invalid(path.clone(), e.to_string()))?;
                if v < 0 {
                    return Err(invalid(path, format!("{text:?} must not be negative")));
                }
                r.add_one(name, v);
            }
            Ok(r)
        };
        let capacity = resources("capacity", &it.capacity)?;
        let overhead = Overhead {
            kube_reserved: resources("overhead.kubeReserved", &it.overhead.kube_reserved)?,
            system_reserved: resources("overhead.systemReserved", &it.overhead.system_reserved)?,
            eviction_threshold: resources(
                "overhead.evictionThreshold",
                &it.overhead.eviction_threshold,
            )?,
        };
        let mut offerings = Vec::with_capacity(it.offerings.len());
        for (j, o) in it.offerings.into_iter().enumerate() {
            let path = |f: &str| format!("{at}.offerings[{j}].{f}");
            if !o.price.is_finite() || o.price < 0.0 {
                let msg = format!("{} must be a non-negative number", o.price);
                return Err(invalid(path("price"), msg));
            }
            if o.zone.is_empty() {
                return Err(invalid(path("zone"), "must not be empty".into()));
            }
            if o.capacity_type.is_empty() {
                return Err(invalid(path("capacityType"), "must not be empty".into()));
            }
            let reservation = reservation(&o, &path).map_err(|(p, m)| invalid(p, m))?;
            offerings.push(Offering {
                zone: o.zone,
                capacity_type: o.capacity_type,
                price: o.price,
                available: o.available,
                reservation,
            });
        }
        out.push(InstanceType {
            name: it.name,
            capacity,
            overhead,
            labels: it.labels,
            offerings,
        });
    }
    Ok(out)
}

/// The reservation of a `reserved` offering: `reservationId` and `reservationCapacity` (≥ 0)
/// both given, and only on capacity type `reserved`.
fn reservation(
    o: &OfferingEntry,
    path: &dyn Fn(&str) -> String,
) -> Result<Option<Reservation>, (String, String)> {
    let reserved = o.capacity_type == CAPACITY_TYPE_RESERVED;
    match (&o.reservation_id, o.reservation_capacity) {
        (None, None) if !reserved => Ok(None),
        (Some(id), Some(capacity)) if reserved => {
            if id.is_empty() {
                return Err((path("reservationId"), "must not be empty".into()));
            }
            if capacity < 0 {
                let msg = format!("{capacity} must not be negative");
                return Err((path("reservationCapacity"), msg));
            }
            Ok(Some(Reservation {
                id: id.clone(),
                capacity,
            }))
        }
        _ if reserved => Err((
            path("reservationId"),
            "a reserved offering needs reservationId and reservationCapacity".into(),
        )),
        _ => Err((
            path("reservationId"),
            format!(
                "only reserved offerings have a reservation (capacityType is {:?})",
                o.capacity_type
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"instanceTypes": [{"name": "m.2x",
        "capacity": {"cpu": "2", "memory": "8Gi", "pods": 29},
        "overhead": {"kubeReserved": {"cpu": "100m", "memory": "100Mi"},
                     "systemReserved": {"cpu": "50m"}, "evictionThreshold": {"memory": "100Mi"}},
        "labels": {"kubernetes.io/arch": "amd64"},
        "offerings": [{"zone": "zone-a", "capacityType": "spot", "price": 0.03},
                      {"zone": "zone-b", "capacityType": "on-demand", "price": 0.1, "available": false}]}]}"#;

    #[test]
    fn allocatable_subtracts_every_reservation() -> Result<(), CatalogError> {
        let c = parse("c.json", ONE)?;
        assert_eq!(c.len(), 1);
        let a = c[0].allocatable();
        assert_eq!(a.get("cpu"), 1850);
        assert_eq!(a.get("memory"), (8 << 30) - (200 << 20));
        assert_eq!(a.get("pods"), 29);
        assert!(c[0].offerings[0].available);
        assert!(!c[0].offerings[1].available);
        Ok(())
    }

    #[test]
    fn errors_name_the_file_and_the_json_path() {
        let bad = ONE.replace("\"8Gi\"", "\"8Gb\"");
        let err = parse("c.json", &bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("c.json: instanceTypes[0].capacity.memory: "),
            "{err}"
        );
        let bad = ONE.replace("\"price\": 0.03", "\"price\": \"cheap\"");
        let err = parse("c.json", &bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("c.json: instanceTypes[0].offerings[0].price: "),
            "{err}"
        );
        let bad = ONE.replace("\"zone\": \"zone-a\", ", "");
        let err = parse("c.json", &bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("instanceTypes[0].offerings[0]"), "{err}");
        assert!(err.contains("zone"), "{err}");
    }

    #[test]
    fn reserved_offerings_carry_their_reservation() -> Result<(), CatalogError> {
        let reserved = r#"{"zone": "zone-a", "capacityType": "reserved", "price": 0.001,
                          "reservationId": "cr-1", "reservationCapacity": 3}"#;
        let text = ONE.replace(
            r#"{"zone": "zone-a", "capacityType": "spot", "price": 0.03}"#,
            reserved,
        );
        let c = parse("c.json", &text)?;
        assert_eq!(
            c[0].offerings[0],
            Offering::reserved("zone-a", 0.001, "cr-1", 3)
        );
        assert_eq!(c[0].offerings[1].reservation, None);
        let err = |from: &str, to: &str| {
            parse("c.json", &text.replace(from, to))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let at = "c.json: instanceTypes[0].offerings[0].";
        let e = err(r#", "reservationCapacity": 3"#, "");
        assert!(
            e.starts_with(&format!("{at}reservationId")) && e.contains("needs"),
            "{e}"
        );
        let e = err(
            r#""reservationCapacity": 3"#,
            r#""reservationCapacity": -1"#,
        );
        assert!(e.starts_with(&format!("{at}reservationCapacity")), "{e}");
        let e = err(r#""reservationId": "cr-1""#, r#""reservationId": """#);
        assert!(e.starts_with(&format!("{at}reservationId")), "{e}");
        let e = err(
            r#""capacityType": "reserved""#,
            r#""capacityType": "on-demand""#,
        );
        assert!(e.contains("only reserved offerings"), "{e}");
        Ok(())
    }

    #[test]
    fn aws_is_built_in() -> Result<(), CatalogError> {
        let aws = load("aws")?;
        assert!(aws.iter().any(|it| it.name == "m5.large"));
        assert!(aws.iter().all(|it| !it.offerings.is_empty()));
        Ok(())
    }

    #[test]
    fn kwok_is_built_in() -> Result<(), CatalogError> {
        assert!(!load("kwok")?.is_empty());
        Ok(())
    }
}
