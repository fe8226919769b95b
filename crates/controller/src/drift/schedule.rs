//! When each NodeClaim's drift is asked of the cloud provider (pure, clock passed in).
//!
//! The provider's check costs cloud calls (AWS: the NodeClass and DescribeInstances), so it
//! runs per NodeClaim on its own schedule (upstream requeues drift every 5 minutes) and again
//! at once when what it depends on changed (the NodePool's generation, the NodeClass
//! reference), never on every round. Claims that fall due together are asked in one batch.

use std::collections::HashMap;

/// How often a NodeClaim's drift is asked of the provider (upstream: 5 minutes).
pub const PROVIDER_PERIOD_SECS: i64 = 300;

#[derive(Debug, Clone)]
struct Entry {
    checked_at: i64,
    depends_on: String,
    drift: Option<String>,
}

/// Per-NodeClaim provider drift checks: when each was last asked, and the answer.
#[derive(Debug, Clone)]
pub struct Schedule {
    period: i64,
    entries: HashMap<String, Entry>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self::new(PROVIDER_PERIOD_SECS)
    }
}

impl Schedule {
    /// A schedule asking each claim every `period` seconds.
    pub fn new(period: i64) -> Self {
        Self {
            period,
            entries: HashMap::new(),
        }
    }

    /// Whether `claim` must be asked at `now`: never asked, its period elapsed, or
    /// `depends_on` (what its answer depends on) changed since.
    pub fn due(&self, claim: &str, depends_on: &str, now: i64) -> bool {
        match self.entries.get(claim) {
            None => true,
            Some(e) => {
                e.depends_on != depends_on || now.saturating_sub(e.checked_at) >= self.period
            }
        }
    }

    /// Records the provider's answer for `claim` at `now`.
    pub fn record(&mut self, claim: &str, depends_on: &str, now: i64, drift: Option<String>) {
        self.entries.insert(
            claim.to_string(),
            Entry {
                checked_at: now,
                depends_on: depends_on.to_string(),
                drift,
            },
        );
    }

    /// The last answer for `claim` (`None` when never asked or not drifted).
    pub fn last(&self, claim: &str) -> Option<&str> {
        self.entries.get(claim)?.drift.as_deref()
    }

    /// Forgets claims that are gone.
    pub fn retain(&mut self, mut live: impl FnMut(&str) -> bool) {
        self.entries.retain(|k, _| live(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the schedule like the drift loop does, every `tick` seconds from 0 to `until`,
    /// and returns the batches asked (time, claims) for claims `names`; `depends_on(t, claim)`
    /// says what each claim's answer depends on at time t.
    fn drive(
        names: &[&str],
        tick: i64,
        until: i64,
        depends_on: impl Fn(i64, &str) -> String,
    ) -> Vec<(i64, Vec<String>)> {
        let mut s = Schedule::default();
        let mut batches = Vec::new();
        let mut t = 0;
        while t <= until {
            let due: Vec<String> = names
                .iter()
                .filter(|c| s.due(c, &depends_on(t, c), t))
                .map(|c| c.to_string())
                .collect();
            for c in &due {
                s.record(c, &depends_on(t, c), t, None);
            }
            if !due.is_empty() {
                batches.push((t, due));
            }
            t += tick;
        }
        batches
    }

    #[test]
    fn each_claim_is_asked_once_per_period_in_one_batch() {
        // Ten-second rounds for ten minutes: asked at 0, 300 and 600, all claims together.
        let batches = drive(&["a", "b", "c"], 10, 600, |_, _| "pool@1".into());
        let all = vec!["a".to_string(), "b".into(), "c".into()];
        assert_eq!(
            batches,
            vec![(0, all.clone()), (300, all.clone()), (600, all)]
        );
    }

    #[test]
    fn a_changed_node_pool_asks_its_claims_again_at_once() {
        // Claim b's NodePool changes generation at t=100: only b is asked then.
        let batches = drive(&["a", "b"], 10, 310, |t, c| {
            if c == "b" && t >= 100 {
                "pool-b@2".into()
            } else {
                format!("pool-{c}@1")
            }
        });
        assert_eq!(
            batches,
            vec![
                (0, vec!["a".to_string(), "b".into()]),
                (100, vec!["b".to_string()]),
                (300, vec!["a".to_string()]),
            ]
        );
    }

    #[test]
    fn answers_are_kept_until_asked_again_and_forgotten_with_the_claim() {
        let mut s = Schedule::new(60);
        s.record("a", "x", 0, Some("AMIDrift".into()));
        assert_eq!(s.last("a"), Some("AMIDrift"));
        assert!(!s.due("a", "x", 59));
        assert!(s.due("a", "x", 60));
        s.retain(|c| c != "a");
        assert_eq!(s.last("a"), None);
        assert!(s.due("a", "x", 61));
    }
}
