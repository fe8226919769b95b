//! Pure decisions of node termination: the disrupted taint, and which pods to evict next.

use k8s_openapi::api::core::v1::{Node, Taint as K8sTaint};
use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::DISRUPTED_TAINT_KEY;
use serde_json::{Value, json};

use crate::pods::{is_daemon_set_pod, is_mirror_pod, is_terminal, pod_key};
use crate::state::StoredPod as Pod;

/// How long the successors of a node's placement-constrained pods get to find their place
/// before the node's other pods are evicted ([`drain`]).
pub const CONSTRAINED_HEAD_START: std::time::Duration = std::time::Duration::from_secs(2);

/// Priority classes whose pods are evicted last.
pub const CRITICAL_PRIORITY_CLASSES: [&str; 2] =
    ["system-cluster-critical", "system-node-critical"];

/// The merge patch that adds `karpenter.sh/disrupted:NoSchedule` (replacing any taint with
/// that key), or `None` when the Node already has it.
pub fn disrupted_taint_patch(node: &Node) -> Option<Value> {
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if taints
        .iter()
        .any(|t| t.key == DISRUPTED_TAINT_KEY && t.effect == "NoSchedule")
    {
        return None;
    }
    let mut taints: Vec<K8sTaint> = taints
        .into_iter()
        .filter(|t| t.key != DISRUPTED_TAINT_KEY)
        .collect();
    taints.push(K8sTaint {
        key: DISRUPTED_TAINT_KEY.to_string(),
        effect: "NoSchedule".to_string(),
        ..K8sTaint::default()
    });
    Some(json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"taints": taints},
    }))
}

fn tolerates_disruption(pod: &Pod) -> bool {
    pod.spec.tolerations.as_ref().is_some_and(|ts| {
        ts.iter().any(|t| {
            let key_ok = match t.key.as_deref() {
                None | Some("") => t.operator.as_deref() == Some("Exists"),
                Some(k) => k == DISRUPTED_TAINT_KEY,
            };
            let effect_ok = matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"));
            key_ok && effect_ok
        })
    })
}

fn is_critical(pod: &Pod) -> bool {
    pod.spec
        .priority_class_name
        .as_deref()
        .is_some_and(|p| CRITICAL_PRIORITY_CLASSES.contains(&p))
}

/// Whether where the pod may run depends on where other pods are at the moment kube-scheduler
/// places it: a `DoNotSchedule` topology spread, or required pod (anti-)affinity.
fn is_constrained(pod: &Pod) -> bool {
    let spread = pod
        .spec
        .topology_spread_constraints
        .as_ref()
        .is_some_and(|cs| cs.iter().any(|c| c.when_unsatisfiable == "DoNotSchedule"));
    let affinity = pod.spec.affinity.as_ref().is_some_and(|a| {
        let required = |terms: Option<&Vec<_>>| terms.is_some_and(|t: &Vec<_>| !t.is_empty());
        a.pod_affinity.as_ref().is_some_and(|p| {
            required(
                p.required_during_scheduling_ignored_during_execution
                    .as_ref(),
            )
        }) || a.pod_anti_affinity.as_ref().is_some_and(|p| {
            required(
                p.required_during_scheduling_ignored_during_execution
                    .as_ref(),
            )
        })
    });
    spread || affinity
}

/// What draining a node still needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drain {
    /// Pods (`namespace/name`) to evict now: the first non-empty tier (placement-constrained
    /// pods, then the other non-critical ones, then critical ones), skipping pods already
    /// terminating.
    pub evict: Vec<String>,
    /// Whether `evict` is the placement-constrained tier: the caller holds the next tier back
    /// for [`CONSTRAINED_HEAD_START`] after evicting it.
    pub constrained: bool,
    /// Pods (`namespace/name`, grace period in seconds) to delete outright because waiting for
    /// their eviction would outlive the NodeClaim's termination deadline.
    pub delete: Vec<(String, i64)>,
    /// Pods the drain still waits for (including those being evicted or terminating).
    pub remaining: usize,
}

/// A pod's own grace period (the API default when unset).
fn pod_grace_seconds(pod: &Pod) -> i64 {
    pod.spec
        .termination_grace_period_seconds
        .unwrap_or(30)
        .max(0)
}

/// Plans the next drain step over the pods bound to the node. DaemonSet pods and mirror pods
/// are left alone (their controllers own them), as are finished pods and pods that tolerate
/// the disrupted taint.
///
/// Placement-constrained pods ([`is_constrained`]) go first, and the other non-critical pods
/// only once none is left to evict and `hold_rest` is false (the caller sets it for
/// [`CONSTRAINED_HEAD_START`] after evicting them). kube-scheduler puts a zone-spread pod's
/// successor in the zone with the fewest of its pods *at that moment*, so the successors of a
/// command's evictions crowd into the zones those evictions emptied first; evicted together
/// with everything else, they found that room taken by successors that could have gone
/// anywhere, and waited for a launch the consolidation had not planned.
///
/// With a termination `deadline` (the NodeClaim's `terminationGracePeriod`), a pod whose own
/// grace period would no longer fit before it is deleted instead of evicted (whatever its
/// PodDisruptionBudget says), with the time left as its grace period (at least 1 s): upstream
/// starts deleting each pod at `deadline − its terminationGracePeriodSeconds`.
pub fn drain<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    deadline: Option<Timestamp>,
    now: Timestamp,
    hold_rest: bool,
) -> Drain {
    let drainable: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| {
            !is_terminal(p)
                && !is_daemon_set_pod(p)
                && !is_mirror_pod(p)
                && !tolerates_disruption(p)
        })
        .collect();
    let remaining = drainable.len();
    let live: Vec<&Pod> = drainable
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let left = deadline.map(|d| now.duration_until(d).as_secs());
    let (overdue, live): (Vec<&Pod>, Vec<&Pod>) = live
        .into_iter()
        .partition(|p| left.is_some_and(|left| left <= pod_grace_seconds(p)));
    let delete = overdue
        .into_iter()
        .map(|p| (pod_key(p), left.unwrap_or(0).max(1)))
        .collect();
    let (critical, normal): (Vec<&Pod>, Vec<&Pod>) = live.into_iter().partition(|p| is_critical(p));
    let (constrained, rest): (Vec<&Pod>, Vec<&Pod>) =
        normal.into_iter().partition(|p| is_constrained(p));
    // Critical pods go only once everything else has left (they may serve the others).
    let (tier, is_constrained_tier) = if !constrained.is_empty() {
        (constrained, true)
    } else if hold_rest {
        (Vec::new(), false)
    } else if rest.is_empty() && remaining == critical.len() {
        (critical, false)
    } else {
        (rest, false)
    };
    Drain {
        evict: tier.into_iter().map(pod_key).collect(),
        constrained: is_constrained_tier,
        delete,
        remaining,
    }
}

/// Seconds from `now` to `deadline` (negative once past), for logs.
pub fn seconds_left(deadline: Timestamp, now: Timestamp) -> i64 {
    now.duration_until(deadline).as_secs()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, PodStatus, Toleration};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use k8s_openapi::jiff::SignedDuration;
    use std::sync::Arc;

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn grace(name: &str, seconds: i64) -> Pod {
        let mut p = pod(name);
        Arc::make_mut(&mut p.spec).termination_grace_period_seconds = Some(seconds);
        p
    }

    #[test]
    fn pods_that_would_outlive_the_deadline_are_deleted() {
        let pods = vec![grace("quick", 5), grace("slow", 60), pod("default")];
        let in_20s = now() + SignedDuration::from_secs(20);
        let d = drain(&pods, Some(in_20s), now(), false);
        // 60 s and the default 30 s no longer fit in 20 s: deleted with the 20 s left.
        assert_eq!(
            d.delete,
            vec![("ns/slow".to_string(), 20), ("ns/default".to_string(), 20)]
        );
        assert_eq!(d.evict, vec!["ns/quick"]);
        assert_eq!(d.remaining, 3);
        // Past the deadline every pod goes, with the minimum grace period.
        let past = now() - SignedDuration::from_secs(5);
        let d = drain(&pods, Some(past), now(), false);
        assert_eq!(d.delete.len(), 3);
        assert!(d.delete.iter().all(|(_, g)| *g == 1));
        assert!(d.evict.is_empty());
        assert_eq!(seconds_left(past, now()), -5);
    }

    fn critical(name: &str) -> Pod {
        let mut p = pod(name);
        Arc::make_mut(&mut p.spec).priority_class_name = Some("system-node-critical".into());
        p
    }

    #[test]
    fn taint_added_once() {
        let mut node = Node {
            spec: Some(NodeSpec {
                taints: Some(vec![K8sTaint {
                    key: DISRUPTED_TAINT_KEY.into(),
                    effect: "NoExecute".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let patch = disrupted_taint_patch(&node).unwrap();
        let taints = patch["spec"]["taints"].as_array().unwrap();
        assert_eq!(taints.len(), 1, "same key replaced");
        assert_eq!(taints[0]["effect"], "NoSchedule");
        node.spec.as_mut().unwrap().taints =
            serde_json::from_value(patch["spec"]["taints"].clone()).unwrap();
        assert_eq!(disrupted_taint_patch(&node), None);
    }

    #[test]
    fn non_critical_first_then_critical() {
        let pods = vec![pod("a"), critical("c"), pod("b")];
        let d = drain(&pods, None, now(), false);
        assert_eq!(d.evict, vec!["ns/a", "ns/b"]);
        assert_eq!(d.remaining, 3);

        let pods = vec![critical("c")];
        assert_eq!(drain(&pods, None, now(), false).evict, vec!["ns/c"]);

        // A non-critical pod still terminating holds the critical tier back.
        let mut leaving = pod("a");
        leaving.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let d = drain(&[leaving, critical("c")], None, now(), false);
        assert!(d.evict.is_empty());
        assert_eq!(d.remaining, 2);
    }

    fn spread(name: &str, when: &str) -> Pod {
        let mut p = pod(name);
        Arc::make_mut(&mut p.spec).topology_spread_constraints =
            Some(vec![k8s_openapi::api::core::v1::TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "topology.kubernetes.io/zone".into(),
                when_unsatisfiable: when.into(),
                ..Default::default()
            }]);
        p
    }

    fn anti_affine(name: &str) -> Pod {
        use k8s_openapi::api::core::v1::{Affinity, PodAffinityTerm, PodAntiAffinity};
        let mut p = pod(name);
        Arc::make_mut(&mut p.spec).affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    /// Pods whose place depends on other pods' (a hard zone spread, required anti-affinity)
    /// go first; the rest wait until none of those is left to evict and the head start is
    /// over; a soft spread is no constraint.
    #[test]
    fn placement_constrained_pods_go_first() {
        let pods = vec![
            pod("a"),
            spread("s", "DoNotSchedule"),
            spread("soft", "ScheduleAnyway"),
            anti_affine("x"),
            critical("c"),
        ];
        let d = drain(&pods, None, now(), false);
        assert_eq!(d.evict, vec!["ns/s", "ns/x"]);
        assert!(d.constrained);
        assert_eq!(d.remaining, 5);

        // Evicted (terminating): the rest waits for the head start, then goes.
        let mut evicted = pods.clone();
        for i in [1, 3] {
            evicted[i].metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        }
        let held = drain(&evicted, None, now(), true);
        assert!(held.evict.is_empty());
        assert!(!held.constrained);
        assert_eq!(held.remaining, 5);
        let d = drain(&evicted, None, now(), false);
        assert_eq!(d.evict, vec!["ns/a", "ns/soft"]);
        assert!(!d.constrained);
    }

    #[test]
    fn daemon_set_mirror_finished_and_tolerating_pods_are_skipped() {
        let mut ds = pod("ds");
        ds.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".into(),
            ..Default::default()
        }]);
        let mut mirror = pod("m");
        mirror.metadata.annotations =
            Some([("kubernetes.io/config.mirror".to_string(), "x".to_string())].into());
        let mut done = pod("done");
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut tol = pod("tol");
        Arc::make_mut(&mut tol.spec).tolerations = Some(vec![Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert_eq!(
            drain(&[ds, mirror, done, tol], None, now(), false),
            Drain::default()
        );
    }
}
