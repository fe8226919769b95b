//! The manifests → the solver's [`Problem`]: NodePools, pending pods, existing nodes with the
//! pods bound to them (and the DaemonSet pods they run), DaemonSets, NodePool usage.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use karpenter_solver::labels::{HOSTNAME, NODEPOOL};
use karpenter_solver::quantity::parse_for_resource;
use karpenter_solver::taints::first_untolerated;
use karpenter_solver::{
    DaemonSetView, ExistingNode, InstanceType, PodView, Problem, Requirements, Resources, Taint,
    TaintEffect, Toleration,
};

use super::manifests::{Manifests, Origin, Source, Sourced};
use super::pods::{PodContext, pod_view, taint_effect};
use super::pools::node_pools;
use super::topology::NamespaceIndex;

/// Pseudo-resource counting a NodePool's nodes in its limits and usage.
const NODES: &str = "nodes";
/// The taint the apiserver puts on a cordoned node (`spec.unschedulable: true`).
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// A manifest that reads fine as YAML but cannot be turned into the solver's model.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A field of an object is invalid.
    #[error("{origin}: {path}: {message}")]
    Field {
        /// The object (boxed: errors stay small on the happy path).
        origin: Box<Origin>,
        /// The field path as written, e.g. `spec.containers[0].resources.requests.cpu`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A Karpenter object is invalid; the api crate's message names the object and the field.
    #[error("{source_doc}: {message}")]
    Object {
        /// The document.
        source_doc: Source,
        /// What is wrong, with object and field path.
        message: String,
    },
}

/// Builds a [`ConvertError::Field`].
pub fn field(origin: &Origin, path: impl Into<String>, message: impl Into<String>) -> ConvertError {
    ConvertError::Field {
        origin: Box::new(origin.clone()),
        path: path.into(),
        message: message.into(),
    }
}

/// Parses a resource list (`{cpu: 500m, memory: 1Gi}`) exactly; `path` is the list's field
/// path, the error names `path.<resource>`. Negative amounts are refused.
pub fn parse_resources(
    origin: &Origin,
    path: &str,
    list: &BTreeMap<String, Quantity>,
) -> Result<Resources, ConvertError> {
    let mut out = Resources::new();
    for (name, q) in list {
        let at = || format!("{path}.{name}");
        let v = parse_for_resource(name, &q.0).map_err(|e| field(origin, at(), e.to_string()))?;
        if v < 0 {
            return Err(field(
                origin,
                at(),
                format!("{:?} must not be negative", q.0),
            ));
        }
        out.add_one(name, v);
    }
    Ok(out)
}

/// The solver's problem plus what the output needs to know about the input.
pub struct Converted {
    /// The problem.
    pub problem: Problem,
    /// Pods bound to a node in the input (`namespace/name` → node); not listed in the output.
    pub bound: BTreeMap<String, String>,
}

/// Converts everything. `instance_types` is the catalog.
pub fn problem(
    m: &Manifests,
    instance_types: Vec<InstanceType>,
    warnings: &mut Vec<String>,
) -> Result<Converted, ConvertError> {
    let namespaces = namespace_index(m);
    let mut ctx = PodContext {
        namespaces: &namespaces,
        warnings,
    };
    let mut pods: Vec<PodView> = Vec::new();
    let mut bound: Vec<(String, PodView, &Sourced<k8s::Pod>)> = Vec::new();
    let mut seen: BTreeMap<String, &Origin> = BTreeMap::new();
    for p in &m.pods {
        let phase = p.object.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue; // finished pods hold no resources
        }
        let view = pod_view(&p.origin, &p.object, &mut ctx)?;
        let key = view.key();
        if let Some(first) = seen.insert(key.clone(), &p.origin) {
            let msg = format!("pod {key} is also defined by {first}; pod names must be unique");
            return Err(field(&p.origin, p.origin.field("metadata.name"), msg));
        }
        match p.object.spec.as_ref().and_then(|s| s.node_name.clone()) {
            Some(node) if !node.is_empty() => bound.push((node, view, p)),
            _ => pods.push(view),
        }
    }
    let daemon_sets = m
        .daemon_sets
        .iter()
        .map(|ds| daemon_set_view(ds, &mut ctx))
        .collect::<Result<Vec<_>, _>>()?;
    let warnings = ctx.warnings;

    let mut existing_nodes = Vec::new();
    let mut usage: BTreeMap<String, Resources> = BTreeMap::new();
    for n in &m.nodes {
        let (node, capacity) = existing_node(n)?;
        if existing_nodes
            .iter()
            .any(|e: &ExistingNode| e.name == node.name)
        {
            let msg = format!("node {} is defined twice", node.name);
            return Err(field(&n.origin, n.origin.field("metadata.name"), msg));
        }
        if let Some(pool) = node.labels.get(NODEPOOL) {
            let u = usage.entry(pool.clone()).or_default();
            u.add(&capacity);
            u.add_one(NODES, 1);
        }
        existing_nodes.push(node);
    }

    let mut bound_keys = BTreeMap::new();
    let mut owners: Vec<(usize, String)> = Vec::new(); // (node index, DaemonSet key) already running
    for (node, view, p) in bound {
        let key = view.key();
        let Some(i) = existing_nodes.iter().position(|e| e.name == node) else {
            warnings.push(format!(
                "warning: {}: pod {key} is bound to node {node:?}, which is not in the input; ignored",
                p.origin
            ));
            continue;
        };
        for owner in p
            .object
            .metadata
            .owner_references
            .as_deref()
            .unwrap_or_default()
        {
            if owner.kind == "DaemonSet" {
                owners.push((i, format!("{}/{}", view.namespace, owner.name)));
            }
        }
        existing_nodes[i].pods.push(view);
        bound_keys.insert(key, node);
    }
    // A DaemonSet runs one pod on every node that accepts it; unless the input lists that pod
    // (bound, owned by the DaemonSet), it is added so the node's free room is right.
    for (i, node) in existing_nodes.iter_mut().enumerate() {
        for ds in &daemon_sets {
            let ds_key = format!("{}/{}", ds.namespace, ds.name);
            if owners.contains(&(i, ds_key)) || !accepts(&ds.pod, node) {
                continue;
            }
            let mut pod = ds.pod.clone();
            pod.name = format!("{}-{}", ds.name, node.name);
            node.pods.push(pod);
        }
    }

    let mut pools = Vec::new();
    for mut p in node_pools(&m.karpenter, warnings)? {
        p.view.usage = usage.remove(&p.view.name).unwrap_or_default();
        pools.push(p.view);
    }
    Ok(Converted {
        problem: Problem {
            instance_types,
            node_pools: pools,
            pods,
            existing_nodes,
            daemon_sets,
        },
        bound: bound_keys,
    })
}

/// Namespaces from Namespace documents and from every pod's namespace, each with the
/// `kubernetes.io/metadata.name` label the apiserver always sets.
fn namespace_index(m: &Manifests) -> NamespaceIndex {
    const NAME_LABEL: &str = "kubernetes.io/metadata.name";
    let mut index = NamespaceIndex::new();
    for ns in &m.namespaces {
        let name = ns.object.metadata.name.clone().unwrap_or_default();
        let mut labels = ns.object.metadata.labels.clone().unwrap_or_default();
        labels.insert(NAME_LABEL.to_owned(), name.clone());
        index.insert(name, labels);
    }
    let pod_namespaces = m.pods.iter().map(|p| &p.object.metadata);
    let ds_namespaces = m.daemon_sets.iter().map(|d| &d.object.metadata);
    for meta in pod_namespaces.chain(ds_namespaces) {
        let name = meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        index
            .entry(name.clone())
            .or_insert_with(|| BTreeMap::from([(NAME_LABEL.to_owned(), name)]));
    }
    index
}

/// A Node's view and its capacity (for NodePool usage; allocatable when capacity is absent).
fn existing_node(n: &Sourced<k8s::Node>) -> Result<(ExistingNode, Resources), ConvertError> {
    let origin = &n.origin;
    let node = &n.object;
    let Some(name) = node.metadata.name.clone().filter(|n| !n.is_empty()) else {
        return Err(field(
            origin,
            origin.field("metadata.name"),
            "missing: every node needs a name",
        ));
    };
    let mut labels = node.metadata.labels.clone().unwrap_or_default();
    labels
        .entry(HOSTNAME.to_owned())
        .or_insert_with(|| name.clone());
    let spec = node.spec.clone().unwrap_or_default();
    let mut taints = Vec::new();
    for (i, t) in spec
        .taints
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = origin.field(&format!("spec.taints[{i}].effect"));
        taints.push(Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: taint_effect(origin, &path, &t.effect)?,
        });
    }
    let cordon = Taint::new(UNSCHEDULABLE_TAINT, "", TaintEffect::NoSchedule);
    if spec.unschedulable == Some(true) && !taints.iter().any(|t| t.key == cordon.key) {
        taints.push(cordon);
    }
    let status = node.status.clone().unwrap_or_default();
    let Some(allocatable) = status.allocatable.filter(|a| !a.is_empty()) else {
        return Err(field(
            origin,
            origin.field("status.allocatable"),
            "missing: simulate needs each Node's allocatable resources (cpu, memory, pods), as `kubectl get node -o yaml` shows them",
        ));
    };
    let allocatable = parse_resources(origin, &origin.field("status.allocatable"), &allocatable)?;
    let capacity = match status.capacity.filter(|c| !c.is_empty()) {
        Some(c) => parse_resources(origin, &origin.field("status.capacity"), &c)?,
        None => allocatable.clone(),
    };
    let view = ExistingNode {
        name,
        labels,
        taints,
        allocatable,
        pods: Vec::new(),
    };
    Ok((view, capacity))
}

/// A DaemonSet's pod template as the solver sees it, with the tolerations the DaemonSet
/// controller adds to every daemon pod (so daemons also run on cordoned or pressured nodes).
fn daemon_set_view(
    ds: &Sourced<k8s_openapi::api::apps::v1::DaemonSet>,
    ctx: &mut PodContext<'_>,
) -> Result<DaemonSetView, ConvertError> {
    let namespace = ds
        .object
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let Some(name) = ds.object.metadata.name.clone().filter(|n| !n.is_empty()) else {
        return Err(field(
            &ds.origin,
            ds.origin.field("metadata.name"),
            "missing: every DaemonSet needs a name",
        ));
    };
    let template = ds
        .object
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let pod = k8s::Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: meta.labels,
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    let mut view = pod_view(&ds.origin, &pod, ctx)?;
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

/// Whether a (daemon) pod's node selector, required node affinity and tolerations admit `node`.
fn accepts(pod: &PodView, node: &ExistingNode) -> bool {
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
