//! `terminationGracePeriod`: how long a deleted NodeClaim's drain may take. When the NodeClaim
//! is deleted its finalizer stamps the deadline (deletion time + grace period) into the
//! annotation `karpenter.sh/nodeclaim-termination-timestamp`, once, so a restart keeps the same
//! deadline; the node's drain reads it and deletes pods that would otherwise outlive it,
//! PodDisruptionBudgets notwithstanding. Pure.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use karpenter_api::labels::TERMINATION_TIMESTAMP_ANNOTATION;
use karpenter_api::v1::{NodeClaim, parse_duration};

/// The deadline to stamp on a deleted NodeClaim, when it has a grace period and carries no
/// deadline yet. An unparsable grace period (the CRD validates its format) stamps nothing.
pub fn deadline_to_stamp(claim: &NodeClaim) -> Option<Timestamp> {
    if deadline(claim).is_some() {
        return None;
    }
    let deleted = claim.metadata.deletion_timestamp.as_ref()?.0;
    let grace = parse_duration(claim.spec.termination_grace_period.as_deref()?)?;
    let grace = SignedDuration::try_from(grace).ok()?;
    deleted.checked_add(grace).ok()
}

/// The deadline stamped on the NodeClaim, if any.
pub fn deadline(claim: &NodeClaim) -> Option<Timestamp> {
    claim
        .metadata
        .annotations
        .as_ref()?
        .get(TERMINATION_TIMESTAMP_ANNOTATION)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use karpenter_api::v1::NodeClaimSpec;

    fn claim(grace: Option<&str>, deleted: Option<Timestamp>) -> NodeClaim {
        let mut c = NodeClaim::new(
            "c",
            NodeClaimSpec {
                taints: Vec::new(),
                startup_taints: Vec::new(),
                requirements: Vec::new(),
                resources: Default::default(),
                node_class_ref: Default::default(),
                termination_grace_period: grace.map(str::to_string),
                expire_after: "Never".into(),
            },
        );
        c.metadata.deletion_timestamp = deleted.map(Time);
        c
    }

    #[test]
    fn stamped_once_from_deletion_plus_grace() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap_or_default();
        let mut c = claim(Some("1m30s"), Some(t0));
        let at = deadline_to_stamp(&c);
        assert_eq!(
            at.map(|t| t.to_string()).as_deref(),
            Some("2026-01-01T00:01:30Z")
        );
        c.metadata.annotations = Some(
            [(
                TERMINATION_TIMESTAMP_ANNOTATION.to_string(),
                "2026-01-01T00:01:30Z".to_string(),
            )]
            .into(),
        );
        assert_eq!(deadline(&c), at);
        assert_eq!(deadline_to_stamp(&c), None, "already stamped");
    }

    #[test]
    fn nothing_without_grace_or_deletion() {
        let t0 = Timestamp::UNIX_EPOCH;
        assert_eq!(deadline_to_stamp(&claim(None, Some(t0))), None);
        assert_eq!(deadline_to_stamp(&claim(Some("1m"), None)), None);
        assert_eq!(deadline_to_stamp(&claim(Some("soon"), Some(t0))), None);
        assert_eq!(deadline(&claim(Some("1m"), Some(t0))), None);
    }
}
