//! The AWS provider's node repair policies, as upstream's (karpenter-provider-aws): the
//! kubelet's `Ready` condition, and the conditions the EKS Node Monitoring Agent reports.

use std::time::Duration;

const MINUTE: u64 = 60;

/// `(condition type, unhealthy status, toleration)`: a Node holding the condition at that
/// status for longer than the toleration is replaced when node repair is on.
pub const REPAIR_POLICIES: [(&str, &str, Duration); 7] = [
    ("Ready", "False", Duration::from_secs(30 * MINUTE)),
    ("Ready", "Unknown", Duration::from_secs(30 * MINUTE)),
    // An accelerator fault idles expensive capacity: upstream tolerates it the least.
    (
        "AcceleratedHardwareReady",
        "False",
        Duration::from_secs(10 * MINUTE),
    ),
    ("StorageReady", "False", Duration::from_secs(30 * MINUTE)),
    ("NetworkingReady", "False", Duration::from_secs(30 * MINUTE)),
    ("KernelReady", "False", Duration::from_secs(30 * MINUTE)),
    (
        "ContainerRuntimeReady",
        "False",
        Duration::from_secs(30 * MINUTE),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_policy_per_condition_and_status() {
        let mut keys: Vec<(&str, &str)> =
            REPAIR_POLICIES.iter().map(|(t, s, _)| (*t, *s)).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), REPAIR_POLICIES.len());
        let accel = REPAIR_POLICIES
            .iter()
            .find(|(t, _, _)| *t == "AcceleratedHardwareReady")
            .map(|(_, _, d)| d.as_secs());
        assert_eq!(accel, Some(600));
    }
}
