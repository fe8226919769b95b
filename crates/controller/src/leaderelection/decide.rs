//! Pure leader-election decisions over a `coordination.k8s.io/v1` Lease: what a replica should
//! do given the Lease as it reads it now, and the Lease spec it then writes.
//!
//! Expiry is judged from the Lease's own `renewTime` and `leaseDurationSeconds` against this
//! replica's clock, so a Lease left behind by a crashed or older controller is taken over as
//! soon as it has expired, without waiting a further lease duration first. That assumes the
//! replicas' clocks agree to well within the lease duration (15 s by default), which NTP-synced
//! nodes do.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// What a replica does after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (missing, released, or expired): take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it and it has not expired: stay a follower.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// The holder named in the Lease, if any (an empty identity means released).
pub fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// Whether the Lease's holder failed to renew it in time, as of `now`. A Lease without a renew
/// (or acquire) time, or without a duration, has expired: nothing vouches for its holder.
pub fn expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = lease.spec.as_ref() else {
        return true;
    };
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match (renewed, spec.lease_duration_seconds) {
        (Some(at), Some(secs)) if secs > 0 => {
            // Out of range only for nonsense times; such a Lease vouches for nobody.
            at.checked_add(SignedDuration::from_secs(i64::from(secs)))
                .map_or(true, |until| now >= until)
        }
        _ => true,
    }
}

/// Decides, for replica `me`, given the Lease as read (`None`: it does not exist).
pub fn decide(lease: Option<&Lease>, me: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Acquire;
    };
    match holder(lease) {
        None => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(_) if expired(lease, now) => Decision::Acquire,
        Some(h) => Decision::Follow {
            holder: h.to_string(),
        },
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// The spec that makes `me` the holder: acquired and renewed now, transitions counted when the
/// holder changes (not when we re-acquire our own expired Lease).
pub fn acquired(
    previous: Option<&Lease>,
    me: &str,
    now: Timestamp,
    duration: Duration,
) -> LeaseSpec {
    let old = previous.and_then(|l| l.spec.clone()).unwrap_or_default();
    let same_holder = old.holder_identity.as_deref() == Some(me);
    let transitions = old.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(seconds(duration)),
        acquire_time: if same_holder {
            old.acquire_time.clone().or(Some(MicroTime(now)))
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if same_holder || previous.is_none() {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..old
    }
}

/// The spec after a renewal by its holder.
pub fn renewed(lease: &Lease, now: Timestamp, duration: Duration) -> LeaseSpec {
    LeaseSpec {
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(seconds(duration)),
        ..lease.spec.clone().unwrap_or_default()
    }
}

/// The spec that gives the Lease up on shutdown: no holder and a 1 s duration (as upstream's
/// `ReleaseOnCancel`), so another replica takes over at once.
pub fn released(lease: &Lease, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..lease.spec.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, duration: i32, now: Timestamp) -> Lease {
        let at = now - SignedDuration::from_secs(renewed_secs_ago);
        Lease {
            metadata: Default::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(MicroTime(at)),
                renew_time: Some(MicroTime(at)),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn missing_or_released_leases_are_acquired() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), Decision::Acquire);
        assert_eq!(
            decide(Some(&lease(None, 0, 15, now)), "a", now),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&lease(Some(""), 0, 15, now)), "a", now),
            Decision::Acquire
        );
    }

    #[test]
    fn own_lease_is_renewed_even_when_expired() {
        let now = Timestamp::now();
        assert_eq!(
            decide(Some(&lease(Some("a"), 1, 15, now)), "a", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("a"), 60, 15, now)), "a", now),
            Decision::Renew
        );
    }

    #[test]
    fn live_lease_of_another_is_followed_and_an_expired_one_taken_over() {
        let now = Timestamp::now();
        assert_eq!(
            decide(Some(&lease(Some("b"), 14, 15, now)), "a", now),
            Decision::Follow { holder: "b".into() }
        );
        // Exactly at expiry, and long after (a crashed controller's stale Lease).
        assert_eq!(
            decide(Some(&lease(Some("b"), 15, 15, now)), "a", now),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&lease(Some("old"), 86_400, 15, now)), "a", now),
            Decision::Acquire
        );
        // No times or no duration: nothing vouches for the holder.
        let mut bare = lease(Some("b"), 0, 15, now);
        if let Some(s) = bare.spec.as_mut() {
            s.renew_time = None;
            s.acquire_time = None;
        }
        assert_eq!(decide(Some(&bare), "a", now), Decision::Acquire);
        let mut zero = lease(Some("b"), 0, 15, now);
        if let Some(s) = zero.spec.as_mut() {
            s.lease_duration_seconds = Some(0);
        }
        assert_eq!(decide(Some(&zero), "a", now), Decision::Acquire);
    }

    #[test]
    fn specs_written() {
        let now = Timestamp::now();
        let theirs = lease(Some("b"), 60, 15, now);
        let s = acquired(Some(&theirs), "a", now, Duration::from_secs(15));
        assert_eq!(s.holder_identity.as_deref(), Some("a"));
        assert_eq!(s.lease_transitions, Some(4), "holder changed");
        assert_eq!(s.renew_time, Some(MicroTime(now)));
        assert_eq!(s.acquire_time, Some(MicroTime(now)));
        assert_eq!(s.lease_duration_seconds, Some(15));

        let ours = lease(Some("a"), 60, 15, now);
        let s = acquired(Some(&ours), "a", now, Duration::from_secs(15));
        assert_eq!(s.lease_transitions, Some(3), "same holder: no transition");
        assert_eq!(
            acquired(None, "a", now, Duration::from_secs(15)).lease_transitions,
            Some(0)
        );

        let r = renewed(&ours, now, Duration::from_secs(15));
        assert_eq!(r.renew_time, Some(MicroTime(now)));
        assert_eq!(
            r.acquire_time,
            ours.spec.as_ref().and_then(|s| s.acquire_time.clone())
        );

        let gone = released(&ours, now);
        assert_eq!(gone.holder_identity, None);
        assert_eq!(gone.lease_duration_seconds, Some(1));
        let after = Lease {
            metadata: Default::default(),
            spec: Some(gone),
        };
        assert_eq!(decide(Some(&after), "b", now), Decision::Acquire);
    }
}
