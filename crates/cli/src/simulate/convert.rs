//! The manifests → the solver's [`Problem`], through the api crate's
//! [`karpenter_api::solver_input`] (shared with the controller). This module adds what only
//! simulate knows: which file and document each object came from, so every error and warning
//! names the file, the document, the object as written and the field path inside the document.

use std::collections::BTreeMap;

use karpenter_api::solver_input::{
    self as input, BoundPod, ConvertWarning, NamespaceIndex, Parts, PodContext, VolumeIndex,
};
use karpenter_solver::{ExistingNode, InstanceType, PodView, Problem};

use super::manifests::{Manifests, Origin, Source};
use super::pools::node_pools;

/// A manifest that reads fine as YAML but cannot be turned into the solver's model.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A field of an object is invalid.
    #[error("{origin}: {path}: {message}")]
    Field {
        /// The object (boxed: errors stay small on the happy path).
        origin: Box<Origin>,
        /// The field path as written, e.g. `spec.template.spec.containers[0].resources.requests.cpu`.
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

/// Where a path the api crate reports relative to a pod (`spec.containers[0]`,
/// `metadata.name`) is in the document: the pod spec is at the origin's spec path (a
/// workload's `spec.template.spec`, inside a List `items[i].spec`), other fields under the
/// object's prefix.
fn pod_path(origin: &Origin, path: &str) -> String {
    match path.strip_prefix("spec") {
        Some("") => origin.spec_field(""),
        Some(rest) => match rest.strip_prefix('.') {
            Some(below) => origin.spec_field(below),
            None => origin.field(path),
        },
        None => origin.field(path),
    }
}

/// An api error about a pod, located in the document (the object as written: for a workload's
/// pods, the workload).
fn pod_error(origin: &Origin, e: input::ConvertError) -> ConvertError {
    field(origin, pod_path(origin, &e.path), e.message)
}

/// An api error about any other object, whose paths only need the object's prefix.
fn object_error(origin: &Origin, e: input::ConvertError) -> ConvertError {
    field(origin, origin.field(&e.path), e.message)
}

/// A warning line for stderr, located like [`pod_error`].
fn pod_warning(origin: &Origin, w: &ConvertWarning) -> String {
    format!(
        "warning: {origin}: {}: {}",
        pod_path(origin, &w.path),
        w.message
    )
}

/// The solver's problem plus what the output needs to know about the input.
pub struct Converted {
    /// The problem.
    pub problem: Problem,
    /// Pods bound to a node in the input (`namespace/name` → node); not listed in the output.
    pub bound: BTreeMap<String, String>,
    /// Static NodePools (`spec.replicas`): not in the problem's NodePools ([`super::statics`]).
    pub static_pools: Vec<karpenter_api::v1::NodePool>,
}

/// A pending pod with the zones its volumes pin it to. Inputs often list pods without their
/// claims (or claims without their volumes), so a volume that cannot be judged is a warning
/// and leaves the pod unpinned, instead of failing the run the way it blocks the pod in a
/// cluster; the controller is stricter because there the objects will appear.
fn with_volumes(
    mut view: PodView,
    pod: &super::manifests::Sourced<Box<k8s_openapi::api::core::v1::Pod>>,
    volumes: &VolumeIndex<'_>,
    warnings: &mut Vec<String>,
) -> PodView {
    let uses_claims = pod
        .object
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter()
                .any(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
        });
    if !uses_claims {
        return view;
    }
    match input::volume_requirements(&pod.object, volumes) {
        Ok(reqs) => view.volume_requirements = reqs,
        Err(e) => warnings.push(format!(
            "warning: {}: {e}; the pod's volumes do not constrain its zone here",
            pod.origin
        )),
    }
    view
}

/// Converts everything. `instance_types` is the catalog.
pub fn problem(
    m: &Manifests,
    instance_types: Vec<InstanceType>,
    warnings: &mut Vec<String>,
) -> Result<Converted, ConvertError> {
    let namespaces = namespace_index(m);
    let ctx = PodContext {
        namespaces: &namespaces,
    };
    let mut pending: Vec<PodView> = Vec::new();
    let mut bound: Vec<BoundPod> = Vec::new();
    let mut seen: BTreeMap<String, &Origin> = BTreeMap::new();
    let mut notes = Vec::new();
    let volumes = VolumeIndex::new(
        m.volume_claims.iter().map(|c| &c.object),
        m.volumes.iter().map(|v| &v.object),
        m.storage_classes.iter().map(|s| &s.object),
    );
    for p in &m.pods {
        let phase = p.object.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue; // finished pods hold no resources
        }
        notes.clear();
        let view =
            input::pod_view(&p.object, &ctx, &mut notes).map_err(|e| pod_error(&p.origin, e))?;
        warnings.extend(notes.iter().map(|w| pod_warning(&p.origin, w)));
        let key = view.key();
        if let Some(first) = seen.insert(key.clone(), &p.origin) {
            let msg = format!("pod {key} is also defined by {first}; pod names must be unique");
            return Err(field(&p.origin, p.origin.field("metadata.name"), msg));
        }
        match p.object.spec.as_ref().and_then(|s| s.node_name.clone()) {
            Some(node) if !node.is_empty() => bound.push(BoundPod {
                node,
                pod: view,
                daemon_set: input::daemon_set_owner(&p.object),
            }),
            _ => pending.push(with_volumes(view, p, &volumes, warnings)),
        }
    }
    let mut daemon_sets = Vec::new();
    for ds in &m.daemon_sets {
        notes.clear();
        let view = input::daemon_set_view(&ds.object, &ctx, &mut notes)
            .map_err(|e| object_error(&ds.origin, e))?;
        // The DaemonSet's paths are document paths already; only a List prefix is missing.
        warnings.extend(notes.iter().map(|w| {
            format!(
                "warning: {}: {}: {}",
                ds.origin,
                ds.origin.field(&w.path),
                w.message
            )
        }));
        daemon_sets.push(view);
    }

    let mut nodes: Vec<ExistingNode> = Vec::new();
    let mut usage = BTreeMap::new();
    for n in &m.nodes {
        let node =
            input::existing_node(&n.object, Vec::new()).map_err(|e| object_error(&n.origin, e))?;
        if nodes.iter().any(|e| e.name == node.name) {
            let msg = format!("node {} is defined twice", node.name);
            return Err(field(&n.origin, n.origin.field("metadata.name"), msg));
        }
        input::add_pool_usage(&mut usage, &n.object).map_err(|e| object_error(&n.origin, e))?;
        nodes.push(node);
    }

    let mut static_pools = Vec::new();
    let (node_pools, min_values) =
        node_pools(&m.karpenter, &mut usage, &mut static_pools, warnings)?;
    let bound_keys: BTreeMap<String, String> = bound
        .iter()
        .map(|b| (b.pod.key(), b.node.clone()))
        .collect();
    let assembled = input::problem(Parts {
        instance_types,
        node_pools,
        pending,
        nodes,
        bound,
        daemon_sets,
        min_values,
    });
    let mut bound = bound_keys;
    for b in &assembled.unplaced {
        let key = b.pod.key();
        bound.remove(&key);
        let origin = seen.get(&key).map(|o| o.to_string()).unwrap_or_default();
        warnings.push(format!(
            "warning: {origin}: pod {key} is bound to node {:?}, which is not in the input; ignored",
            b.node
        ));
    }
    Ok(Converted {
        problem: assembled.problem,
        bound,
        static_pools,
    })
}

/// Namespaces from Namespace documents and from every pod's and DaemonSet's namespace: a file
/// rarely holds the Namespace objects, and a namespace that has pods exists.
fn namespace_index(m: &Manifests) -> NamespaceIndex {
    let mut index: NamespaceIndex = m.namespaces.iter().map(|ns| &ns.object).collect();
    let pod_namespaces = m.pods.iter().map(|p| &p.object.metadata);
    let ds_namespaces = m.daemon_sets.iter().map(|d| &d.object.metadata);
    for meta in pod_namespaces.chain(ds_namespaces) {
        index.ensure(meta.namespace.as_deref().unwrap_or("default"));
    }
    index
}
