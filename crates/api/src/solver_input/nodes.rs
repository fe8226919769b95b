//! Nodes and DaemonSets → the solver's [`ExistingNode`] and [`DaemonSetView`], and the usage a
//! NodePool's existing nodes count against its limits.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use karpenter_solver::labels::{HOSTNAME, NODEPOOL};
use karpenter_solver::taints::first_untolerated;
use karpenter_solver::{
    DaemonSetView, ExistingNode, PodView, Requirements, Resources, Taint, TaintEffect, Toleration,
};

use super::pods::{PodContext, pod_view_at, taint_effect};
use super::{At, ConvertError, ConvertWarning, NODES, describe, parse_resources};

/// The taint the apiserver puts on a cordoned node (`spec.unschedulable: true`).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Converts a Node, with the (converted) pods already running on it.
///
/// The hostname label defaults to the node's name; a cordoned node (`spec.unschedulable`)
/// gets the `node.kubernetes.io/unschedulable:NoSchedule` taint even when the object does not
/// list it yet (objects from files, or a watch event that raced the node controller).
/// `status.allocatable` is required: without it the node's free room is unknown.
pub fn existing_node(node: &k8s::Node, pods: Vec<PodView>) -> Result<ExistingNode, ConvertError> {
    let object = describe("Node", None, node.metadata.name.as_deref());
    let at = At {
        object: &object,
        spec: "",
    };
    let Some(name) = node.metadata.name.clone().filter(|n| !n.is_empty()) else {
        return Err(at.error("metadata.name", "missing: every node needs a name"));
    };
    let mut labels = node.metadata.labels.clone().unwrap_or_default();
    labels
        .entry(HOSTNAME.to_owned())
        .or_insert_with(|| name.clone());
    let spec = node.spec.as_ref();
    let mut taints = Vec::new();
    let listed = spec.and_then(|s| s.taints.as_deref()).unwrap_or_default();
    for (i, t) in listed.iter().enumerate() {
        let path = format!("spec.taints[{i}].effect");
        taints.push(Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: taint_effect(at, &path, &t.effect)?,
        });
    }
    let cordoned = spec.and_then(|s| s.unschedulable) == Some(true);
    if cordoned && !taints.iter().any(|t| t.key == UNSCHEDULABLE_TAINT) {
        taints.push(Taint::new(UNSCHEDULABLE_TAINT, "", TaintEffect::NoSchedule));
    }
    let allocatable = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .filter(|a| !a.is_empty());
    let Some(allocatable) = allocatable else {
        return Err(at.error(
            "status.allocatable",
            "missing: each Node needs its allocatable resources (cpu, memory, pods), as `kubectl get node -o yaml` shows them",
        ));
    };
    Ok(ExistingNode {
        name,
        labels,
        taints,
        allocatable: parse_resources(&object, "status.allocatable", allocatable)?,
        pods,
    })
}

/// A Node's capacity as it counts against its NodePool's limits: `status.capacity`, or
/// `status.allocatable` when the capacity is absent (hand-written nodes often list only one).
pub fn node_capacity(node: &k8s::Node) -> Result<Resources, ConvertError> {
    let object = describe("Node", None, node.metadata.name.as_deref());
    let status = node.status.as_ref();
    let capacity = status.and_then(|s| s.capacity.as_ref());
    if let Some(c) = capacity.filter(|c| !c.is_empty()) {
        return parse_resources(&object, "status.capacity", c);
    }
    let allocatable = status.and_then(|s| s.allocatable.as_ref());
    match allocatable.filter(|a| !a.is_empty()) {
        Some(a) => parse_resources(&object, "status.allocatable", a),
        None => Ok(Resources::new()),
    }
}

/// Adds a Node's capacity and one to the [`NODES`] count of the NodePool named by its
/// `karpenter.sh/nodepool` label; nodes of no NodePool count for none. The capacity is parsed
/// (and its errors reported) either way, so a bad node is refused whatever its labels.
pub fn add_pool_usage(
    usage: &mut BTreeMap<String, Resources>,
    node: &k8s::Node,
) -> Result<(), ConvertError> {
    let capacity = node_capacity(node)?;
    let pool = node.metadata.labels.as_ref().and_then(|l| l.get(NODEPOOL));
    if let Some(pool) = pool {
        let u = usage.entry(pool.clone()).or_default();
        u.add(&capacity);
        u.add_one(NODES, 1);
    }
    Ok(())
}

/// NodePool name → usage of all `nodes` ([`add_pool_usage`] for each), for
/// [`super::node_pool_view`].
pub fn pool_usage<'a>(
    nodes: impl IntoIterator<Item = &'a k8s::Node>,
) -> Result<BTreeMap<String, Resources>, ConvertError> {
    let mut usage = BTreeMap::new();
    for node in nodes {
        add_pool_usage(&mut usage, node)?;
    }
    Ok(usage)
}

/// A DaemonSet's pod template as the solver sees it, with the tolerations the DaemonSet
/// controller adds to every daemon pod (so daemons also run on cordoned or pressured nodes).
///
/// Errors name `DaemonSet namespace/name` and paths from the DaemonSet
/// (`spec.template.spec.containers[0]...`).
pub fn daemon_set_view(
    ds: &DaemonSet,
    ctx: &PodContext<'_>,
    warnings: &mut Vec<ConvertWarning>,
) -> Result<DaemonSetView, ConvertError> {
    let namespace = ds
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let object = describe("DaemonSet", Some(&namespace), ds.metadata.name.as_deref());
    let at = At {
        object: &object,
        spec: "spec.template.spec",
    };
    let Some(name) = ds.metadata.name.clone().filter(|n| !n.is_empty()) else {
        return Err(at.error("metadata.name", "missing: every DaemonSet needs a name"));
    };
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let pod = k8s::Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: meta.labels,
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    let mut view = pod_view_at(at, &pod, ctx, warnings)?;
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", TaintEffect::NoExecute),
        ("node.kubernetes.io/unreachable", TaintEffect::NoExecute),
        ("node.kubernetes.io/disk-pressure", TaintEffect::NoSchedule),
        (
            "node.kubernetes.io/memory-pressure",
            TaintEffect::NoSchedule,
        ),
        ("node.kubernetes.io/pid-pressure", TaintEffect::NoSchedule),
        (UNSCHEDULABLE_TAINT, TaintEffect::NoSchedule),
    ] {
        view.tolerations.push(Toleration {
            effect: Some(effect),
            ..Toleration::exists(key)
        });
    }
    Ok(DaemonSetView {
        namespace,
        name,
        pod: view,
    })
}

/// Whether a (daemon) pod's node selector, required node affinity and tolerations admit
/// `node`: where the DaemonSet controller would run one of its pods.
pub fn runs_on(pod: &PodView, node: &ExistingNode) -> bool {
    let selector = pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    let affinity = pod.required_node_affinity.is_empty()
        || pod.required_node_affinity.iter().any(|t| {
            Requirements::from_selectors(&t.match_expressions)
                .is_ok_and(|r| r.satisfied_by(&node.labels))
        });
    selector && affinity && first_untolerated(&node.taints, &pod.tolerations, false).is_none()
}
