//! Versions of NodeClaims this controller has written over, so a reconcile of one of them is
//! known to run on a stale read.
//!
//! The lifecycle reads NodeClaims from the shared store, which lags the controller's own
//! writes. A reconcile woken by something else (the claim's Node appearing, our own label
//! patch) before the watch delivers the status write that moved the claim on would repeat the
//! step: create the instance again (adopted on the provider's conflict, but a wasted call),
//! register or initialize twice. Such a reconcile waits for the newer version instead; its
//! watch event wakes the claim again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// `resourceVersion`s by NodeClaim name that a write of ours has replaced. Only exact
/// versions are compared (they are opaque strings); an entry goes once a reconcile sees any
/// other version of its claim.
#[derive(Debug, Default)]
pub struct Superseded(Mutex<HashMap<String, HashSet<String>>>);

impl Superseded {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        // Plain bookkeeping: a panic elsewhere while holding it leaves nothing half-done.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `version` of `name` is one we have written over. A version not written over
    /// means our writes reached the store: the entry is dropped.
    pub fn is_stale(&self, name: &str, version: Option<&str>) -> bool {
        let mut map = self.map();
        let stale = version.is_some_and(|v| map.get(name).is_some_and(|s| s.contains(v)));
        if !stale {
            map.remove(name);
        }
        stale
    }

    /// Records that a step which read `read` of `name` wrote it, the API returning `written`:
    /// `read` is stale from now on (unless the write changed nothing and kept the version).
    pub fn wrote(&self, name: &str, read: Option<&str>, written: Option<&str>) {
        let (Some(read), Some(written)) = (read, written) else {
            return;
        };
        if read == written {
            return;
        }
        let mut map = self.map();
        let versions = map.entry(name.to_string()).or_default();
        versions.insert(read.to_string());
        versions.remove(written);
    }

    /// Forgets a NodeClaim (it is gone).
    pub fn forget(&self, name: &str) {
        self.map().remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_written_over_is_stale_until_a_newer_one_is_seen() {
        let s = Superseded::default();
        assert!(!s.is_stale("a", Some("1")), "nothing written yet");
        s.wrote("a", Some("1"), Some("2"));
        s.wrote("a", Some("2"), Some("3"));
        assert!(s.is_stale("a", Some("1")));
        assert!(s.is_stale("a", Some("2")), "intermediate write");
        assert!(!s.is_stale("b", Some("1")), "other claims unaffected");
        assert!(!s.is_stale("a", Some("3")), "our last write arrived");
        assert!(!s.is_stale("a", Some("1")), "entry dropped once caught up");
    }

    #[test]
    fn a_write_that_changed_nothing_marks_nothing() {
        let s = Superseded::default();
        s.wrote("a", Some("5"), Some("5"));
        assert!(!s.is_stale("a", Some("5")));
        s.wrote("a", None, Some("6"));
        assert!(!s.is_stale("a", None));
    }

    #[test]
    fn forget_drops_the_entry() {
        let s = Superseded::default();
        s.wrote("a", Some("1"), Some("2"));
        s.forget("a");
        assert!(!s.is_stale("a", Some("1")));
    }
}
