//! Pure parts of the kwok provider: which offering a NodeClaim gets, and the Node object that
//! stands for the instance. No I/O, so all of it is unit-tested on plain objects.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint as K8sTaint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use karpenter_api::labels::{
    CAPACITY_TYPE_LABEL, HOSTNAME_LABEL, INSTANCE_TYPE_LABEL, NODE_POOL_LABEL,
    UNREGISTERED_TAINT_KEY, ZONE_LABEL,
};
use karpenter_api::v1::{NodeClaim, NodeClaimStatus};
use karpenter_solver::quantity::parse_for_resource;
use karpenter_solver::resources::format_quantity;
use karpenter_solver::{InstanceType, Requirements, Resources};

use crate::cloudprovider::{OfferingKey, UnavailableOfferings};

/// Prefix of every kwok providerID (`kwok://<node name>`).
pub const PROVIDER_ID_PREFIX: &str = "kwok://";
/// Annotation (and label) that makes kwok act as the kubelet of a Node.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Value of [`KWOK_NODE_ANNOTATION`].
pub const KWOK_NODE_VALUE: &str = "fake";
/// The capacity reservation a kwok node launched into (the provider's
/// `cloudprovider.ReservationIDLabel`).
pub const RESERVATION_ID_LABEL: &str = "karpenter.kwok.sh/reservation-id";
/// Label on every Node this provider created ([`is_instance`] also accepts upstream's).
pub const MANAGED_LABEL: &str = "karpenter.kwok.sh/managed";

/// Whether a kwok-managed Node (one carrying the [`KWOK_NODE_ANNOTATION`] label) is an instance
/// of this provider: one it launched ([`MANAGED_LABEL`]), or one upstream Karpenter's kwok
/// provider launched before a take-over. Upstream's carry no managed label; what marks them is
/// a kwok providerID together with the `karpenter.sh/nodepool` label, which only Karpenter
/// sets (the label domain is restricted). Without them, garbage collection would take the
/// NodeClaims of a taken-over cluster for claims whose instance vanished and delete them.
pub fn is_instance(node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let kwok_id = node
        .spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .and_then(node_name)
        .is_some();
    label(MANAGED_LABEL) == Some("true") || (kwok_id && label(NODE_POOL_LABEL).is_some())
}

/// The offering chosen for a NodeClaim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index into the catalog.
    pub instance_type: usize,
    /// Index into that instance type's offerings.
    pub offering: usize,
}

/// Converts a NodeClaim's requirements into the solver's algebra.
pub fn claim_requirements(claim: &NodeClaim) -> Result<Requirements, String> {
    karpenter_api::solver_input::claim_requirements(claim).map_err(|e| e.to_string())
}

/// Parses a resource list (`spec.resources.requests`, Node capacity) into integer units.
pub fn parse_resource_list(list: &BTreeMap<String, Quantity>) -> Result<Resources, String> {
    let mut out = Resources::new();
    for (name, q) in list {
        let v = parse_for_resource(name, &q.0).map_err(|e| format!("{name}: {e}"))?;
        out.add_one(name, v);
    }
    Ok(out)
}

/// Formats integer resources as a Kubernetes resource list.
pub fn resource_list(r: &Resources) -> BTreeMap<String, Quantity> {
    r.0.iter()
        .map(|(k, v)| (k.clone(), Quantity(format_quantity(k, *v))))
        .collect()
}

/// Labels a node of this instance type and offering carries (before NodeClaim labels).
fn offering_labels(it: &InstanceType, offering: usize) -> BTreeMap<String, String> {
    let mut labels = it.labels.clone();
    labels.insert(INSTANCE_TYPE_LABEL.to_string(), it.name.clone());
    if let Some(o) = it.offerings.get(offering) {
        labels.insert(ZONE_LABEL.to_string(), o.zone.clone());
        labels.insert(CAPACITY_TYPE_LABEL.to_string(), o.capacity_type.clone());
        if let Some(id) = o.reservation_id() {
            labels.insert(RESERVATION_ID_LABEL.to_string(), id.to_string());
        }
    }
    labels
}

/// The cheapest available offering compatible with `requirements` whose instance type's
/// allocatable holds `requests`. Ties go to the instance type first in the catalog, then the
/// first offering, so the choice is deterministic.
pub fn select(
    catalog: &[InstanceType],
    requirements: &Requirements,
    requests: &Resources,
    unavailable: &UnavailableOfferings,
    now: Instant,
) -> Option<Choice> {
    let mut best: Option<(f64, Choice)> = None;
    for (i, it) in catalog.iter().enumerate() {
        if !requests.fits_in(&it.allocatable()) {
            continue;
        }
        for (o, offering) in it.offerings.iter().enumerate() {
            if !offering.available {
                continue;
            }
            let key = OfferingKey {
                instance_type: it.name.clone(),
                zone: offering.zone.clone(),
                capacity_type: offering.capacity_type.clone(),
            };
            if unavailable.is_unavailable(&key, now) {
                continue;
            }
            let labels = offering_labels(it, o);
            if !Requirements::from_labels(&labels).intersects(requirements) {
                continue;
            }
            if best.is_none_or(|(p, _)| offering.price < p) {
                best = Some((
                    offering.price,
                    Choice {
                        instance_type: i,
                        offering: o,
                    },
                ));
            }
        }
    }
    best.map(|(_, c)| c)
}

/// The Node standing for the NodeClaim's instance: named after the NodeClaim, managed by kwok
/// (annotation), with the instance type's labels and resources, and the
/// `karpenter.sh/unregistered:NoExecute` taint that registration removes.
pub fn build_node(claim: &NodeClaim, it: &InstanceType, offering: usize) -> Node {
    let name = claim.metadata.name.clone().unwrap_or_default();
    let mut labels = offering_labels(it, offering);
    // Single-valued requirements (e.g. a NodePool's `team In [a]`) become labels, so pods
    // selecting them land here; the NodeClaim's own labels win over everything.
    if let Ok(reqs) = claim_requirements(claim) {
        labels.extend(reqs.single_values());
    }
    labels.extend(claim.metadata.labels.clone().unwrap_or_default());
    labels.insert(HOSTNAME_LABEL.to_string(), name.clone());
    labels.insert(MANAGED_LABEL.to_string(), "true".to_string());
    labels.insert(
        KWOK_NODE_ANNOTATION.to_string(),
        KWOK_NODE_VALUE.to_string(),
    );
    let capacity = resource_list(&it.capacity);
    let allocatable = resource_list(&it.allocatable());
    Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                KWOK_NODE_ANNOTATION.to_string(),
                KWOK_NODE_VALUE.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(format!("{PROVIDER_ID_PREFIX}{name}")),
            taints: Some(vec![K8sTaint {
                key: UNREGISTERED_TAINT_KEY.to_string(),
                effect: "NoExecute".to_string(),
                ..K8sTaint::default()
            }]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(capacity),
            allocatable: Some(allocatable),
            ..NodeStatus::default()
        }),
    }
}

/// The node name behind a kwok providerID.
pub fn node_name(provider_id: &str) -> Option<&str> {
    provider_id
        .strip_prefix(PROVIDER_ID_PREFIX)
        .filter(|n| !n.is_empty())
}

/// An instance (kwok Node) described as a NodeClaim, as `get`/`list` return it.
pub fn instance_view(node: &Node) -> NodeClaim {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut view = NodeClaim::for_instance(&name, None);
    view.metadata.labels = node.metadata.labels.clone();
    view.metadata.creation_timestamp = node.metadata.creation_timestamp.clone();
    view.metadata.deletion_timestamp = node.metadata.deletion_timestamp.clone();
    let status = node.status.clone().unwrap_or_default();
    view.status = Some(NodeClaimStatus {
        node_name: Some(name),
        provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        capacity: status.capacity.unwrap_or_default(),
        allocatable: status.allocatable.unwrap_or_default(),
        ..NodeClaimStatus::default()
    });
    view
}

/// The NodeClaim as launched on `instance`: instance labels merged under the NodeClaim's own
/// (user labels win), providerID, capacity and allocatable.
pub fn launched(claim: &NodeClaim, instance: &NodeClaim) -> NodeClaim {
    let mut out = claim.clone();
    let mut labels = instance.metadata.labels.clone().unwrap_or_default();
    // Provider bookkeeping labels stay on the Node only.
    labels.remove(MANAGED_LABEL);
    labels.remove(KWOK_NODE_ANNOTATION);
    labels.remove(HOSTNAME_LABEL);
    labels.extend(claim.metadata.labels.clone().unwrap_or_default());
    out.metadata.labels = Some(labels);
    let inst = instance.status.clone().unwrap_or_default();
    let mut status = claim.status.clone().unwrap_or_default();
    status.provider_id = inst.provider_id;
    status.capacity = inst.capacity;
    status.allocatable = inst.allocatable;
    out.status = Some(status);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kwok::catalog;
    use karpenter_api::v1::{self, NodeClaimSpec, NodeSelectorRequirementWithMinValues};

    fn claim(reqs: &[(&str, v1::Operator, &[&str])], cpu: &str) -> NodeClaim {
        let mut c = NodeClaim::new(
            "default-abcde",
            NodeClaimSpec {
                taints: vec![],
                startup_taints: vec![],
                requirements: reqs
                    .iter()
                    .map(|(k, op, vs)| NodeSelectorRequirementWithMinValues {
                        key: k.to_string(),
                        operator: *op,
                        values: vs.iter().map(|v| v.to_string()).collect(),
                        min_values: None,
                    })
                    .collect(),
                resources: karpenter_api::v1::ResourceRequirements {
                    requests: BTreeMap::from([("cpu".to_string(), Quantity(cpu.to_string()))]),
                },
                node_class_ref: Default::default(),
                termination_grace_period: None,
                expire_after: "720h".into(),
            },
        );
        c.metadata.labels = Some(BTreeMap::from([(
            "karpenter.sh/nodepool".to_string(),
            "default".to_string(),
        )]));
        c
    }

    fn choose(c: &NodeClaim) -> Option<(String, String, String)> {
        let cat = catalog();
        let reqs = claim_requirements(c).unwrap();
        let requests = parse_resource_list(&c.spec.resources.requests).unwrap();
        select(
            &cat,
            &reqs,
            &requests,
            &UnavailableOfferings::default(),
            Instant::now(),
        )
        .map(|ch| {
            let it = &cat[ch.instance_type];
            let o = &it.offerings[ch.offering];
            (it.name.clone(), o.zone.clone(), o.capacity_type.clone())
        })
    }

    #[test]
    fn picks_the_cheapest_compatible_offering() {
        let c = claim(
            &[
                (
                    INSTANCE_TYPE_LABEL,
                    v1::Operator::In,
                    &["s-4x-amd64-linux", "c-4x-amd64-linux"],
                ),
                (CAPACITY_TYPE_LABEL, v1::Operator::In, &["on-demand"]),
                ("karpenter.sh/nodepool", v1::Operator::In, &["default"]),
            ],
            "1",
        );
        let (it, zone, ct) = choose(&c).unwrap();
        assert_eq!(
            it, "c-4x-amd64-linux",
            "c is cheaper than s at the same cpu"
        );
        assert_eq!(ct, "on-demand");
        assert_eq!(zone, "test-zone-a", "ties go to the first offering");
    }

    #[test]
    fn a_claim_pinned_to_a_reservation_launches_into_it() {
        let mut cat = catalog();
        let r = crate::kwok::parse_reservations(
            "cr-a=c-1x-amd64-linux/test-zone-b:1,cr-b=c-1x-amd64-linux/test-zone-b:1",
        )
        .unwrap();
        crate::kwok::add_reservations(&mut cat, &r).unwrap();
        let c = claim(
            &[
                (CAPACITY_TYPE_LABEL, v1::Operator::In, &["reserved"]),
                (RESERVATION_ID_LABEL, v1::Operator::In, &["cr-b"]),
            ],
            "500m",
        );
        let reqs = claim_requirements(&c).unwrap();
        let requests = parse_resource_list(&c.spec.resources.requests).unwrap();
        let now = Instant::now();
        let ch = select(
            &cat,
            &reqs,
            &requests,
            &UnavailableOfferings::default(),
            now,
        )
        .unwrap();
        let it = &cat[ch.instance_type];
        assert_eq!(it.offerings[ch.offering].reservation_id(), Some("cr-b"));
        let node = build_node(&c, it, ch.offering);
        let labels = node.metadata.labels.unwrap_or_default();
        assert_eq!(labels[CAPACITY_TYPE_LABEL], "reserved");
        assert_eq!(labels[RESERVATION_ID_LABEL], "cr-b");
        assert_eq!(labels[ZONE_LABEL], "test-zone-b");
        assert_eq!(labels[INSTANCE_TYPE_LABEL], "c-1x-amd64-linux");
    }

    #[test]
    fn respects_zone_and_fit() {
        let c = claim(&[(ZONE_LABEL, v1::Operator::In, &["test-zone-c"])], "3");
        let (it, zone, ct) = choose(&c).unwrap();
        assert_eq!(zone, "test-zone-c");
        assert_eq!(ct, "spot");
        assert_eq!(it, "c-4x-amd64-linux", "3 cpu do not fit a 2-cpu type");
        let none = claim(&[], "100000");
        assert_eq!(choose(&none), None);
    }

    #[test]
    fn unavailable_offerings_are_skipped() {
        let cat = catalog();
        let c = claim(
            &[(INSTANCE_TYPE_LABEL, v1::Operator::In, &["c-1x-amd64-linux"])],
            "100m",
        );
        let reqs = claim_requirements(&c).unwrap();
        let requests = parse_resource_list(&c.spec.resources.requests).unwrap();
        let ice = UnavailableOfferings::default();
        let now = Instant::now();
        let first = select(&cat, &reqs, &requests, &ice, now).unwrap();
        let it = &cat[first.instance_type];
        let o = &it.offerings[first.offering];
        ice.mark(
            OfferingKey {
                instance_type: it.name.clone(),
                zone: o.zone.clone(),
                capacity_type: o.capacity_type.clone(),
            },
            now,
        );
        let second = select(&cat, &reqs, &requests, &ice, now).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn node_carries_labels_taint_and_resources() {
        let cat = catalog();
        let c = claim(&[("team", v1::Operator::In, &["a"])], "1");
        let it = cat.iter().find(|i| i.name == "c-2x-amd64-linux").unwrap();
        let node = build_node(&c, it, 1);
        let labels = node.metadata.labels.clone().unwrap();
        assert_eq!(labels[INSTANCE_TYPE_LABEL], "c-2x-amd64-linux");
        assert_eq!(labels[CAPACITY_TYPE_LABEL], "on-demand");
        assert_eq!(labels[ZONE_LABEL], "test-zone-a");
        assert_eq!(labels["team"], "a");
        assert_eq!(labels["karpenter.sh/nodepool"], "default");
        assert_eq!(labels[HOSTNAME_LABEL], "default-abcde");
        assert_eq!(
            node.metadata.annotations.clone().unwrap()[KWOK_NODE_ANNOTATION],
            KWOK_NODE_VALUE
        );
        let spec = node.spec.clone().unwrap();
        assert_eq!(spec.provider_id.as_deref(), Some("kwok://default-abcde"));
        assert_eq!(spec.taints.unwrap()[0].key, UNREGISTERED_TAINT_KEY);
        let status = node.status.clone().unwrap();
        assert_eq!(status.capacity.unwrap()["cpu"].0, "2");
        assert_eq!(status.allocatable.unwrap()["cpu"].0, "1900m");

        let view = instance_view(&node);
        let l = launched(&c, &view);
        let ls = l.metadata.labels.clone().unwrap();
        assert!(!ls.contains_key(MANAGED_LABEL));
        assert_eq!(ls[INSTANCE_TYPE_LABEL], "c-2x-amd64-linux");
        let st = l.status.unwrap();
        assert_eq!(st.provider_id.as_deref(), Some("kwok://default-abcde"));
        assert_eq!(st.allocatable["memory"].0, "4086Mi");
        assert_eq!(node_name("kwok://x"), Some("x"));
        assert_eq!(node_name("aws:///x"), None);
    }

    #[test]
    fn instances_are_ours_or_upstream_karpenters() {
        let cat = catalog();
        let c = claim(&[], "1");
        let it = cat.iter().find(|i| i.name == "c-2x-amd64-linux").unwrap();
        let ours = build_node(&c, it, 0);
        assert!(is_instance(&ours));

        // As upstream's kwok provider makes them: kwok://<name>, the NodePool label, no
        // managed label.
        let mut upstream = ours.clone();
        let labels = upstream.metadata.labels.as_mut().unwrap();
        labels.remove(MANAGED_LABEL);
        assert!(is_instance(&upstream));

        // A kwok Node no Karpenter launched (no NodePool label), or another provider's.
        let mut unmanaged = upstream.clone();
        unmanaged
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(NODE_POOL_LABEL);
        assert!(!is_instance(&unmanaged));
        let mut other = upstream.clone();
        other.spec.as_mut().unwrap().provider_id = Some("aws:///zone/i-1".into());
        assert!(!is_instance(&other));
    }
}
