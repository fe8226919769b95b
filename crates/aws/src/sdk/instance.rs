//! EC2 instances seen as NodeClaims (what `get`/`list` return).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Instance, InstanceLifecycleType, InstanceStateName};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use karpenter_api::labels::{
    CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODE_POOL_LABEL, ZONE_LABEL,
};
use karpenter_api::v1::{NodeClaim, NodeClaimStatus};
use karpenter_solver::InstanceType;
use karpenter_solver::resources::format_quantity;

use super::drift::InstanceFacts;
use super::launch::{self, NODECLAIM_TAG, NODEPOOL_TAG};
use super::reserved::instance_reservation;
use karpenter_solver::labels::CAPACITY_TYPE_RESERVED;

/// Instance states that still count as "the instance exists" for get/list/GC.
pub const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];

/// Whether the instance is in one of [`LIVE_STATES`].
pub fn is_live(i: &Instance) -> bool {
    let state = i
        .state()
        .and_then(|s| s.name())
        .map(InstanceStateName::as_str);
    state.is_some_and(|s| LIVE_STATES.contains(&s))
}

/// An instance described as a NodeClaim: named after its NodeClaim tag (or its id),
/// instance-type/zone/capacity-type/NodePool labels (and the reservation labels of one launched
/// into a capacity reservation), providerID, capacity and allocatable
/// from the instance type when known.
pub fn instance_view(instance: &Instance, instance_types: &[InstanceType]) -> NodeClaim {
    let tags: BTreeMap<&str, &str> = instance
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    let id = instance.instance_id().unwrap_or_default();
    let name = tags.get(NODECLAIM_TAG).copied().unwrap_or(id);
    let zone = instance
        .placement()
        .and_then(|p| p.availability_zone())
        .unwrap_or_default();
    let it_name = instance
        .instance_type()
        .map(|t| t.as_str())
        .unwrap_or_default();
    let reservation = instance_reservation(instance);
    let capacity_type = if instance.instance_lifecycle() == Some(&InstanceLifecycleType::Spot) {
        "spot"
    } else if reservation.is_some() {
        CAPACITY_TYPE_RESERVED
    } else {
        "on-demand"
    };
    let it = instance_types.iter().find(|t| t.name == it_name);
    let mut labels = it.map(|t| t.labels.clone()).unwrap_or_default();
    for (k, v) in reservation.iter().flat_map(|r| r.labels()) {
        labels.insert(k.to_owned(), v);
    }
    labels.insert(INSTANCE_TYPE_LABEL.to_owned(), it_name.to_owned());
    labels.insert(ZONE_LABEL.to_owned(), zone.to_owned());
    labels.insert(CAPACITY_TYPE_LABEL.to_owned(), capacity_type.to_owned());
    if let Some(pool) = tags.get(NODEPOOL_TAG) {
        labels.insert(NODE_POOL_LABEL.to_owned(), (*pool).to_owned());
    }
    let list = |r: &karpenter_solver::Resources| -> BTreeMap<String, Quantity> {
        r.0.iter()
            .map(|(k, v)| (k.clone(), Quantity(format_quantity(k, *v))))
            .collect()
    };
    let mut view = NodeClaim::for_instance(name, None);
    view.metadata.labels = Some(labels);
    // Garbage collection only collects instances older than its grace period.
    view.metadata.creation_timestamp = instance
        .launch_time()
        .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t.secs()).ok())
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
    view.status = Some(NodeClaimStatus {
        provider_id: Some(launch::provider_id(zone, id)),
        image_id: instance.image_id().map(str::to_owned),
        capacity: it.map(|t| list(&t.capacity)).unwrap_or_default(),
        allocatable: it.map(|t| list(&t.allocatable())).unwrap_or_default(),
        ..NodeClaimStatus::default()
    });
    view
}

/// The facts drift compares with the EC2NodeClass: image, subnet, security groups, capacity
/// reservation.
pub fn instance_facts(instance: &Instance) -> InstanceFacts {
    InstanceFacts {
        image_id: instance.image_id().map(str::to_owned),
        subnet_id: instance.subnet_id().map(str::to_owned),
        security_groups: instance
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_owned))
            .collect(),
        capacity_reservation_id: instance_reservation(instance).map(|r| r.id),
    }
}
