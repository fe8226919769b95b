//! Pure decisions of the NodeClaim lifecycle: conditions, where a NodeClaim is in its life,
//! what registration writes onto the Node, and what blocks initialization.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint as K8sTaint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::{
    DO_NOT_SYNC_TAINTS_LABEL, REGISTERED_LABEL, TERMINATION_FINALIZER, UNREGISTERED_TAINT_KEY,
};
use karpenter_api::solver_input::parse_resources;
use karpenter_api::v1::nodeclaim::{
    CONDITION_INITIALIZED, CONDITION_LAUNCHED, CONDITION_REGISTERED,
};
use karpenter_api::v1::{Condition, NodeClaim, Taint, TaintEffect, find_condition};
use serde_json::{Value, json};

use crate::provisioning::problem::EPHEMERAL_TAINTS;

/// Where a live (not deleting) NodeClaim is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The termination finalizer must be added before anything is launched.
    NeedsFinalizer,
    /// No instance yet.
    Launch,
    /// Launched; waiting for its Node.
    Register,
    /// Registered; waiting for the Node to become usable.
    Initialize,
    /// Initialized.
    Ready,
}

/// Whether the object carries the termination finalizer.
pub fn has_finalizer(finalizers: Option<&Vec<String>>) -> bool {
    finalizers.is_some_and(|f| f.iter().any(|x| x == TERMINATION_FINALIZER))
}

fn is_true(claim: &NodeClaim, type_: &str) -> bool {
    claim
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, type_))
        .is_some_and(|c| c.is_true())
}

/// The phase of a NodeClaim that is not being deleted.
pub fn phase(claim: &NodeClaim) -> Phase {
    if !has_finalizer(claim.metadata.finalizers.as_ref()) {
        Phase::NeedsFinalizer
    } else if !is_true(claim, CONDITION_LAUNCHED) {
        Phase::Launch
    } else if !is_true(claim, CONDITION_REGISTERED) {
        Phase::Register
    } else if !is_true(claim, CONDITION_INITIALIZED) {
        Phase::Initialize
    } else {
        Phase::Ready
    }
}

/// Sets a condition; the transition time moves only when the status changes. Returns whether
/// anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let message = (!message.is_empty()).then(|| message.chars().take(300).collect::<String>());
    let new = |t: Option<Time>| Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: message.clone(),
        last_transition_time: Some(t.unwrap_or(Time(now))),
        observed_generation: None,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c)
            if c.status == status
                && c.reason.as_deref() == Some(reason)
                && c.message == message =>
        {
            false
        }
        Some(c) => {
            let keep = (c.status == status)
                .then(|| c.last_transition_time.clone())
                .flatten();
            *c = new(keep);
            true
        }
        None => {
            conditions.push(new(None));
            true
        }
    }
}

/// Whether a launched NodeClaim's Node failed to register within `timeout`.
pub fn registration_timed_out(claim: &NodeClaim, now: Timestamp, timeout: Duration) -> bool {
    let launched_at = claim
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, CONDITION_LAUNCHED))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .or_else(|| claim.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let Some(at) = launched_at else {
        return false;
    };
    let elapsed = now.duration_since(at);
    elapsed.as_secs() >= 0 && elapsed.unsigned_abs() >= timeout
}

fn k8s_taint(t: &Taint) -> K8sTaint {
    K8sTaint {
        key: t.key.clone(),
        value: t.value.clone(),
        effect: match t.effect {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
        .to_string(),
        time_added: None,
    }
}

/// The merge patch that registers `node` to `claim`: the NodeClaim's labels plus
/// `karpenter.sh/registered=true`, its taints and startup taints (unless the Node opts out with
/// `karpenter.sh/do-not-sync-taints`), the termination finalizer, an owner reference to the
/// NodeClaim, and the `karpenter.sh/unregistered` taint removed. Carries the Node's
/// resourceVersion so a concurrent change makes it fail (and retry) rather than lose data.
pub fn registration_patch(claim: &NodeClaim, node: &Node) -> Value {
    let node_labels = node.metadata.labels.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = claim.metadata.labels.clone().unwrap_or_default();
    labels.insert(REGISTERED_LABEL.to_string(), "true".to_string());

    let mut taints: Vec<K8sTaint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != UNREGISTERED_TAINT_KEY)
        .collect();
    if node_labels
        .get(DO_NOT_SYNC_TAINTS_LABEL)
        .map(String::as_str)
        != Some("true")
    {
        for t in claim.spec.taints.iter().chain(&claim.spec.startup_taints) {
            let k = k8s_taint(t);
            if !taints
                .iter()
                .any(|x| x.key == k.key && x.effect == k.effect)
            {
                taints.push(k);
            }
        }
    }

    let mut finalizers = node.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == TERMINATION_FINALIZER) {
        finalizers.push(TERMINATION_FINALIZER.to_string());
    }
    let mut owners = node.metadata.owner_references.clone().unwrap_or_default();
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    if !owners.iter().any(|o| o.uid == uid) {
        owners.push(OwnerReference {
            api_version: "karpenter.sh/v1".into(),
            kind: "NodeClaim".into(),
            name: claim.metadata.name.clone().unwrap_or_default(),
            uid,
            block_owner_deletion: Some(true),
            controller: None,
        });
    }
    json!({
        "metadata": {
            "resourceVersion": node.metadata.resource_version,
            "labels": labels,
            "finalizers": finalizers,
            "ownerReferences": owners,
        },
        "spec": { "taints": taints },
    })
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why the Node is not initialized yet (reason, message), or `None` when it is: Ready, no
/// startup taint left, no known ephemeral taint, and every extended resource the NodeClaim
/// requested registered with a non-zero allocatable.
pub fn initialization_blocker(claim: &NodeClaim, node: &Node) -> Option<(&'static str, String)> {
    if !node_ready(node) {
        return Some(("NodeNotReady", "node is not ready".into()));
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if let Some(t) = taints.iter().find(|t| {
        claim
            .spec
            .startup_taints
            .iter()
            .any(|s| s.key == t.key && k8s_taint(s).effect == t.effect)
    }) {
        return Some((
            "StartupTaintsExist",
            format!("startup taint {:?} remains", t.key),
        ));
    }
    if let Some(t) = taints.iter().find(|t| {
        EPHEMERAL_TAINTS.contains(&t.key.as_str()) || t.key.starts_with("readiness.k8s.io/")
    }) {
        return Some((
            "KnownEphemeralTaintsExist",
            format!("taint {:?} remains", t.key),
        ));
    }
    // Both were accepted by the API server, so parsing cannot fail in practice; a quantity that
    // does counts as zero (the check then waits, which is the safe side).
    let requested = parse_resources(
        "NodeClaim",
        "spec.resources.requests",
        &claim.spec.resources.requests,
    )
    .unwrap_or_default();
    let allocatable = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| parse_resources("Node", "status.allocatable", a).ok())
        .unwrap_or_default();
    for (name, v) in &requested.0 {
        let well_known = ["cpu", "memory", "pods", "ephemeral-storage"].contains(&name.as_str());
        if !well_known && *v > 0 && allocatable.get(name) == 0 {
            return Some((
                "ResourceNotRegistered",
                format!("resource {name:?} was requested but is not registered"),
            ));
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use karpenter_api::v1::{NodeClaimSpec, ResourceRequirements};

    fn claim() -> NodeClaim {
        let mut c = NodeClaim::new(
            "c1",
            NodeClaimSpec {
                taints: vec![Taint {
                    key: "team".into(),
                    value: Some("a".into()),
                    effect: TaintEffect::NoSchedule,
                }],
                startup_taints: vec![Taint {
                    key: "init".into(),
                    value: None,
                    effect: TaintEffect::NoSchedule,
                }],
                requirements: vec![],
                resources: ResourceRequirements {
                    requests: BTreeMap::from([(
                        "example.com/gpu".to_string(),
                        Quantity("1".into()),
                    )]),
                },
                node_class_ref: Default::default(),
                termination_grace_period: None,
                expire_after: "720h".into(),
            },
        );
        c.metadata.uid = Some("uid-c1".into());
        c.metadata.labels = Some(BTreeMap::from([(
            "karpenter.sh/nodepool".into(),
            "np".into(),
        )]));
        c
    }

    fn node(ready: bool, taints: &[(&str, &str)], gpus: &str) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some("c1".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| K8sTaint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                allocatable: Some(BTreeMap::from([(
                    "example.com/gpu".into(),
                    Quantity(gpus.into()),
                )])),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn phases_follow_conditions() {
        let mut c = claim();
        assert_eq!(phase(&c), Phase::NeedsFinalizer);
        c.metadata.finalizers = Some(vec![TERMINATION_FINALIZER.into()]);
        assert_eq!(phase(&c), Phase::Launch);
        let mut st = karpenter_api::v1::NodeClaimStatus::default();
        let now = Timestamp::UNIX_EPOCH;
        set_condition(
            &mut st.conditions,
            CONDITION_LAUNCHED,
            "True",
            "Launched",
            "",
            now,
        );
        c.status = Some(st.clone());
        assert_eq!(phase(&c), Phase::Register);
        set_condition(
            &mut st.conditions,
            CONDITION_REGISTERED,
            "True",
            "Registered",
            "",
            now,
        );
        set_condition(
            &mut st.conditions,
            CONDITION_INITIALIZED,
            "True",
            "Initialized",
            "",
            now,
        );
        c.status = Some(st);
        assert_eq!(phase(&c), Phase::Ready);
    }

    #[test]
    fn conditions_keep_transition_time_when_status_holds() {
        let mut cs = Vec::new();
        let t0 = Timestamp::UNIX_EPOCH;
        let t1 = t0 + Duration::from_secs(60);
        assert!(set_condition(
            &mut cs,
            "Registered",
            "Unknown",
            "NodeNotFound",
            "",
            t0
        ));
        assert!(!set_condition(
            &mut cs,
            "Registered",
            "Unknown",
            "NodeNotFound",
            "",
            t1
        ));
        assert!(set_condition(
            &mut cs,
            "Registered",
            "Unknown",
            "Other",
            "",
            t1
        ));
        assert_eq!(cs[0].last_transition_time.as_ref().unwrap().0, t0);
        assert!(set_condition(
            &mut cs,
            "Registered",
            "True",
            "Registered",
            "",
            t1
        ));
        assert_eq!(cs[0].last_transition_time.as_ref().unwrap().0, t1);
    }

    #[test]
    fn registration_times_out_after_the_launch() {
        let mut c = claim();
        let mut st = karpenter_api::v1::NodeClaimStatus::default();
        let t0 = Timestamp::UNIX_EPOCH;
        set_condition(
            &mut st.conditions,
            CONDITION_LAUNCHED,
            "True",
            "Launched",
            "",
            t0,
        );
        c.status = Some(st);
        let timeout = Duration::from_secs(900);
        assert!(!registration_timed_out(
            &c,
            t0 + Duration::from_secs(899),
            timeout
        ));
        assert!(registration_timed_out(
            &c,
            t0 + Duration::from_secs(900),
            timeout
        ));
    }

    #[test]
    fn registration_syncs_the_node() {
        let n = node(
            true,
            &[
                (UNREGISTERED_TAINT_KEY, "NoExecute"),
                ("other", "NoSchedule"),
            ],
            "1",
        );
        let p = registration_patch(&claim(), &n);
        let md = &p["metadata"];
        assert_eq!(md["resourceVersion"], "7");
        assert_eq!(md["labels"][REGISTERED_LABEL], "true");
        assert_eq!(md["labels"]["karpenter.sh/nodepool"], "np");
        assert_eq!(md["finalizers"][0], TERMINATION_FINALIZER);
        assert_eq!(md["ownerReferences"][0]["kind"], "NodeClaim");
        assert_eq!(md["ownerReferences"][0]["uid"], "uid-c1");
        let keys: Vec<&str> = p["spec"]["taints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, vec!["other", "team", "init"]);
    }

    #[test]
    fn initialization_waits_for_ready_taints_and_resources() {
        let c = claim();
        assert_eq!(
            initialization_blocker(&c, &node(false, &[], "1"))
                .unwrap()
                .0,
            "NodeNotReady"
        );
        assert_eq!(
            initialization_blocker(&c, &node(true, &[("init", "NoSchedule")], "1"))
                .unwrap()
                .0,
            "StartupTaintsExist"
        );
        assert_eq!(
            initialization_blocker(
                &c,
                &node(true, &[(UNREGISTERED_TAINT_KEY, "NoExecute")], "1")
            )
            .unwrap()
            .0,
            "KnownEphemeralTaintsExist"
        );
        assert_eq!(
            initialization_blocker(&c, &node(true, &[], "0")).unwrap().0,
            "ResourceNotRegistered"
        );
        assert_eq!(initialization_blocker(&c, &node(true, &[], "1")), None);
    }
}
