//! Well-known label keys the solver interprets.

/// Zone of a node (offering label).
pub const ZONE: &str = "topology.kubernetes.io/zone";
/// Region of a node.
pub const REGION: &str = "topology.kubernetes.io/region";
/// Hostname; each new NodeClaim is its own domain.
pub const HOSTNAME: &str = "kubernetes.io/hostname";
/// Instance type name.
pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
/// CPU architecture.
pub const ARCH: &str = "kubernetes.io/arch";
/// Operating system.
pub const OS: &str = "kubernetes.io/os";
/// `spot`, `on-demand` or `reserved` (offering label).
pub const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";
/// The capacity type of offerings backed by a capacity reservation.
pub const CAPACITY_TYPE_RESERVED: &str = "reserved";
/// Owning NodePool.
pub const NODEPOOL: &str = "karpenter.sh/nodepool";
/// Windows build.
pub const WINDOWS_BUILD: &str = "node.kubernetes.io/windows-build";

/// Keys a pod may constrain even when a NodePool does not mention them (upstream
/// `WellKnownLabels`); instance types and offerings decide them.
pub const WELL_KNOWN: &[&str] = &[
    NODEPOOL,
    ZONE,
    REGION,
    INSTANCE_TYPE,
    ARCH,
    OS,
    CAPACITY_TYPE,
    WINDOWS_BUILD,
];

/// Whether `key` is well known (pods may require it even if the NodePool leaves it undefined).
pub fn is_well_known(key: &str) -> bool {
    WELL_KNOWN.contains(&key)
}
