//! Pure: MachineDeployment shapes → the solver's instance types, and back (which
//! MachineDeployment serves an offering).
//!
//! MachineDeployments whose shapes name the same instance type become one instance type with
//! one offering each (typically one MachineDeployment per zone). Their capacity and labels
//! must agree; one that disagrees is left out with an error, and the others keep working.

use std::collections::{BTreeMap, HashMap};

use karpenter_api::v1::Taint;
use karpenter_providers::{NodeGroupFloor, OfferingKey};
use karpenter_solver::{InstanceType, Offering};
use kube::ResourceExt;
use kube::api::DynamicObject;

use crate::machine::MACHINE_DEPLOYMENT_LABEL;
use crate::scale::{claim_of, node_claim_name};
use crate::shape::{MEMBER_LABEL, Shape, ShapeError};

/// Instance types built from shapes, and the MachineDeployment behind each offering.
#[derive(Debug, Default)]
pub struct Catalog {
    /// For the solver, sorted by name.
    pub instance_types: Vec<InstanceType>,
    /// Offering → the shape (MachineDeployment) that launches it.
    pub offerings: BTreeMap<OfferingKey, Shape>,
    /// Shapes left out, and why.
    pub errors: Vec<ShapeError>,
    /// MachineDeployments whose offerings are unavailable (max size, paused), and why.
    pub unavailable: Vec<Unavailable>,
}

/// A MachineDeployment whose offering is unavailable, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unavailable {
    /// `namespace/name`.
    pub machine_deployment: String,
    /// The offering it would launch (`instance type`, zone, capacity type).
    pub offering: OfferingKey,
    /// Why.
    pub cause: UnavailableCause,
}

/// Why a MachineDeployment launches nothing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableCause {
    /// `spec.paused`.
    Paused,
    /// Its size (`spec.replicas` plus the Machines this provider launched from it) has reached
    /// [`crate::shape::MAX_SIZE_ANNOTATION`].
    MaxSize {
        /// Current size.
        size: i64,
        /// The annotated max size.
        max: i64,
    },
}

impl UnavailableCause {
    /// A CamelCase reason for Events (`Paused`, `MaxSizeReached`).
    pub fn reason(&self) -> &'static str {
        match self {
            UnavailableCause::Paused => "Paused",
            UnavailableCause::MaxSize { .. } => "MaxSizeReached",
        }
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.offering;
        let what = format!(
            "instance type {} in zone {} ({})",
            o.instance_type, o.zone, o.capacity_type
        );
        match self.cause {
            UnavailableCause::Paused => write!(
                f,
                "MachineDeployment {} is paused: skipped for {what}",
                self.machine_deployment
            ),
            UnavailableCause::MaxSize { size, max } => write!(
                f,
                "MachineDeployment {} is at its max size ({size} of {max}, annotation {}): skipped for {what}",
                self.machine_deployment,
                crate::shape::MAX_SIZE_ANNOTATION
            ),
        }
    }
}

/// Why a shape's offering is unavailable, when it is; `machines` counts the live Machines
/// this provider launched from it.
pub fn unavailable_reason(shape: &Shape, machines: i64) -> Option<Unavailable> {
    let cause = if shape.paused {
        UnavailableCause::Paused
    } else {
        let max = shape.max_size?;
        let size = shape.replicas + machines;
        if size < max {
            return None;
        }
        UnavailableCause::MaxSize { size, max }
    };
    Some(Unavailable {
        machine_deployment: shape.key(),
        offering: OfferingKey {
            instance_type: shape.instance_type.clone(),
            zone: shape.zone.clone(),
            capacity_type: shape.capacity_type.clone(),
        },
        cause,
    })
}

/// Reads MachineDeployments: the shapes of the opted-in ([`MEMBER_LABEL`]) readable ones, and
/// why the other opted-in ones cannot be offered. Those not opted in are not looked at. The
/// provider (on the MachineDeployments it lists) and `karpenter simulate --catalog clusterapi`
/// (on those of its input) both read them through this, so they agree.
pub fn shapes<'a>(
    machine_deployments: impl IntoIterator<Item = &'a DynamicObject>,
) -> (Vec<Shape>, Vec<ShapeError>) {
    let mut shapes = Vec::new();
    let mut errors = Vec::new();
    for md in machine_deployments {
        if !md.labels().contains_key(MEMBER_LABEL) {
            continue;
        }
        match Shape::from_machine_deployment(md) {
            Ok(s) => shapes.push(s),
            Err(e) => errors.push(e),
        }
    }
    (shapes, errors)
}

/// The catalog of a NodePool whose template declares `pool_taints` (taints and startup
/// taints): built from the shapes whose every taint it declares ([`Shape::fits_taints`]).
pub fn for_pool(
    shapes: &[Shape],
    pool_taints: &[Taint],
    machines: &HashMap<String, i64>,
) -> Catalog {
    let fitting = shapes
        .iter()
        .filter(|s| s.fits_taints(pool_taints))
        .cloned()
        .collect();
    build(fitting, machines)
}

/// The minimum sizes disruption respects: for each MachineDeployment with a min size
/// (Cluster Autoscaler's annotation), the NodeClaims of its live Machines that this provider
/// launched (named after them), and how many of those may go before its size (`spec.replicas`
/// plus those Machines) is at its minimum. `machines` are this provider's Machines. In scale
/// mode the Machines are the MachineDeployment's own replicas, named after their NodeClaims
/// through [`crate::scale::NODE_CLAIM_ANNOTATION`].
pub fn floors(shapes: &[Shape], machines: &[DynamicObject]) -> Vec<NodeGroupFloor> {
    let mut out = Vec::new();
    for shape in shapes {
        let Some(min) = shape.min_size.filter(|m| *m > 0) else {
            continue;
        };
        let key = shape.key();
        let live: Vec<&DynamicObject> = machines
            .iter()
            .filter(|m| m.metadata.deletion_timestamp.is_none())
            .filter(|m| {
                m.labels()
                    .get(MACHINE_DEPLOYMENT_LABEL)
                    .is_some_and(|md| format!("{}/{md}", m.namespace().unwrap_or_default()) == key)
            })
            .collect();
        // Machines taken in scale mode are among `spec.replicas`; ours in machine mode are not.
        let outside = live.iter().filter(|m| claim_of(m).is_none()).count() as i64;
        let mut ours: Vec<String> = live.iter().map(|m| node_claim_name(m)).collect();
        ours.sort();
        let above = (shape.replicas.max(0) + outside - min).max(0);
        let removable = usize::try_from(above).unwrap_or(0).min(ours.len());
        out.push(NodeGroupFloor {
            group: format!("MachineDeployment {key} (min size {min})"),
            node_claims: ours,
            removable,
        });
    }
    out
}

/// Live Machines per MachineDeployment key (`namespace/name`) that are not in its
/// `spec.replicas`: those this provider launched in machine mode (a Machine taken in scale
/// mode is one of its replicas already). With `spec.replicas`, a MachineDeployment's size.
pub fn machine_counts(machines: &[DynamicObject]) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for m in machines {
        if m.metadata.deletion_timestamp.is_some() || claim_of(m).is_some() {
            continue;
        }
        if let Some(md) = m.labels().get(MACHINE_DEPLOYMENT_LABEL) {
            *out.entry(format!("{}/{md}", m.namespace().unwrap_or_default()))
                .or_insert(0) += 1;
        }
    }
    out
}

/// Builds the catalog. `machines` counts, per MachineDeployment key (`namespace/name`), the
/// live Machines this provider launched from it; with its `spec.replicas` that is its size,
/// and a MachineDeployment at its max size (or paused) offers nothing available.
///
/// Deterministic: shapes are taken in MachineDeployment order, and when two MachineDeployments
/// offer the same instance type, zone and capacity type, the cheaper (then the first) wins.
pub fn build(mut shapes: Vec<Shape>, machines: &HashMap<String, i64>) -> Catalog {
    shapes.sort_by_key(|s| (s.namespace.clone(), s.name.clone()));
    let mut out = Catalog::default();
    let mut types: BTreeMap<String, InstanceType> = BTreeMap::new();
    for shape in shapes {
        let reason = unavailable_reason(&shape, machines.get(&shape.key()).copied().unwrap_or(0));
        let available = reason.is_none();
        out.unavailable.extend(reason);
        let it = types
            .entry(shape.instance_type.clone())
            .or_insert_with(|| InstanceType {
                name: shape.instance_type.clone(),
                capacity: shape.capacity.clone(),
                overhead: Default::default(),
                labels: shape.labels.clone(),
                offerings: Vec::new(),
            });
        if it.capacity != shape.capacity || it.labels != shape.labels {
            out.errors.push(ShapeError::Invalid {
                machine_deployment: shape.key(),
                reason: format!(
                    "instance type {:?} is already offered by another MachineDeployment with other capacity or labels; give this one another {} label",
                    shape.instance_type,
                    karpenter_api::labels::INSTANCE_TYPE_LABEL
                ),
            });
            continue;
        }
        let key = OfferingKey {
            instance_type: shape.instance_type.clone(),
            zone: shape.zone.clone(),
            capacity_type: shape.capacity_type.clone(),
        };
        let mut offering = Offering::new(&shape.zone, &shape.capacity_type, shape.price);
        offering.available = available;
        match it
            .offerings
            .iter_mut()
            .find(|o| o.zone == shape.zone && o.capacity_type == shape.capacity_type)
        {
            // An available MachineDeployment beats one at max size; then the cheaper one.
            Some(existing) => {
                let better = (offering.available && !existing.available)
                    || (offering.available == existing.available
                        && offering.price < existing.price);
                if better {
                    *existing = offering;
                    out.offerings.insert(key, shape);
                }
            }
            None => {
                it.offerings.push(offering);
                out.offerings.insert(key, shape);
            }
        }
    }
    out.instance_types = types
        .into_values()
        .filter(|it| !it.offerings.is_empty())
        .collect();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use karpenter_solver::Resources;

    fn shape(name: &str, it: &str, zone: &str, price: f64, cpu: i64) -> Shape {
        Shape {
            namespace: "ns".into(),
            name: name.into(),
            instance_type: it.into(),
            capacity: Resources::from_pairs([("cpu", cpu), ("memory", 1 << 30), ("pods", 110)]),
            labels: BTreeMap::from([("kubernetes.io/arch".to_string(), "amd64".to_string())]),
            taints: vec![],
            zone: zone.into(),
            capacity_type: "on-demand".into(),
            price,
            price_estimated: false,
            min_size: None,
            max_size: None,
            replicas: 0,
            paused: false,
            mode: Default::default(),
        }
    }

    #[test]
    fn groups_zones_into_one_instance_type() {
        let c = build(
            vec![
                shape("c4-b", "c4", "b", 0.2, 4000),
                shape("c4-a", "c4", "a", 0.2, 4000),
                shape("c8-a", "c8", "a", 0.4, 8000),
            ],
            &HashMap::new(),
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let names: Vec<_> = c.instance_types.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["c4", "c8"]);
        let zones: Vec<_> = c.instance_types[0]
            .offerings
            .iter()
            .map(|o| o.zone.as_str())
            .collect();
        assert_eq!(zones, ["a", "b"], "in MachineDeployment name order");
        let key = OfferingKey {
            instance_type: "c4".into(),
            zone: "b".into(),
            capacity_type: "on-demand".into(),
        };
        assert_eq!(c.offerings[&key].name, "c4-b");
    }

    #[test]
    fn conflicting_shapes_are_left_out_with_an_error() {
        let c = build(
            vec![
                shape("x-a", "c4", "a", 0.2, 4000),
                shape("y-b", "c4", "b", 0.2, 2000),
            ],
            &HashMap::new(),
        );
        assert_eq!(c.instance_types.len(), 1);
        assert_eq!(c.instance_types[0].offerings.len(), 1);
        assert_eq!(c.errors.len(), 1);
        assert!(
            c.errors[0].to_string().contains("ns/y-b"),
            "{}",
            c.errors[0]
        );
    }

    #[test]
    fn max_size_and_pause_make_offerings_unavailable() {
        let mut full = shape("full", "c4", "a", 0.1, 4000);
        full.max_size = Some(2);
        full.replicas = 1;
        let mut paused = shape("paused", "c8", "a", 0.1, 8000);
        paused.paused = true;
        let c = build(
            vec![full.clone(), paused],
            &HashMap::from([("ns/full".to_string(), 1)]),
        );
        assert!(c.instance_types.iter().all(|it| !it.offerings[0].available));
        assert_eq!(c.unavailable.len(), 2, "{:?}", c.unavailable);
        let why = unavailable_reason(&full, 1).unwrap();
        assert_eq!(why.cause, UnavailableCause::MaxSize { size: 2, max: 2 });
        assert_eq!(why.cause.reason(), "MaxSizeReached");
        let text = why.to_string();
        assert!(
            text.contains("ns/full")
                && text.contains("max size (2 of 2")
                && text.contains(crate::shape::MAX_SIZE_ANNOTATION)
                && text.contains("instance type c4 in zone a"),
            "{text}"
        );
        assert_eq!(unavailable_reason(&full, 0), None);
    }

    #[test]
    fn only_opted_in_machine_deployments_are_read() {
        let md = |name: &str, member: bool, cpu: &str| -> DynamicObject {
            let labels = if member {
                serde_json::json!({MEMBER_LABEL: ""})
            } else {
                serde_json::json!({})
            };
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                "metadata": {"name": name, "namespace": "ns", "labels": labels, "annotations": {
                    crate::shape::CPU_ANNOTATION: cpu, crate::shape::MEMORY_ANNOTATION: "4Gi",
                    crate::shape::LABELS_ANNOTATION: "topology.kubernetes.io/zone=a"}},
                "spec": {"template": {"spec": {}}}
            }))
            .unwrap()
        };
        let (ok, bad) = shapes(&[
            md("in", true, "2"),
            md("out", false, "2"),
            md("out-broken", false, "lots"),
            md("in-broken", true, "lots"),
        ]);
        let names: Vec<_> = ok.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["in"]);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].to_string().contains("ns/in-broken"), "{}", bad[0]);
    }

    #[test]
    fn same_offering_twice_keeps_the_available_then_cheaper() {
        let mut at_max = shape("a1", "c4", "a", 0.1, 4000);
        at_max.max_size = Some(0);
        let c = build(
            vec![
                at_max,
                shape("a2", "c4", "a", 0.3, 4000),
                shape("a3", "c4", "a", 0.2, 4000),
            ],
            &HashMap::new(),
        );
        let o = &c.instance_types[0].offerings;
        assert_eq!(o.len(), 1);
        assert!(o[0].available);
        assert_eq!(o[0].price, 0.2);
        assert_eq!(c.offerings.values().next().unwrap().name, "a3");
    }

    #[test]
    fn floors_count_replicas_and_our_live_machines() {
        let machine = |name: &str, md: &str, deleting: bool| -> DynamicObject {
            let mut m: DynamicObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": name, "namespace": "ns",
                             "labels": {MACHINE_DEPLOYMENT_LABEL: md}},
            }))
            .unwrap();
            if deleting {
                m.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        "2026-01-01T00:00:00Z".parse().unwrap(),
                    ));
            }
            m
        };
        let mut a = shape("a", "c4", "a", 0.2, 4000);
        a.min_size = Some(2);
        let mut b = shape("b", "c8", "a", 0.4, 8000);
        b.min_size = Some(2);
        b.replicas = 1;
        let mut c = shape("c", "c2", "a", 0.1, 2000);
        c.min_size = Some(0);
        let machines = [
            machine("a1", "a", false),
            machine("a2", "a", false),
            machine("a3", "a", false),
            machine("a4", "a", true),
            machine("b1", "b", false),
            machine("b2", "b", false),
            machine("c1", "c", false),
        ];
        let got = floors(&[a, b, c], &machines);
        // a: 3 live of ours, min 2: 1 may go (the deleting one does not count).
        // b: 1 replica + 2 of ours, min 2: 1 may go. c: min 0, no floor.
        let summary: Vec<(Vec<String>, usize)> = got
            .iter()
            .map(|f| (f.node_claims.clone(), f.removable))
            .collect();
        assert_eq!(
            summary,
            vec![
                (vec!["a1".to_string(), "a2".into(), "a3".into()], 1),
                (vec!["b1".to_string(), "b2".into()], 1),
            ]
        );
        assert!(got[0].group.contains("ns/a"), "{}", got[0].group);

        // Replicas alone meet the minimum: ours may go; below it (0 + 1 < 2): none may.
        let mut d = shape("d", "c4", "b", 0.2, 4000);
        d.min_size = Some(3);
        d.replicas = 3;
        let got = floors(&[d], &[machine("d1", "d", false)]);
        assert_eq!(got[0].removable, 1);
        let mut e = shape("e", "c4", "b", 0.2, 4000);
        e.min_size = Some(2);
        e.replicas = 0;
        let got = floors(&[e], &[machine("e1", "e", false)]);
        assert_eq!(got[0].removable, 0);
    }

    #[test]
    fn floors_in_scale_mode_count_taken_machines_once_under_their_node_claims() {
        let taken = |name: &str, claim: &str| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": name, "namespace": "ns",
                             "labels": {MACHINE_DEPLOYMENT_LABEL: "s"},
                             "annotations": {crate::scale::NODE_CLAIM_ANNOTATION: claim}},
            }))
            .unwrap()
        };
        // Scaled to 3 for three NodeClaims: the replicas are the Machines (3, not 3 + 3); with
        // min 1, two of them may go, named by their NodeClaims.
        let mut s = shape("s", "c4", "a", 0.2, 4000);
        s.mode = crate::shape::LaunchMode::Scale;
        s.min_size = Some(1);
        s.replicas = 3;
        let machines = [
            taken("s-x1", "pool-c"),
            taken("s-x2", "pool-a"),
            taken("s-x3", "pool-b"),
        ];
        let got = floors(&[s], &machines);
        assert_eq!(got[0].node_claims, ["pool-a", "pool-b", "pool-c"]);
        assert_eq!(got[0].removable, 2);
    }
}
