//! Drift: whether a launched instance still matches its EC2NodeClass. Pure functions over the
//! resolved status and what DescribeInstances reports, so every rule is unit-tested.
//!
//! Like upstream, the selector terms are not part of the static hash: what they resolve to is
//! checked against the instance instead (`AMIDrift`, `SubnetDrift`, `SecurityGroupDrift`), and
//! the rest of the spec is hashed into the NodeClaim annotation
//! [`NODECLASS_HASH_ANNOTATION`] at launch (`NodeClassDrift` when it changes).

use std::collections::BTreeSet;

use karpenter_api::ec2::{EC2NodeClass, EC2NodeClassStatus};

use super::launch::stable_hash;

/// NodeClaim annotation holding the hash of the EC2NodeClass spec it was launched from.
pub const NODECLASS_HASH_ANNOTATION: &str = "karpenter.k8s.aws/ec2nodeclass-hash";
/// NodeClaim annotation holding the version of the hash scheme (a scheme change is not drift).
pub const NODECLASS_HASH_VERSION_ANNOTATION: &str = "karpenter.k8s.aws/ec2nodeclass-hash-version";
/// The current hash scheme.
pub const NODECLASS_HASH_VERSION: &str = "v1";

/// Drift reason: the instance's image is no longer selected.
pub const AMI_DRIFT: &str = "AMIDrift";
/// Drift reason: the instance's subnet is no longer selected.
pub const SUBNET_DRIFT: &str = "SubnetDrift";
/// Drift reason: the instance's security groups differ from the selected ones.
pub const SECURITY_GROUP_DRIFT: &str = "SecurityGroupDrift";
/// Drift reason: the instance runs in a capacity reservation the EC2NodeClass no longer
/// selects (upstream `CapacityReservationDrift`).
pub const CAPACITY_RESERVATION_DRIFT: &str = "CapacityReservationDrift";
/// Drift reason: the static part of the EC2NodeClass spec changed.
pub const NODECLASS_DRIFT: &str = "NodeClassDrift";

/// Spec fields left out of the static hash (resolved dynamically and compared to the instance).
const DYNAMIC_FIELDS: [&str; 4] = [
    "subnetSelectorTerms",
    "securityGroupSelectorTerms",
    "amiSelectorTerms",
    // Upstream `hash:"ignore"`: which reservations are selected is checked against the
    // instance instead (`CapacityReservationDrift`).
    "capacityReservationSelectorTerms",
];

/// The static hash of an EC2NodeClass spec, as a decimal string. Struct fields serialise in
/// declaration order and the spec's maps are BTreeMaps, so equal specs hash equally.
pub fn node_class_hash(nc: &EC2NodeClass) -> String {
    let mut value = serde_json::to_value(&nc.spec).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = value.as_object_mut() {
        for f in DYNAMIC_FIELDS {
            obj.remove(f);
        }
    }
    let text = value.to_string();
    stable_hash(&[text.as_str()]).to_string()
}

/// What drift needs to know about a running instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFacts {
    /// Image id.
    pub image_id: Option<String>,
    /// Subnet id.
    pub subnet_id: Option<String>,
    /// Security group ids.
    pub security_groups: BTreeSet<String>,
    /// The capacity reservation it runs in, as EC2 reports it (none once a reservation ended
    /// and the instance went on as on-demand).
    pub capacity_reservation_id: Option<String>,
}

/// The first drift reason (in upstream's order: static hash, AMI, subnet, security groups,
/// capacity reservation), or
/// `None`. `claim_hash` is the NodeClaim's [`NODECLASS_HASH_ANNOTATION`] (skipped when absent,
/// e.g. claims launched before the annotation existed).
pub fn drift_reason(
    claim_hash: Option<&str>,
    nc: &EC2NodeClass,
    status: &EC2NodeClassStatus,
    instance: &InstanceFacts,
) -> Option<&'static str> {
    if let Some(h) = claim_hash
        && h != node_class_hash(nc)
    {
        return Some(NODECLASS_DRIFT);
    }
    // An empty resolution means "not resolved" (a NotReady NodeClass), not "everything drifted".
    if let Some(image) = &instance.image_id
        && !status.amis.is_empty()
        && !status.amis.iter().any(|a| &a.id == image)
    {
        return Some(AMI_DRIFT);
    }
    if let Some(subnet) = &instance.subnet_id
        && !status.subnets.is_empty()
        && !status.subnets.iter().any(|s| &s.id == subnet)
    {
        return Some(SUBNET_DRIFT);
    }
    let selected: BTreeSet<String> = status
        .security_groups
        .iter()
        .map(|g| g.id.clone())
        .collect();
    if !selected.is_empty() && selected != instance.security_groups {
        return Some(SECURITY_GROUP_DRIFT);
    }
    // The reservation status is checked dynamically, like upstream: an instance whose
    // reservation ended runs on as on-demand and reports none, so it does not drift. No
    // selected reservations is a valid resolution (terms removed), but a class that resolved
    // no subnets is not resolved at all.
    if let Some(id) = &instance.capacity_reservation_id
        && !status.subnets.is_empty()
        && !status.capacity_reservations.iter().any(|r| &r.id == id)
    {
        return Some(CAPACITY_RESERVATION_DRIFT);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpenter_api::ec2::{
        EC2NodeClassSpec, ResolvedAmi, ResolvedCapacityReservation, ResolvedSecurityGroup,
        ResolvedSubnet, SelectorTerm,
    };

    fn nc() -> EC2NodeClass {
        EC2NodeClass::new(
            "default",
            EC2NodeClassSpec {
                instance_profile: Some("p".into()),
                ..Default::default()
            },
        )
    }

    fn status() -> EC2NodeClassStatus {
        EC2NodeClassStatus {
            subnets: vec![ResolvedSubnet {
                id: "subnet-1".into(),
                zone: "us-east-1a".into(),
                zone_id: None,
            }],
            security_groups: vec![ResolvedSecurityGroup {
                id: "sg-1".into(),
                name: None,
            }],
            amis: vec![ResolvedAmi {
                id: "ami-1".into(),
                name: None,
                requirements: vec![],
            }],
            ..Default::default()
        }
    }

    fn facts() -> InstanceFacts {
        InstanceFacts {
            image_id: Some("ami-1".into()),
            subnet_id: Some("subnet-1".into()),
            security_groups: BTreeSet::from(["sg-1".to_owned()]),
            capacity_reservation_id: None,
        }
    }

    #[test]
    fn hash_ignores_selectors_but_not_the_rest() {
        let a = nc();
        let mut b = nc();
        b.spec.subnet_selector_terms = vec![SelectorTerm {
            id: Some("subnet-9".into()),
            ..Default::default()
        }];
        assert_eq!(node_class_hash(&a), node_class_hash(&b));
        b.spec.instance_profile = Some("other".into());
        assert_ne!(node_class_hash(&a), node_class_hash(&b));
    }

    #[test]
    fn each_kind_of_drift_is_named() {
        let h = node_class_hash(&nc());
        assert_eq!(drift_reason(Some(&h), &nc(), &status(), &facts()), None);
        assert_eq!(drift_reason(None, &nc(), &status(), &facts()), None);
        assert_eq!(
            drift_reason(Some("0"), &nc(), &status(), &facts()),
            Some(NODECLASS_DRIFT)
        );
        let mut f = facts();
        f.image_id = Some("ami-old".into());
        assert_eq!(
            drift_reason(Some(&h), &nc(), &status(), &f),
            Some(AMI_DRIFT)
        );
        let mut f = facts();
        f.subnet_id = Some("subnet-old".into());
        assert_eq!(
            drift_reason(Some(&h), &nc(), &status(), &f),
            Some(SUBNET_DRIFT)
        );
        let mut f = facts();
        f.security_groups.insert("sg-2".into());
        assert_eq!(
            drift_reason(Some(&h), &nc(), &status(), &f),
            Some(SECURITY_GROUP_DRIFT)
        );
        // In a reservation the class still selects: not drifted; in one it no longer selects
        // (or the terms were removed): drifted.
        let mut st = status();
        st.capacity_reservations = vec![ResolvedCapacityReservation {
            id: "cr-1".into(),
            ..Default::default()
        }];
        let mut f = facts();
        f.capacity_reservation_id = Some("cr-1".into());
        assert_eq!(drift_reason(Some(&h), &nc(), &st, &f), None);
        f.capacity_reservation_id = Some("cr-2".into());
        assert_eq!(
            drift_reason(Some(&h), &nc(), &st, &f),
            Some(CAPACITY_RESERVATION_DRIFT)
        );
        f.capacity_reservation_id = Some("cr-1".into());
        assert_eq!(
            drift_reason(Some(&h), &nc(), &status(), &f),
            Some(CAPACITY_RESERVATION_DRIFT)
        );
        // Nothing resolved (NodeClass not ready): no verdict on AMIs/subnets/groups.
        let f = InstanceFacts {
            image_id: Some("ami-x".into()),
            capacity_reservation_id: Some("cr-9".into()),
            ..Default::default()
        };
        assert_eq!(
            drift_reason(Some(&h), &nc(), &EC2NodeClassStatus::default(), &f),
            None
        );
    }
}
