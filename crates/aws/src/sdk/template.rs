//! Launch templates: one per (cluster, NodeClass, image, instance profile, security groups,
//! user data), named by a stable hash of those so a change makes a new template instead of
//! mutating one in use, and identical launches reuse it.

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    LaunchTemplateIamInstanceProfileSpecificationRequest, RequestLaunchTemplateData, ResourceType,
    Tag, TagSpecification,
};
use karpenter_api::ec2::{EC2NodeClass, EC2NodeClassStatus};
use karpenter_api::labels::CAPACITY_TYPE_LABEL;
use karpenter_api::v1::{NodeClaim, TaintEffect};

use super::error::{AwsError, from_sdk};
use super::launch;
use super::reserved::{self, LaunchMode, TemplateReservation};
use crate::userdata::{ClusterInfo, ImageFamily, KubeletConfig, NodeBootstrap, Taint};

/// The image family of a class: its alias's, else `spec.amiFamily`, else AL2023.
pub fn family(nc: &EC2NodeClass) -> Result<ImageFamily, AwsError> {
    let aliases = nc
        .spec
        .ami_selector_terms
        .iter()
        .filter_map(|t| t.alias.as_deref());
    ImageFamily::resolve(nc.spec.ami_family.as_deref(), aliases)
        .map_err(|e| AwsError::NodeClassNotReady(e.to_string()))
}

/// The bootstrap of a NodeClaim launched as `capacity_type` on types with `max_pods` pods: its
/// labels (plus the capacity type, which the launch decides), taints and startup taints, and
/// the class's kubelet settings and `spec.userData`.
pub fn bootstrap<'a>(
    cluster: &'a ClusterInfo,
    family: ImageFamily,
    claim: &NodeClaim,
    nc: &'a EC2NodeClass,
    capacity_type: &str,
    max_pods: Option<i64>,
) -> NodeBootstrap<'a> {
    let mut labels = claim.metadata.labels.clone().unwrap_or_default();
    labels.insert(CAPACITY_TYPE_LABEL.to_owned(), capacity_type.to_owned());
    let taints = claim
        .spec
        .taints
        .iter()
        .chain(&claim.spec.startup_taints)
        .map(|t| Taint {
            key: t.key.clone(),
            value: t.value.clone(),
            effect: match t.effect {
                TaintEffect::NoSchedule => "NoSchedule",
                TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                TaintEffect::NoExecute => "NoExecute",
            }
            .to_owned(),
        })
        .collect();
    let k = nc.spec.kubelet.clone().unwrap_or_default();
    NodeBootstrap {
        cluster,
        family,
        labels,
        taints,
        kubelet: KubeletConfig {
            max_pods,
            cluster_dns: k.cluster_dns.unwrap_or_default(),
            kube_reserved: k.kube_reserved.unwrap_or_default(),
            system_reserved: k.system_reserved.unwrap_or_default(),
            eviction_hard: k.eviction_hard.unwrap_or_default(),
            eviction_soft: k.eviction_soft.unwrap_or_default(),
        },
        user_data: nc.spec.user_data.as_deref(),
    }
}

/// Creates the launch template for these inputs unless it exists, and returns its name.
/// `user_data` is base64, as EC2 takes it. A launch into a capacity reservation gets its own
/// template naming the reservation; the mode says what the others say about reservations (see
/// [`reserved::template_reservation`]).
pub async fn ensure(
    client: &Client,
    cluster: &str,
    node_class: &EC2NodeClass,
    status: &EC2NodeClassStatus,
    image: &str,
    user_data: &str,
    reservation: TemplateReservation<'_>,
) -> Result<String, AwsError> {
    let sgs: Vec<String> = status
        .security_groups
        .iter()
        .map(|g| g.id.clone())
        .collect();
    let nc_name = node_class.metadata.name.clone().unwrap_or_default();
    // The resolved profile (for `spec.role`, the one Karpenter manages), else the spec's.
    let profile_name = status
        .instance_profile
        .clone()
        .or_else(|| node_class.spec.instance_profile.clone());
    let profile = profile_name.clone().unwrap_or_default();
    let mut parts = vec![
        cluster,
        nc_name.as_str(),
        image,
        profile.as_str(),
        user_data,
    ];
    parts.extend(sgs.iter().map(String::as_str));
    match (reservation.mode, reservation.target) {
        (_, Some(r)) => parts.extend([r.id.as_str(), r.reservation_type.as_str()]),
        // The open templates keep the names they had before launch modes existed.
        (LaunchMode::Targeted, None) => parts.push("capacity-reservation-preference=none"),
        (LaunchMode::Open, None) => {}
    }
    let name = format!("karpenter.k8s.aws/{:016x}", launch::stable_hash(&parts));
    let mut data = RequestLaunchTemplateData::builder()
        .image_id(image)
        .set_security_group_ids(Some(sgs))
        .user_data(user_data);
    let (capacity_reservation, market) =
        reserved::template_reservation(reservation.mode, reservation.target);
    data = data
        .set_capacity_reservation_specification(capacity_reservation)
        .set_instance_market_options(market);
    if let Some(p) = &profile_name {
        data = data.iam_instance_profile(
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(p)
                .build(),
        );
    }
    let result = client
        .create_launch_template()
        .launch_template_name(&name)
        .launch_template_data(data.build())
        .tag_specifications(tag_spec(
            ResourceType::LaunchTemplate,
            &BTreeMap::from([
                (launch::cluster_tag(cluster), "owned".to_owned()),
                (launch::NODECLASS_TAG.to_owned(), nc_name.clone()),
            ]),
        ))
        .send()
        .await;
    match result {
        Ok(_) => Ok(name),
        Err(e) => match from_sdk("CreateLaunchTemplate", e) {
            // Another launch (or an earlier run) created it: same inputs, same template.
            AwsError::Fatal(msg) if msg.contains("AlreadyExists") => Ok(name),
            other => Err(other),
        },
    }
}

/// A tag specification of `tags` for `resource`.
pub fn tag_spec(resource: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}
