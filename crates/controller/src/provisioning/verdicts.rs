//! What the provisioner's last round found it cannot place, shared with disruption.
//!
//! Disruption holds back while the provisioner may still place pending pods (its evictions
//! and replacements would race the launches), but not for pods no NodePool can serve: those
//! would stop it for as long as they exist. Telling the two apart used to mean solving the
//! whole pending set again in every disruption round; at 10 000 pending pods that was a second
//! copy of the provisioner's solver input and work every 10 s, for an answer the provisioner
//! already had.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// `namespace/name` of the pending pods the provisioner's last round could not place (the
/// solver found no room on any NodePool) or could not convert (invalid for the solver).
#[derive(Debug, Clone, Default)]
pub struct Unplaceable(Arc<Mutex<HashSet<String>>>);

impl Unplaceable {
    /// Replaces the record with a round's findings.
    pub fn record(&self, pods: HashSet<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = pods;
    }

    /// Whether the last round found `pod` (`namespace/name`) unplaceable.
    pub fn contains(&self, pod: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_replaces_the_previous_record() {
        let u = Unplaceable::default();
        assert!(!u.contains("ns/a"), "nothing judged yet");
        u.record(HashSet::from(["ns/a".to_string(), "ns/b".to_string()]));
        assert!(u.contains("ns/a") && u.contains("ns/b"));
        // A later round placed `a` (capacity freed up): it is no longer unplaceable.
        u.record(HashSet::from(["ns/b".to_string()]));
        assert!(!u.contains("ns/a"));
        assert!(u.contains("ns/b"));
        let shared = u.clone();
        shared.record(HashSet::new());
        assert!(!u.contains("ns/b"), "clones share one record");
    }
}
