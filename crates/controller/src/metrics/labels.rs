//! Label sets of the metrics issue 14 added, with upstream's label names.

use prometheus_client::encoding::EncodeLabelSet;

/// The labels of upstream's per-node gauges (`karpenter_nodes_allocatable` and siblings): the
/// node's name, phase and whether Karpenter manages it, one label per well-known node label
/// (its key's last segment, lower case, `-` as `_`), and the resource.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct NodeLabels {
    /// `metadata.name`.
    pub node_name: String,
    /// `status.phase` (deprecated by Kubernetes and usually empty, as upstream reports it).
    pub phase: String,
    /// `true` when a NodeClaim owns the node.
    pub managed: String,
    /// `karpenter.sh/nodepool`.
    pub nodepool: String,
    /// `topology.kubernetes.io/zone`.
    pub zone: String,
    /// `topology.kubernetes.io/region`.
    pub region: String,
    /// `node.kubernetes.io/instance-type`.
    pub instance_type: String,
    /// `kubernetes.io/arch`.
    pub arch: String,
    /// `kubernetes.io/os`.
    pub os: String,
    /// `karpenter.sh/capacity-type`.
    pub capacity_type: String,
    /// `node.kubernetes.io/windows-build`.
    pub windows_build: String,
    /// Resource name, lower case, `-` as `_`.
    pub resource_type: String,
}

/// `{resource_type, nodepool}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ResourcePool {
    /// Resource name, lower case, `-` as `_`.
    pub resource_type: String,
    /// NodePool.
    pub nodepool: String,
}

/// `{controller, method, provider}` of a cloud provider call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The loop that called (`provisioner`, `nodeclaim.lifecycle`…).
    pub controller: String,
    /// Upstream's method name: `Create`, `Delete`, `Get`, `List`, `GetInstanceTypes`,
    /// `IsDrifted`.
    pub method: String,
    /// The provider's name (`kwok`, `aws`).
    pub provider: String,
}

/// `{controller, method, provider, error}` of a failed cloud provider call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderError {
    /// See [`MethodLabels::controller`].
    pub controller: String,
    /// See [`MethodLabels::method`].
    pub method: String,
    /// See [`MethodLabels::provider`].
    pub provider: String,
    /// The error's kind (`insufficient_capacity`, `not_found`, `transient`…).
    pub error: String,
}

/// A resource name as upstream labels it: lower case, `-` as `_`.
pub fn resource_type(name: &str) -> String {
    name.to_lowercase().replace('-', "_")
}
