//! Pure parts of launching: which offerings a NodeClaim may get, the CreateFleet overrides
//! (ordered by price, at most 60), the tags, providerIDs. No I/O, so all of it is unit-tested.

use std::collections::BTreeMap;

use karpenter_api::ec2::{ResolvedAmi, ResolvedCapacityReservation};
use karpenter_api::labels::{
    CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODE_POOL_LABEL, ZONE_LABEL,
};
use karpenter_api::v1::NodeClaim;
use karpenter_solver::quantity::parse_for_resource;
use karpenter_solver::{InstanceType, Requirements, Resources, labels};

use super::nodeclass::ami_arch;
use super::reservations::{CAPACITY_RESERVATION_ID_LABEL, CAPACITY_RESERVATION_TYPE_LABEL};

/// CreateFleet accepts at most this many overrides per launch template config.
pub const MAX_OVERRIDES: usize = 60;
/// CreateFleet accepts at most this many launch template configs.
pub const MAX_LAUNCH_TEMPLATE_CONFIGS: usize = 50;
/// Tag naming the NodeClaim an instance was launched for.
pub const NODECLAIM_TAG: &str = "karpenter.sh/nodeclaim";
/// Tag naming the NodePool.
pub const NODEPOOL_TAG: &str = NODE_POOL_LABEL;
/// Tag naming the EC2NodeClass.
pub const NODECLASS_TAG: &str = crate::instance_type::label::EC2_NODE_CLASS;

/// `kubernetes.io/cluster/<name>`: the tag that says an instance belongs to the cluster.
pub fn cluster_tag(cluster: &str) -> String {
    format!("kubernetes.io/cluster/{cluster}")
}

/// One instance type × zone × capacity type a NodeClaim may launch as.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Instance type name.
    pub instance_type: String,
    /// Zone.
    pub zone: String,
    /// `spot`, `on-demand` or `reserved`.
    pub capacity_type: String,
    /// USD per hour.
    pub price: f64,
    /// The capacity reservation of a `reserved` candidate.
    pub reservation_id: Option<String>,
}

/// One CreateFleet override: an instance type in a subnet.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Instance type name.
    pub instance_type: String,
    /// Subnet to launch into.
    pub subnet_id: String,
    /// The subnet's zone.
    pub zone: String,
    /// USD per hour (orders the overrides; `priority` follows it).
    pub price: f64,
}

/// The NodeClaim's requirements in the solver's algebra.
pub fn claim_requirements(claim: &NodeClaim) -> Result<Requirements, String> {
    karpenter_api::solver_input::claim_requirements(claim).map_err(|e| e.to_string())
}

/// The NodeClaim's resource requests in integer units.
pub fn claim_requests(claim: &NodeClaim) -> Result<Resources, String> {
    let mut out = Resources::new();
    for (name, q) in &claim.spec.resources.requests {
        let v = parse_for_resource(name, &q.0).map_err(|e| format!("requests.{name}: {e}"))?;
        out.add_one(name, v);
    }
    Ok(out)
}

/// Every available offering compatible with `requirements` whose instance type holds
/// `requests`, cheapest first (ties by instance type, then zone, so the order is stable). A
/// reserved offering (with capacity left) also carries its reservation's id and type labels
/// (`reservations`: the NodeClass's), so a NodeClaim pinned to one reservation matches only it.
pub fn candidates(
    instance_types: &[InstanceType],
    requirements: &Requirements,
    requests: &Resources,
    reservations: &[ResolvedCapacityReservation],
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for it in instance_types {
        if !requests.fits_in(&it.allocatable()) {
            continue;
        }
        for o in it.offerings.iter().filter(|o| o.usable()) {
            let mut labels = it.labels.clone();
            labels.insert(INSTANCE_TYPE_LABEL.to_owned(), it.name.clone());
            labels.insert(ZONE_LABEL.to_owned(), o.zone.clone());
            labels.insert(CAPACITY_TYPE_LABEL.to_owned(), o.capacity_type.clone());
            if let Some(id) = o.reservation_id() {
                labels.insert(CAPACITY_RESERVATION_ID_LABEL.to_owned(), id.to_owned());
                if let Some(r) = reservations.iter().find(|r| r.id == id) {
                    labels.insert(
                        CAPACITY_RESERVATION_TYPE_LABEL.to_owned(),
                        r.reservation_type.clone(),
                    );
                }
            }
            if Requirements::from_labels(&labels).intersects(requirements) {
                out.push(Candidate {
                    instance_type: it.name.clone(),
                    zone: o.zone.clone(),
                    capacity_type: o.capacity_type.clone(),
                    price: o.price,
                    reservation_id: o.reservation_id().map(str::to_owned),
                });
            }
        }
    }
    out.sort_by(|a, b| {
        a.price
            .total_cmp(&b.price)
            .then_with(|| a.instance_type.cmp(&b.instance_type))
            .then_with(|| a.zone.cmp(&b.zone))
    });
    out
}

/// Upstream's preference among the capacity types the candidates allow: reserved (already paid
/// for), then spot, then on-demand.
pub fn capacity_type(candidates: &[Candidate]) -> Option<&'static str> {
    if candidates
        .iter()
        .any(|c| c.capacity_type == labels::CAPACITY_TYPE_RESERVED)
    {
        Some(labels::CAPACITY_TYPE_RESERVED)
    } else if candidates.iter().any(|c| c.capacity_type == "spot") {
        Some("spot")
    } else if candidates.iter().any(|c| c.capacity_type == "on-demand") {
        Some("on-demand")
    } else {
        None
    }
}

/// The overrides for `capacity_type`: each candidate in the first resolved subnet of its zone,
/// cheapest first, at most [`MAX_OVERRIDES`]. Candidates in zones without a subnet are dropped.
pub fn overrides(
    candidates: &[Candidate],
    capacity_type: &str,
    subnets: &[(String, String)],
) -> Vec<Override> {
    let mut subnet_of_zone: BTreeMap<&str, &str> = BTreeMap::new();
    for (id, zone) in subnets {
        subnet_of_zone.entry(zone.as_str()).or_insert(id.as_str());
    }
    candidates
        .iter()
        .filter(|c| c.capacity_type == capacity_type)
        .filter_map(|c| {
            subnet_of_zone.get(c.zone.as_str()).map(|subnet| Override {
                instance_type: c.instance_type.clone(),
                subnet_id: (*subnet).to_owned(),
                zone: c.zone.clone(),
                price: c.price,
            })
        })
        .take(MAX_OVERRIDES)
        .collect()
}

/// The image an instance type boots: the first resolved image (newest first) whose
/// architecture is the type's `kubernetes.io/arch` (an image without an architecture
/// requirement fits any).
pub fn image_for<'a>(amis: &'a [ResolvedAmi], arch: Option<&str>) -> Option<&'a ResolvedAmi> {
    amis.iter().find(|a| match (ami_arch(a), arch) {
        (None, _) => true,
        (Some(want), Some(have)) => want == have,
        (Some(_), None) => false,
    })
}

/// The `kubernetes.io/arch` label of the named instance type.
pub fn arch_of<'a>(instance_types: &'a [InstanceType], name: &str) -> Option<&'a str> {
    instance_types
        .iter()
        .find(|it| it.name == name)
        .and_then(|it| it.labels.get(labels::ARCH))
        .map(String::as_str)
}

/// Splits the overrides by the image their instance type boots (one launch template per
/// image), groups in the order of their cheapest override, each keeping the price order.
/// Overrides whose type no resolved image fits are dropped: they could not boot.
pub fn overrides_by_image(
    overrides: &[Override],
    instance_types: &[InstanceType],
    amis: &[ResolvedAmi],
) -> Vec<(String, Vec<Override>)> {
    let mut groups: Vec<(String, Vec<Override>)> = Vec::new();
    for o in overrides {
        let Some(image) = image_for(amis, arch_of(instance_types, &o.instance_type)) else {
            continue;
        };
        match groups.iter_mut().find(|(id, _)| *id == image.id) {
            Some((_, g)) => g.push(o.clone()),
            None => groups.push((image.id.clone(), vec![o.clone()])),
        }
    }
    groups
}

/// The pod capacity (kubelet `maxPods`) of the named instance type.
pub fn max_pods_of(instance_types: &[InstanceType], name: &str) -> Option<i64> {
    instance_types
        .iter()
        .find(|it| it.name == name)
        .map(|it| it.capacity.get(karpenter_solver::resources::PODS))
}

/// Splits one image's overrides by their instance type's max pods: each group gets its own
/// user data (kubelet's `maxPods`), hence its own launch template, like upstream. Groups come
/// in the order of their cheapest override and keep the price order.
pub fn overrides_by_max_pods(
    overrides: &[Override],
    instance_types: &[InstanceType],
) -> Vec<(Option<i64>, Vec<Override>)> {
    let mut groups: Vec<(Option<i64>, Vec<Override>)> = Vec::new();
    for o in overrides {
        let pods = max_pods_of(instance_types, &o.instance_type);
        match groups.iter_mut().find(|(p, _)| *p == pods) {
            Some((_, g)) => g.push(o.clone()),
            None => groups.push((pods, vec![o.clone()])),
        }
    }
    groups
}

/// Tags of a launched instance: the NodeClass's own tags, then the ones Karpenter relies on
/// (those win: garbage collection and `list` find instances by them).
pub fn instance_tags(
    cluster: &str,
    claim: &NodeClaim,
    node_class: &str,
    node_class_tags: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut tags = node_class_tags.clone();
    let labels = claim.metadata.labels.clone().unwrap_or_default();
    if let Some(pool) = labels.get(NODE_POOL_LABEL) {
        tags.insert(NODEPOOL_TAG.to_owned(), pool.clone());
    }
    tags.insert(
        NODECLAIM_TAG.to_owned(),
        claim.metadata.name.clone().unwrap_or_default(),
    );
    tags.insert(NODECLASS_TAG.to_owned(), node_class.to_owned());
    tags.insert(cluster_tag(cluster), "owned".to_owned());
    tags.insert(
        "Name".to_owned(),
        claim.metadata.name.clone().unwrap_or_default(),
    );
    tags
}

/// `aws:///<zone>/<instance id>`, the providerID the kubelet reports on EC2.
pub fn provider_id(zone: &str, instance_id: &str) -> String {
    format!("aws:///{zone}/{instance_id}")
}

/// The instance id of an AWS providerID (`aws:///us-east-1a/i-0abc` → `i-0abc`).
pub fn instance_id(provider_id: &str) -> Option<&str> {
    let rest = provider_id.strip_prefix("aws:///")?;
    let id = rest.rsplit('/').next()?;
    id.starts_with("i-").then_some(id)
}

/// FNV-1a over the parts: a short, stable name suffix (std's hashers may change between Rust
/// releases, and a renamed launch template would orphan the old one).
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpenter_api::v1::{self, NodeClaimSpec, NodeSelectorRequirementWithMinValues};
    use karpenter_solver::Offering;

    fn it(name: &str, cpu: i64, offers: &[(&str, &str, f64)]) -> InstanceType {
        InstanceType {
            name: name.into(),
            capacity: Resources::from_pairs([("cpu", cpu * 1000), ("pods", 10)]),
            overhead: Default::default(),
            labels: BTreeMap::from([("kubernetes.io/arch".into(), "amd64".into())]),
            offerings: offers
                .iter()
                .map(|(z, c, p)| Offering::new(z, c, *p))
                .collect(),
        }
    }

    fn claim(reqs: &[(&str, &[&str])]) -> NodeClaim {
        let mut c = NodeClaim::new(
            "default-x1",
            NodeClaimSpec {
                taints: vec![],
                startup_taints: vec![],
                requirements: reqs
                    .iter()
                    .map(|(k, vs)| NodeSelectorRequirementWithMinValues {
                        key: k.to_string(),
                        operator: v1::Operator::In,
                        values: vs.iter().map(|v| v.to_string()).collect(),
                        min_values: None,
                    })
                    .collect(),
                resources: Default::default(),
                node_class_ref: Default::default(),
                termination_grace_period: None,
                expire_after: "Never".into(),
            },
        );
        c.metadata.labels = Some(BTreeMap::from([(NODE_POOL_LABEL.into(), "default".into())]));
        c
    }

    #[test]
    fn candidates_respect_requirements_size_and_price_order() -> Result<(), String> {
        let its = vec![
            it("big", 8, &[("a", "spot", 0.3), ("b", "on-demand", 0.9)]),
            it("small", 2, &[("a", "spot", 0.1), ("b", "spot", 0.05)]),
        ];
        let c = claim(&[("karpenter.sh/capacity-type", &["spot"])]);
        let reqs = claim_requirements(&c)?;
        let cands = candidates(&its, &reqs, &Resources::from_pairs([("cpu", 1000)]), &[]);
        let names: Vec<_> = cands
            .iter()
            .map(|c| (c.instance_type.as_str(), c.zone.as_str()))
            .collect();
        assert_eq!(names, [("small", "b"), ("small", "a"), ("big", "a")]);
        let cands = candidates(&its, &reqs, &Resources::from_pairs([("cpu", 4000)]), &[]);
        assert_eq!(cands.len(), 1, "small is too small: {cands:?}");
        assert_eq!(capacity_type(&cands), Some("spot"));
        Ok(())
    }

    #[test]
    fn a_claim_pinned_to_a_reservation_matches_only_its_offering() -> Result<(), String> {
        let mut m5 = it("m5.large", 2, &[("a", "on-demand", 0.096)]);
        m5.offerings.extend([
            Offering::reserved("a", 0.096e-7, "cr-1", 2),
            Offering::reserved("a", 0.096e-7, "cr-2", 1),
            Offering::reserved("a", 0.096e-7, "cr-full", 0),
        ]);
        let statuses = [("cr-1", "default"), ("cr-2", "capacity-block")].map(|(id, t)| {
            ResolvedCapacityReservation {
                id: id.into(),
                reservation_type: t.into(),
                ..Default::default()
            }
        });
        let requests = Resources::from_pairs([("cpu", 1000)]);
        let pinned = claim(&[
            ("karpenter.sh/capacity-type", &["reserved"]),
            (CAPACITY_RESERVATION_ID_LABEL, &["cr-2"]),
        ]);
        let cands = candidates(
            &[m5.clone()],
            &claim_requirements(&pinned)?,
            &requests,
            &statuses,
        );
        let ids: Vec<_> = cands.iter().map(|c| c.reservation_id.as_deref()).collect();
        assert_eq!(ids, [Some("cr-2")]);
        // By type: of the reservations, the capacity block only; on-demand has no type label,
        // and only labels both sides have are compared (as upstream's undefined labels).
        let by_type = claim(&[(CAPACITY_RESERVATION_TYPE_LABEL, &["capacity-block"])]);
        let cands = candidates(
            &[m5.clone()],
            &claim_requirements(&by_type)?,
            &requests,
            &statuses,
        );
        let ids: Vec<_> = cands.iter().map(|c| c.reservation_id.as_deref()).collect();
        assert_eq!(ids, [Some("cr-2"), None]);
        // Unpinned: both reservations with capacity left, and on-demand; reserved is preferred.
        let open = claim(&[]);
        let cands = candidates(&[m5], &claim_requirements(&open)?, &requests, &statuses);
        let ids: Vec<_> = cands.iter().map(|c| c.reservation_id.as_deref()).collect();
        assert_eq!(ids, [Some("cr-1"), Some("cr-2"), None]);
        assert_eq!(capacity_type(&cands), Some("reserved"));
        Ok(())
    }

    #[test]
    fn overrides_are_cheapest_first_capped_and_need_a_subnet_in_the_zone() {
        let mut cands = Vec::new();
        for i in 0..100 {
            cands.push(Candidate {
                instance_type: format!("t{i:03}"),
                zone: if i % 2 == 0 { "a".into() } else { "c".into() },
                capacity_type: "on-demand".into(),
                price: f64::from(i),
                reservation_id: None,
            });
        }
        let subnets = vec![
            ("subnet-2".to_owned(), "a".to_owned()),
            ("subnet-1".into(), "a".into()),
        ];
        let o = overrides(&cands, "on-demand", &subnets);
        assert_eq!(o.len(), 50, "zone c has no subnet");
        assert!(o.iter().all(|o| o.subnet_id == "subnet-2" && o.zone == "a"));
        assert!(o.windows(2).all(|w| w[0].price <= w[1].price));
        let subnets = vec![
            ("subnet-2".to_owned(), "a".to_owned()),
            ("subnet-3".into(), "c".into()),
        ];
        assert_eq!(
            overrides(&cands, "on-demand", &subnets).len(),
            MAX_OVERRIDES
        );
        assert!(overrides(&cands, "spot", &subnets).is_empty());
    }

    fn ami(id: &str, arch: Option<&str>) -> ResolvedAmi {
        ResolvedAmi {
            id: id.into(),
            name: None,
            requirements: arch
                .map(|a| NodeSelectorRequirementWithMinValues {
                    key: labels::ARCH.into(),
                    operator: v1::Operator::In,
                    values: vec![a.into()],
                    min_values: None,
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn each_architecture_launches_its_own_image() {
        let mut graviton = it("m6g.large", 2, &[]);
        graviton.labels.insert(labels::ARCH.into(), "arm64".into());
        let its = vec![it("m5.large", 2, &[]), graviton, it("c5.large", 2, &[])];
        let o = |t: &str, price: f64| Override {
            instance_type: t.into(),
            subnet_id: "subnet-1".into(),
            zone: "a".into(),
            price,
        };
        let overrides = vec![
            o("m6g.large", 0.07),
            o("m5.large", 0.09),
            o("c5.large", 0.1),
        ];
        // Newest first: the first image of an architecture wins over older ones.
        let amis = vec![
            ami("ami-x86-new", Some("amd64")),
            ami("ami-arm", Some("arm64")),
            ami("ami-x86-old", Some("amd64")),
        ];
        let groups = overrides_by_image(&overrides, &its, &amis);
        let names: Vec<(&str, Vec<&str>)> = groups
            .iter()
            .map(|(id, g)| {
                (
                    id.as_str(),
                    g.iter().map(|o| o.instance_type.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("ami-arm", vec!["m6g.large"]),
                ("ami-x86-new", vec!["m5.large", "c5.large"])
            ]
        );
        // Only an x86 image: the Graviton override is dropped, not launched with it.
        let groups = overrides_by_image(&overrides, &its, &[ami("ami-x86", Some("amd64"))]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].1.len(), 2);
        // An image without an architecture requirement boots anything.
        let groups = overrides_by_image(&overrides, &its, &[ami("ami-any", None)]);
        assert_eq!(groups[0].1.len(), 3);
    }

    #[test]
    fn overrides_split_by_max_pods_in_price_order() {
        let mut big = it("m5.xlarge", 4, &[]);
        big.capacity.set("pods", 58);
        let its = vec![it("m5.large", 2, &[]), big, it("c5.large", 2, &[])];
        let o = |t: &str, price: f64| Override {
            instance_type: t.into(),
            subnet_id: "subnet-1".into(),
            zone: "a".into(),
            price,
        };
        let overrides = vec![
            o("c5.large", 0.08),
            o("m5.xlarge", 0.09),
            o("m5.large", 0.1),
        ];
        let groups = overrides_by_max_pods(&overrides, &its);
        let names: Vec<(Option<i64>, Vec<&str>)> = groups
            .iter()
            .map(|(p, g)| (*p, g.iter().map(|o| o.instance_type.as_str()).collect()))
            .collect();
        assert_eq!(
            names,
            [
                (Some(10), vec!["c5.large", "m5.large"]),
                (Some(58), vec!["m5.xlarge"])
            ]
        );
    }

    #[test]
    fn tags_name_pool_claim_class_and_cluster() {
        let user = BTreeMap::from([
            ("team".to_owned(), "a".to_owned()),
            (NODECLAIM_TAG.to_owned(), "spoofed".to_owned()),
        ]);
        let tags = instance_tags("demo", &claim(&[]), "default", &user);
        assert_eq!(tags[NODEPOOL_TAG], "default");
        assert_eq!(tags[NODECLAIM_TAG], "default-x1");
        assert_eq!(tags[NODECLASS_TAG], "default");
        assert_eq!(tags["kubernetes.io/cluster/demo"], "owned");
        assert_eq!(tags["team"], "a");
    }

    #[test]
    fn provider_ids_round_trip() {
        let id = provider_id("us-east-1a", "i-0123");
        assert_eq!(id, "aws:///us-east-1a/i-0123");
        assert_eq!(instance_id(&id), Some("i-0123"));
        assert_eq!(instance_id("kwok://x"), None);
        assert_eq!(instance_id("aws:///us-east-1a/"), None);
        assert_ne!(stable_hash(&["a", "bc"]), stable_hash(&["ab", "c"]));
    }
}
