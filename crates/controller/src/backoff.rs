//! Per-object exponential backoff for failed reconciles (upstream: controller-runtime's
//! per-item rate limiter; launch errors retry 1 s … 1 min). A failure doubles the object's
//! next delay up to the cap; a success forgets it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
pub const BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const CAP: Duration = Duration::from_secs(60);

/// Failure counts per object key.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure of `key` and returns how long to wait before retrying it:
    /// 1 s, 2 s, 4 s, … up to 1 min.
    pub fn failed(&self, key: &str) -> Duration {
        let Ok(mut failures) = self.failures.lock() else {
            return CAP;
        };
        let n = failures.entry(key.to_string()).or_insert(0);
        let delay = BASE
            .checked_mul(1u32 << (*n).min(16))
            .unwrap_or(CAP)
            .min(CAP);
        *n = n.saturating_add(1);
        delay
    }

    /// Forgets `key`'s failures (it succeeded, or is gone).
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_a_minute_and_resets() {
        let b = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| b.failed("a").as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.failed("other"), BASE, "per object");
        b.succeeded("a");
        assert_eq!(b.failed("a"), BASE);
    }
}
