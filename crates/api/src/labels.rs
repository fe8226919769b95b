//! Well-known label, annotation, taint and finalizer names, and the label-restriction rules
//! shared by the CRD schema (CEL) and the in-code validation.

/// API group of NodePool and NodeClaim.
pub const GROUP: &str = "karpenter.sh";
/// Group for compatibility annotations written by conversions.
pub const COMPATIBILITY_GROUP: &str = "compatibility.karpenter.sh";

/// Label naming the NodePool that owns a node.
pub const NODE_POOL_LABEL: &str = "karpenter.sh/nodepool";
/// Label carrying the capacity type of a node (`on-demand`, `spot`, `reserved`).
pub const CAPACITY_TYPE_LABEL: &str = "karpenter.sh/capacity-type";
/// Label set to "true" once the node registered.
pub const REGISTERED_LABEL: &str = "karpenter.sh/registered";
/// Label set to "true" once the node is initialized.
pub const INITIALIZED_LABEL: &str = "karpenter.sh/initialized";
/// Label asking Karpenter not to sync NodeClaim taints onto the node.
pub const DO_NOT_SYNC_TAINTS_LABEL: &str = "karpenter.sh/do-not-sync-taints";
/// Legacy (v1alpha5) label naming the Provisioner that owns a node.
pub const PROVISIONER_NAME_LABEL: &str = "karpenter.sh/provisioner-name";

/// Kubernetes hostname label; restricted because the scheduler invents placeholder hostnames.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Zone label.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Region label.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Instance-type label.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
/// CPU architecture label.
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
/// Operating-system label.
pub const OS_LABEL: &str = "kubernetes.io/os";
/// Windows build label.
pub const WINDOWS_BUILD_LABEL: &str = "node.kubernetes.io/windows-build";

/// Capacity type: on-demand.
pub const CAPACITY_TYPE_ON_DEMAND: &str = "on-demand";
/// Capacity type: spot.
pub const CAPACITY_TYPE_SPOT: &str = "spot";
/// Capacity type: reserved (capacity reservations).
pub const CAPACITY_TYPE_RESERVED: &str = "reserved";
/// Every valid value of [`CAPACITY_TYPE_LABEL`].
pub const CAPACITY_TYPES: [&str; 3] = [
    CAPACITY_TYPE_ON_DEMAND,
    CAPACITY_TYPE_SPOT,
    CAPACITY_TYPE_RESERVED,
];

/// Pod/node annotation that blocks voluntary disruption.
pub const DO_NOT_DISRUPT_ANNOTATION: &str = "karpenter.sh/do-not-disrupt";
/// NodePool/NodeClaim annotation holding the template hash (static drift).
pub const NODE_POOL_HASH_ANNOTATION: &str = "karpenter.sh/nodepool-hash";
/// Version of the hash algorithm behind [`NODE_POOL_HASH_ANNOTATION`].
pub const NODE_POOL_HASH_VERSION_ANNOTATION: &str = "karpenter.sh/nodepool-hash-version";
/// NodeClaim annotation: RFC 3339 time at which termination is forced.
pub const TERMINATION_TIMESTAMP_ANNOTATION: &str = "karpenter.sh/nodeclaim-termination-timestamp";
/// NodeClaim annotation: whether minValues were relaxed.
pub const MIN_VALUES_RELAXED_ANNOTATION: &str = "karpenter.sh/nodeclaim-min-values-relaxed";
/// NodePool annotation holding a legacy Provisioner's raw inline `provider` blob (JSON).
pub const PROVIDER_COMPATIBILITY_ANNOTATION: &str = "compatibility.karpenter.sh/provider";
/// NodePool annotation holding a legacy Provisioner's `kubeletConfiguration` (JSON) when there
/// was no inline provider to carry it onto a generated EC2NodeClass.
pub const KUBELET_COMPATIBILITY_ANNOTATION: &str =
    "compatibility.karpenter.sh/v1alpha5-kubelet-conversion";

/// Taint put on nodes being disrupted.
pub const DISRUPTED_TAINT_KEY: &str = "karpenter.sh/disrupted";
/// Taint present on nodes until they register.
pub const UNREGISTERED_TAINT_KEY: &str = "karpenter.sh/unregistered";
/// Finalizer on NodeClaims and Nodes.
pub const TERMINATION_FINALIZER: &str = "karpenter.sh/termination";

/// Labels every provider understands; pods may constrain them even when a NodePool doesn't.
pub const WELL_KNOWN_LABELS: [&str; 8] = [
    NODE_POOL_LABEL,
    ZONE_LABEL,
    REGION_LABEL,
    INSTANCE_TYPE_LABEL,
    ARCH_LABEL,
    OS_LABEL,
    CAPACITY_TYPE_LABEL,
    WINDOWS_BUILD_LABEL,
];

/// Deprecated label keys and the well-known key they mean.
pub const NORMALIZED_LABELS: [(&str, &str); 5] = [
    ("failure-domain.beta.kubernetes.io/zone", ZONE_LABEL),
    ("failure-domain.beta.kubernetes.io/region", REGION_LABEL),
    ("beta.kubernetes.io/arch", ARCH_LABEL),
    ("beta.kubernetes.io/os", OS_LABEL),
    ("beta.kubernetes.io/instance-type", INSTANCE_TYPE_LABEL),
];

/// Kubernetes-owned label domains that a NodePool may not put on nodes, because the kubelet's
/// NodeRestriction admission refuses to self-set them and the node would never register.
pub const RESTRICTED_KUBERNETES_DOMAINS: [&str; 2] = ["kubernetes.io", "k8s.io"];
/// Sub-domains of [`RESTRICTED_KUBERNETES_DOMAINS`] that kubelets may set.
pub const ALLOWED_KUBERNETES_DOMAINS: [&str; 3] = [
    "node.kubernetes.io",
    "node-restriction.kubernetes.io",
    "kops.k8s.io",
];
/// Individual Kubernetes-domain labels a NodePool may still use (well-known and their
/// deprecated spellings).
pub const ALLOWED_KUBERNETES_LABELS: [&str; 9] = [
    ZONE_LABEL,
    REGION_LABEL,
    ARCH_LABEL,
    OS_LABEL,
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
];

/// Why a label key may not be used in a NodePool's labels or requirements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restriction {
    /// `karpenter.sh/nodepool` is set by Karpenter itself.
    NodePoolLabel,
    /// `kubernetes.io/hostname` collides with the scheduler's placeholder hostnames.
    Hostname,
    /// The `karpenter.sh` domain holds Karpenter's internal state.
    KarpenterDomain,
    /// A `kubernetes.io` / `k8s.io` domain the kubelet may not self-set.
    KubernetesDomain,
}

impl Restriction {
    /// Human-readable reason, shared with the CEL messages.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NodePoolLabel => "label \"karpenter.sh/nodepool\" is restricted",
            Self::Hostname => "label \"kubernetes.io/hostname\" is restricted",
            Self::KarpenterDomain => {
                "label domain \"karpenter.sh\" is restricted (only \"karpenter.sh/capacity-type\" is allowed)"
            }
            Self::KubernetesDomain => {
                "label domains \"kubernetes.io\" and \"k8s.io\" are restricted (except well-known labels, \"node.kubernetes.io\" and \"node-restriction.kubernetes.io\")"
            }
        }
    }
}

/// The domain (prefix before `/`) of a label key, if it has one.
pub fn domain(key: &str) -> Option<&str> {
    key.split_once('/').map(|(d, _)| d)
}

fn in_domain(domain: &str, parent: &str) -> bool {
    domain == parent
        || domain
            .strip_suffix(parent)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Whether a NodePool may use `key` as a template label or requirement key.
///
/// Besides upstream's current rules (`karpenter.sh` domain, `karpenter.sh/nodepool`,
/// `kubernetes.io/hostname`) this also restricts the `kubernetes.io` / `k8s.io` domains as
/// upstream did until v1.9: such labels make node registration fail under NodeRestriction.
pub fn node_pool_restriction(key: &str) -> Option<Restriction> {
    if key == NODE_POOL_LABEL {
        return Some(Restriction::NodePoolLabel);
    }
    if key == HOSTNAME_LABEL {
        return Some(Restriction::Hostname);
    }
    let d = domain(key).unwrap_or(key);
    if key != CAPACITY_TYPE_LABEL && d.ends_with("karpenter.sh") {
        return Some(Restriction::KarpenterDomain);
    }
    if let Some(d) = domain(key) {
        let restricted = RESTRICTED_KUBERNETES_DOMAINS
            .iter()
            .any(|r| in_domain(d, r));
        let allowed = ALLOWED_KUBERNETES_DOMAINS.iter().any(|a| in_domain(d, a))
            || ALLOWED_KUBERNETES_LABELS.contains(&key);
        if restricted && !allowed {
            return Some(Restriction::KubernetesDomain);
        }
    }
    None
}

/// Whether a NodeClaim may carry `key` as a requirement key (looser than NodePools: Karpenter
/// itself writes `karpenter.sh/nodepool` there).
pub fn node_claim_restriction(key: &str) -> Option<Restriction> {
    if key == HOSTNAME_LABEL {
        return Some(Restriction::Hostname);
    }
    let d = domain(key).unwrap_or(key);
    if key != CAPACITY_TYPE_LABEL && key != NODE_POOL_LABEL && d.ends_with("karpenter.sh") {
        return Some(Restriction::KarpenterDomain);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrictions() {
        assert_eq!(node_pool_restriction("team"), None);
        assert_eq!(node_pool_restriction("example.com/team"), None);
        assert_eq!(node_pool_restriction(CAPACITY_TYPE_LABEL), None);
        assert_eq!(node_pool_restriction(ZONE_LABEL), None);
        assert_eq!(node_pool_restriction(INSTANCE_TYPE_LABEL), None);
        assert_eq!(node_pool_restriction("node.kubernetes.io/role"), None);
        assert_eq!(node_pool_restriction("kops.k8s.io/instancegroup"), None);
        assert_eq!(
            node_pool_restriction(NODE_POOL_LABEL),
            Some(Restriction::NodePoolLabel)
        );
        assert_eq!(
            node_pool_restriction(HOSTNAME_LABEL),
            Some(Restriction::Hostname)
        );
        assert_eq!(
            node_pool_restriction("karpenter.sh/foo"),
            Some(Restriction::KarpenterDomain)
        );
        assert_eq!(
            node_pool_restriction("sub.karpenter.sh/foo"),
            Some(Restriction::KarpenterDomain)
        );
        assert_eq!(
            node_pool_restriction("kubernetes.io/foo"),
            Some(Restriction::KubernetesDomain)
        );
        assert_eq!(
            node_pool_restriction("foo.k8s.io/bar"),
            Some(Restriction::KubernetesDomain)
        );
        assert_eq!(node_pool_restriction("notk8s.io/bar"), None);
        assert_eq!(node_claim_restriction(NODE_POOL_LABEL), None);
        assert_eq!(
            node_claim_restriction("karpenter.sh/foo"),
            Some(Restriction::KarpenterDomain)
        );
    }
}
