//! A planned NodeClaim → the NodeClaim object to create. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use karpenter_api::labels::{
    CAPACITY_TYPE_LABEL, HOSTNAME_LABEL, INSTANCE_TYPE_LABEL, NODE_POOL_LABEL,
    PROVISIONER_NAME_LABEL, ZONE_LABEL,
};
use karpenter_api::v1::{
    NodeClaim, NodeClaimSpec, NodePool, NodeSelectorRequirementWithMinValues, Operator,
    ResourceRequirements,
};
use karpenter_providers::kwok::launch::resource_list;
use karpenter_solver::PlannedNodeClaim;

use crate::nodeoverlay::launch::LaunchPrices;
use crate::state::legacy;

fn req(key: &str, values: Vec<String>) -> NodeSelectorRequirementWithMinValues {
    NodeSelectorRequirementWithMinValues {
        key: key.to_string(),
        operator: Operator::In,
        values,
        min_values: None,
    }
}

/// [`node_claim`] as launched: its options narrowed by the overlaid prices of the catalog it
/// was planned on, and upstream's `karpenter.sh/{price,capacity}-overlay-applied` annotations
/// when NodeOverlays changed any of them ([`LaunchPrices`]). A claim planned on a capacity
/// reservation is pinned to it with the provider's `reservation_key` label (upstream
/// `Finalize`), so the launch uses that reservation and no other.
pub fn launched_node_claim(
    pool: &NodePool,
    planned: &PlannedNodeClaim,
    launch: &LaunchPrices,
    reservation_key: Option<&str>,
) -> NodeClaim {
    let mut claim = node_claim(pool, &launch.narrow(pool, planned));
    if let (Some(key), Some(id)) = (reservation_key, &planned.reservation_id) {
        claim.spec.requirements.push(req(key, vec![id.clone()]));
    }
    // Marked by what the plan weighed (all its options), as upstream marks the template.
    let mut options = planned.instance_type_options.clone();
    options.push(planned.instance_type.clone());
    let marks = launch.annotations(&planned.node_pool, &options);
    if !marks.is_empty() {
        claim
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(marks);
    }
    claim
}

/// The NodeClaim for a planned one: `generateName: <nodepool>-`, owned by the NodePool,
/// labelled with the template labels and the NodePool, and with requirements narrowed to what
/// the solver decided: the NodePool's requirements, the instance-type options, the chosen zone
/// and capacity type (so topology decisions hold at launch), and any other single value the
/// pods pinned on a key the NodePool constrains.
pub fn node_claim(pool: &NodePool, planned: &PlannedNodeClaim) -> NodeClaim {
    let t = &pool.spec.template;
    let pool_name = pool.metadata.name.clone().unwrap_or_default();
    let pinned = [
        INSTANCE_TYPE_LABEL,
        ZONE_LABEL,
        CAPACITY_TYPE_LABEL,
        NODE_POOL_LABEL,
    ];
    let mut requirements: Vec<NodeSelectorRequirementWithMinValues> = Vec::new();
    for r in &t.spec.requirements {
        if pinned.contains(&r.key.as_str()) {
            continue;
        }
        match planned.labels.get(&r.key) {
            // The plan narrowed this key to one value (e.g. a pod's nodeSelector).
            Some(v) if r.key != HOSTNAME_LABEL => requirements.push(req(&r.key, vec![v.clone()])),
            _ => requirements.push(r.clone()),
        }
    }
    let mut options = planned.instance_type_options.clone();
    if !options.contains(&planned.instance_type) {
        options.push(planned.instance_type.clone());
    }
    options.sort();
    requirements.push(req(NODE_POOL_LABEL, vec![pool_name.clone()]));
    requirements.push(req(INSTANCE_TYPE_LABEL, options));
    requirements.push(req(ZONE_LABEL, vec![planned.zone.clone()]));
    requirements.push(req(
        CAPACITY_TYPE_LABEL,
        vec![planned.capacity_type.clone()],
    ));

    let mut labels: BTreeMap<String, String> = t.metadata.labels.clone();
    labels.insert(NODE_POOL_LABEL.to_string(), pool_name.clone());
    if legacy::is_from_provisioner(pool) {
        // What v1alpha5 nodes carried; selectors and dashboards written for them keep working.
        labels.insert(PROVISIONER_NAME_LABEL.to_string(), pool_name.clone());
    }
    let mut claim = NodeClaim::new(
        "",
        NodeClaimSpec {
            taints: t.spec.taints.clone(),
            startup_taints: t.spec.startup_taints.clone(),
            requirements,
            resources: ResourceRequirements {
                requests: resource_list(&planned.requests),
            },
            node_class_ref: t.spec.node_class_ref.clone(),
            termination_grace_period: t.spec.termination_grace_period.clone(),
            expire_after: t.spec.expire_after.clone(),
        },
    );
    claim.metadata = ObjectMeta {
        generate_name: Some(format!("{pool_name}-")),
        labels: Some(labels),
        // The NodePool hash: a later change of the template makes this claim drifted.
        annotations: Some(
            t.metadata
                .annotations
                .clone()
                .into_iter()
                .chain(crate::drift::hash::hash_annotations(pool))
                .collect(),
        ),
        owner_references: pool.metadata.uid.clone().map(|uid| {
            // A legacy Provisioner's claims are owned by it: an owner reference naming a
            // NodePool that does not exist would have them garbage-collected at once.
            let (api_version, kind) = if legacy::is_from_provisioner(pool) {
                ("karpenter.sh/v1alpha5", "Provisioner")
            } else {
                ("karpenter.sh/v1", "NodePool")
            };
            vec![OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: pool_name,
                uid,
                block_owner_deletion: Some(true),
                controller: None,
            }]
        }),
        ..ObjectMeta::default()
    };
    claim
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use karpenter_api::v1::{
        NodeClaimTemplate, NodeClaimTemplateSpec, NodeClassReference, NodePoolSpec,
    };
    use karpenter_solver::Resources;

    #[test]
    fn narrows_to_the_plan() {
        let mut pool = NodePool::new(
            "np",
            NodePoolSpec {
                template: NodeClaimTemplate {
                    metadata: Default::default(),
                    spec: NodeClaimTemplateSpec {
                        requirements: vec![
                            NodeSelectorRequirementWithMinValues {
                                key: "team".into(),
                                operator: Operator::In,
                                values: vec!["a".into(), "b".into()],
                                min_values: None,
                            },
                            NodeSelectorRequirementWithMinValues {
                                key: CAPACITY_TYPE_LABEL.into(),
                                operator: Operator::In,
                                values: vec!["spot".into(), "on-demand".into()],
                                min_values: None,
                            },
                        ],
                        node_class_ref: NodeClassReference {
                            group: "karpenter.kwok.sh".into(),
                            kind: "KWOKNodeClass".into(),
                            name: "default".into(),
                        },
                        ..Default::default()
                    },
                },
                disruption: Default::default(),
                limits: Default::default(),
                weight: None,
                replicas: None,
            },
        );
        pool.metadata.uid = Some("u1".into());
        let planned = PlannedNodeClaim {
            name: "np-1".into(),
            node_pool: "np".into(),
            instance_type: "c-2x".into(),
            zone: "z1".into(),
            capacity_type: "spot".into(),
            reservation_id: None,
            price: 1.0,
            instance_type_options: vec!["c-4x".into(), "c-2x".into()],
            labels: BTreeMap::from([("team".to_string(), "b".to_string())]),
            taints: vec![],
            pods: vec!["ns/p".into()],
            requests: Resources::from_pairs([("cpu", 1500), ("pods", 2)]),
        };
        let c = node_claim(&pool, &planned);
        assert_eq!(c.metadata.generate_name.as_deref(), Some("np-"));
        assert_eq!(c.metadata.labels.as_ref().unwrap()[NODE_POOL_LABEL], "np");
        let owner = &c.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("NodePool", "u1")
        );
        let get = |k: &str| {
            c.spec
                .requirements
                .iter()
                .find(|r| r.key == k)
                .map(|r| r.values.clone())
                .unwrap()
        };
        assert_eq!(get("team"), vec!["b"]);
        assert_eq!(get(INSTANCE_TYPE_LABEL), vec!["c-2x", "c-4x"]);
        assert_eq!(get(CAPACITY_TYPE_LABEL), vec!["spot"]);
        assert_eq!(get(ZONE_LABEL), vec!["z1"]);
        assert_eq!(c.spec.resources.requests["cpu"].0, "1500m");
        assert_eq!(c.spec.node_class_ref.kind, "KWOKNodeClass");
        assert!(
            !c.metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(PROVISIONER_NAME_LABEL)
        );

        // The same pool as a legacy Provisioner's view: owned by the Provisioner.
        pool.metadata.annotations = Some(BTreeMap::from([(
            legacy::PROVISIONER_ORIGIN_ANNOTATION.to_string(),
            "np".to_string(),
        )]));
        let c = node_claim(&pool, &planned);
        let owner = &c.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.uid.as_str()
            ),
            ("karpenter.sh/v1alpha5", "Provisioner", "u1")
        );
        assert_eq!(
            c.metadata.labels.as_ref().unwrap()[PROVISIONER_NAME_LABEL],
            "np"
        );
    }
}
