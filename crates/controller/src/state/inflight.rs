//! NodeClaims this controller created that the watch has not delivered yet (write-through).
//!
//! Between a successful create and the watch event for it, the NodeClaim store does not have
//! the claim; a provisioning round in that gap would see its pods' nominated capacity as gone
//! and launch for them again. So the created object (as the API returned it) is kept here and
//! counts as in flight until the watch delivers that claim (any version: the watch never
//! delivers one older than the create) or its deletion. A claim the watch never shows (created
//! and deleted while the watch was re-listing) is dropped after [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use karpenter_api::v1::NodeClaim;

/// How long a created NodeClaim the watch has not delivered still counts.
pub const TTL: Duration = Duration::from_secs(120);

/// Created NodeClaims by name, with when they were created.
#[derive(Debug, Default)]
pub struct Created {
    claims: Mutex<HashMap<String, (Arc<NodeClaim>, Instant)>>,
}

impl Created {
    /// Records a NodeClaim the API just created.
    pub fn insert(&self, claim: NodeClaim, now: Instant) {
        let Some(name) = claim.metadata.name.clone() else {
            return;
        };
        self.lock().insert(name, (Arc::new(claim), now));
    }

    /// The watch delivered this NodeClaim (or its deletion): the store speaks for it now.
    pub fn delivered(&self, name: &str) {
        let mut claims = self.lock();
        if !claims.is_empty() {
            claims.remove(name);
        }
    }

    /// The created NodeClaims the store does not have, younger than [`TTL`]; older ones are
    /// forgotten.
    pub fn missing_from(
        &self,
        in_store: impl Fn(&str) -> bool,
        now: Instant,
    ) -> Vec<Arc<NodeClaim>> {
        let mut claims = self.lock();
        claims.retain(|name, (_, at)| now.saturating_duration_since(*at) < TTL && !in_store(name));
        claims.values().map(|(c, _)| c.clone()).collect()
    }

    /// A created NodeClaim by name, if the watch has not delivered it yet.
    pub fn get(&self, name: &str, now: Instant) -> Option<Arc<NodeClaim>> {
        self.lock()
            .get(name)
            .filter(|(_, at)| now.saturating_duration_since(*at) < TTL)
            .map(|(c, _)| c.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<NodeClaim>, Instant)>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpenter_api::v1::NodeClaimSpec;

    fn claim(name: &str) -> NodeClaim {
        NodeClaim::new(
            name,
            NodeClaimSpec {
                taints: vec![],
                startup_taints: vec![],
                requirements: vec![],
                resources: Default::default(),
                node_class_ref: Default::default(),
                termination_grace_period: None,
                expire_after: "Never".into(),
            },
        )
    }

    fn names(v: &[Arc<NodeClaim>]) -> Vec<String> {
        let mut n: Vec<String> = v.iter().filter_map(|c| c.metadata.name.clone()).collect();
        n.sort();
        n
    }

    #[test]
    fn created_claims_count_until_the_watch_delivers_them() {
        let t0 = Instant::now();
        let created = Created::default();
        created.insert(claim("a"), t0);
        created.insert(claim("b"), t0);
        assert_eq!(names(&created.missing_from(|_| false, t0)), vec!["a", "b"]);
        assert!(created.get("a", t0).is_some());
        // The store has "a" now: it is no longer an addition.
        assert_eq!(names(&created.missing_from(|n| n == "a", t0)), vec!["b"]);
        assert!(created.get("a", t0).is_none());
        created.delivered("b");
        assert!(created.missing_from(|_| false, t0).is_empty());
    }

    #[test]
    fn undelivered_claims_expire() {
        let t0 = Instant::now();
        let created = Created::default();
        created.insert(claim("a"), t0);
        let later = t0 + TTL;
        assert!(created.get("a", later).is_none());
        assert!(created.missing_from(|_| false, later).is_empty());
        assert!(created.get("a", t0).is_none(), "forgotten, not only hidden");
    }
}
