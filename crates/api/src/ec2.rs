//! `karpenter.k8s.aws/v1` EC2NodeClass: the NodeClass of the AWS provider.

// kube-derive takes one `printcolumn(...)` per column, each repeating `type_ = ...`;
// clippy reads those as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules::{self, AddRules, rule};
use crate::v1::{Condition, NodeSelectorRequirementWithMinValues};

/// API group of the AWS provider.
pub const AWS_GROUP: &str = "karpenter.k8s.aws";
/// Most selector terms of one kind.
pub const MAX_SELECTOR_TERMS: u32 = 30;

/// Message tails of EC2NodeClass rules, shared with [`crate::validation`].
pub mod msg {
    /// role XOR instanceProfile.
    pub const ROLE_XOR_PROFILE: &str = "exactly one of 'role' and 'instanceProfile' must be set";
    /// Empty selector term.
    pub const TERM_EMPTY: &str = "each term must set at least one of its fields";
    /// `id` combined with other fields.
    pub const ID_EXCLUSIVE: &str = "'id' cannot be combined with other fields";
    /// `alias` combined with other fields.
    pub const ALIAS_EXCLUSIVE: &str = "'alias' cannot be combined with other fields";
    /// Selector terms list empty.
    pub const TERMS_REQUIRED: &str = "at least one term is required";
}

/// Desired state of an EC2NodeClass.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "karpenter.k8s.aws",
    version = "v1",
    kind = "EC2NodeClass",
    plural = "ec2nodeclasses",
    singular = "ec2nodeclass",
    shortname = "ec2nc",
    shortname = "ec2ncs",
    category = "karpenter",
    status = "EC2NodeClassStatus",
    derive = "PartialEq",
    derive = "Default",
    cel,
    doc = "EC2NodeClass is the Schema for the EC2NodeClass API: how the AWS provider launches instances.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".spec.role",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = AddRules(vec![rule(
    "has(self.role) != has(self.instanceProfile)",
    "spec.role, spec.instanceProfile",
    msg::ROLE_XOR_PROFILE,
)]))]
pub struct EC2NodeClassSpec {
    /// Subnets to launch into; terms are ORed, fields within a term ANDed.
    #[schemars(length(min = 1, max = MAX_SELECTOR_TERMS))]
    #[schemars(transform = AddRules(vec![
        rule("size(self) > 0", "spec.subnetSelectorTerms", msg::TERMS_REQUIRED),
        rule("self.all(x, has(x.tags) || has(x.id))", "spec.subnetSelectorTerms[]", msg::TERM_EMPTY),
        rule("self.all(x, !has(x.id) || !has(x.tags))", "spec.subnetSelectorTerms[].id", msg::ID_EXCLUSIVE),
    ]))]
    pub subnet_selector_terms: Vec<SelectorTerm>,
    /// Security groups to attach.
    #[schemars(length(min = 1, max = MAX_SELECTOR_TERMS))]
    #[schemars(transform = AddRules(vec![
        rule("size(self) > 0", "spec.securityGroupSelectorTerms", msg::TERMS_REQUIRED),
        rule("self.all(x, has(x.tags) || has(x.id) || has(x.name))", "spec.securityGroupSelectorTerms[]", msg::TERM_EMPTY),
        rule("self.all(x, !has(x.id) || !(has(x.tags) || has(x.name)))", "spec.securityGroupSelectorTerms[].id", msg::ID_EXCLUSIVE),
    ]))]
    pub security_group_selector_terms: Vec<SelectorTerm>,
    /// Images to launch; `alias` (e.g. `al2023@latest`) selects a family's published images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SELECTOR_TERMS))]
    #[schemars(transform = AddRules(vec![
        rule("self.all(x, has(x.alias) || has(x.tags) || has(x.id) || has(x.name))", "spec.amiSelectorTerms[]", msg::TERM_EMPTY),
        rule("self.all(x, !has(x.alias) || !(has(x.tags) || has(x.id) || has(x.name) || has(x.owner)))", "spec.amiSelectorTerms[].alias", msg::ALIAS_EXCLUSIVE),
    ]))]
    pub ami_selector_terms: Vec<AmiSelectorTerm>,
    /// Capacity reservations (on-demand capacity reservations, capacity blocks) nodes may
    /// launch into, as capacity type `reserved`; terms are ORed, fields within a term ANDed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SELECTOR_TERMS))]
    #[schemars(transform = AddRules(vec![
        rule("self.all(x, has(x.tags) || has(x.id))", "spec.capacityReservationSelectorTerms[]", msg::TERM_EMPTY),
        rule("self.all(x, !has(x.id) || !(has(x.tags) || has(x.ownerID)))", "spec.capacityReservationSelectorTerms[].id", msg::ID_EXCLUSIVE),
    ]))]
    pub capacity_reservation_selector_terms: Vec<CapacityReservationSelectorTerm>,
    /// Image family (`AL2`, `AL2023`, `Bottlerocket`, `Windows2019`, `Windows2022`, `Custom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub ami_family: Option<String>,
    /// IAM role for the generated instance profile; exclusive with `instanceProfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub role: Option<String>,
    /// Existing instance profile; exclusive with `role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub instance_profile: Option<String>,
    /// User data merged with the family's bootstrap script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Tags applied to instances, volumes and launch templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub tags: BTreeMap<String, String>,
    /// Block devices of the instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// Instance metadata service settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<MetadataOptions>,
    /// Kubelet settings of the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletConfiguration>,
}

/// Selects subnets or security groups by tags, id or (security groups only) name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SelectorTerm {
    /// Tags that must all match; `*` matches any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub id: Option<String>,
    /// Resource name (security groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub name: Option<String>,
}

/// Selects capacity reservations by id, or by tags (optionally of one owner account).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CapacityReservationSelectorTerm {
    /// Tags that must all match; `*` matches any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Capacity reservation id, e.g. `cr-0123456789abcdef0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.capacityReservationSelectorTerms[].id",
        "^cr-[0-9a-z]+$",
        "must look like 'cr-0123456789abcdef0'",
    )]))]
    pub id: Option<String>,
    /// Account that owns the reservation (with `tags`; e.g. a reservation shared with this
    /// account).
    #[serde(default, rename = "ownerID", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 12))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.capacityReservationSelectorTerms[].ownerID",
        "^[0-9]{12}$",
        "must be a 12-digit AWS account id",
    )]))]
    pub owner_id: Option<String>,
}

/// Selects AMIs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AmiSelectorTerm {
    /// `family@version`, e.g. `al2023@latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 30))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.amiSelectorTerms[].alias",
        "^[a-zA-Z0-9]+@.+$",
        "must look like 'family@version', e.g. 'al2023@latest'",
    )]))]
    pub alias: Option<String>,
    /// Tags that must all match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub tags: Option<BTreeMap<String, String>>,
    /// AMI id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub id: Option<String>,
    /// AMI name (wildcards allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub name: Option<String>,
    /// AMI owner (account id or alias).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub owner: Option<String>,
}

/// A block device of the instance.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BlockDeviceMapping {
    /// Device name, e.g. `/dev/xvda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// EBS volume settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebs: Option<BlockDevice>,
    /// Whether this is the root volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume: Option<bool>,
}

/// EBS volume settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BlockDevice {
    /// Delete the volume with the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    /// Encrypt the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// Provisioned IOPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<i64>,
    /// KMS key for encryption.
    #[serde(default, rename = "kmsKeyID", skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Snapshot to restore.
    #[serde(
        default,
        rename = "snapshotID",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<String>,
    /// Throughput in MiB/s (gp3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<i64>,
    /// Volume size, e.g. `100Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_quantity")]
    pub volume_size: Option<Quantity>,
    /// Volume type (`gp3`, `io2`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
}

/// Instance metadata service (IMDS) settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOptions {
    /// `enabled` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_endpoint: Option<String>,
    /// `enabled` or `disabled`.
    #[serde(
        default,
        rename = "httpProtocolIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub http_protocol_ipv6: Option<String>,
    /// Hop limit of PUT responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_put_response_hop_limit: Option<i64>,
    /// `required` or `optional`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_tokens: Option<String>,
}

/// Kubelet settings (the subset Karpenter models; it affects allocatable and pod density).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfiguration {
    /// Cluster DNS server IPs.
    #[serde(
        default,
        rename = "clusterDNS",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 10))]
    pub cluster_dns: Option<Vec<String>>,
    /// Maximum pods per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<i32>,
    /// Maximum pods per core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_per_core: Option<i32>,
    /// Resources reserved for the OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub system_reserved: Option<BTreeMap<String, String>>,
    /// Resources reserved for Kubernetes daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub kube_reserved: Option<BTreeMap<String, String>>,
    /// Hard eviction thresholds, e.g. `memory.available: 100Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// Soft eviction thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub eviction_soft: Option<BTreeMap<String, String>>,
    /// Grace periods of the soft thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub eviction_soft_grace_period: Option<BTreeMap<String, String>>,
    /// Maximum pod grace period during soft eviction, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_max_pod_grace_period: Option<i32>,
    /// Disk usage that triggers image garbage collection.
    #[serde(
        default,
        rename = "imageGCHighThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_high_threshold_percent: Option<i32>,
    /// Disk usage image garbage collection frees down to.
    #[serde(
        default,
        rename = "imageGCLowThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_low_threshold_percent: Option<i32>,
    /// Enforce CPU CFS quota for containers with limits.
    #[serde(
        default,
        rename = "cpuCFSQuota",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_cfs_quota: Option<bool>,
}

/// Observed state of an EC2NodeClass.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClassStatus {
    /// Resolved subnets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<ResolvedSubnet>,
    /// Resolved security groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<ResolvedSecurityGroup>,
    /// Resolved images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amis: Vec<ResolvedAmi>,
    /// Resolved capacity reservations (active ones matching the selector terms).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_reservations: Vec<ResolvedCapacityReservation>,
    /// Instance profile in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// `Ready`, `SubnetsReady`, `SecurityGroupsReady`, `AMIsReady`, `InstanceProfileReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A subnet the selector resolved to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSubnet {
    /// Subnet id.
    pub id: String,
    /// Availability zone.
    pub zone: String,
    /// Availability zone id.
    #[serde(default, rename = "zoneID", skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
}

/// A capacity reservation the selector resolved to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedCapacityReservation {
    /// Capacity reservation id.
    pub id: String,
    /// Availability zone the reservation is in.
    pub availability_zone: String,
    /// Instance type it reserves.
    pub instance_type: String,
    /// Account that owns it.
    #[serde(rename = "ownerID")]
    pub owner_id: String,
    /// `open` (matching instances use it unasked) or `targeted` (only launches naming it).
    pub instance_match_criteria: String,
    /// `default` (an on-demand capacity reservation) or `capacity-block`.
    pub reservation_type: String,
    /// `active` or `expiring`.
    pub state: String,
    /// When it ends (RFC 3339), if it has an end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Instances it can still launch when it was resolved (not part of the API: the
    /// provider's own count, kept beside the status it resolved).
    #[serde(skip)]
    #[schemars(skip)]
    pub available_instance_count: i64,
}

/// A security group the selector resolved to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSecurityGroup {
    /// Security group id.
    pub id: String,
    /// Security group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An image the selector resolved to, with the instance requirements it fits.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedAmi {
    /// AMI id.
    pub id: String,
    /// AMI name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Requirements (architecture, GPU, ...) of instances that can use the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
}
