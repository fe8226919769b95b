//! Kubernetes objects → the solver's model ([`karpenter_solver::Problem`]).
//!
//! Shared by `karpenter simulate` (objects read from YAML files) and the controller (objects from
//! the watch cache), so both see a pod, a Node, a DaemonSet or a NodePool the same way:
//! - [`pod_view`]: effective requests (through the solver's [`effective_pod_requests`]), node
//!   selector and affinity, tolerations, topology spread, pod (anti-)affinity, host ports;
//! - [`existing_node`], [`node_capacity`], [`add_pool_usage`]: Nodes and NodePool usage;
//! - [`daemon_set_view`]: a DaemonSet's pod template, tolerating what the DaemonSet controller
//!   makes every daemon pod tolerate;
//! - [`node_pool_view`], [`requirement`], [`template_taint`]: NodePools and their parts;
//! - [`overlay`], [`overlays`]: NodeOverlays (price and capacity changes to the catalog);
//! - [`volume_requirements`]: the zones (node requirements) a pod's claimed volumes pin it to;
//! - [`disruption`]: the disruption planner's facts (node and pod states, NodePool policies,
//!   PodDisruptionBudgets);
//! - [`static_node_claim`]: the NodeClaim a static NodePool launches (its template alone);
//! - [`problem`]: puts converted pieces together (bound pods onto their nodes, missing daemon
//!   pods onto the nodes that would run them).
//!
//! Objects may never have passed an apiserver (simulate's files), so the checks the apiserver
//! would make on the fields we interpret (operators, effects, `maxSkew`, port ranges) are made
//! here. Errors and warnings name the object and the field path relative to the object
//! (`spec.containers[0].resources.requests.cpu`); a caller that knows more (a file and a
//! document) wraps them.
//!
//! [`effective_pod_requests`]: karpenter_solver::effective_pod_requests

pub mod disruption;
mod nodes;
mod overlays;
mod pods;
mod pools;
mod problem;
mod statics;
mod topology;
mod volumes;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use karpenter_solver::Resources;
use karpenter_solver::quantity::parse_for_resource;

pub use nodes::{
    UNSCHEDULABLE_TAINT, add_pool_usage, daemon_set_view, existing_node, node_capacity, pool_usage,
    runs_on,
};
pub use overlays::{overlay, overlays};
pub use pods::{PodContext, PodObject, pod_requests, pod_view};
pub(crate) use pools::requirement_of;
pub use pools::{claim_requirements, min_values, node_pool_view, requirement, template_taint};
pub use problem::{Assembled, BoundPod, Parts, daemon_set_owner, problem};
pub use statics::static_node_claim;
pub use topology::{NO_NAMESPACE, NamespaceIndex};
pub use volumes::{VolumeIndex, volume_requirements};

/// The pseudo-resource that counts a NodePool's nodes in its limits and usage.
pub const NODES: &str = "nodes";

/// An object that cannot be turned into the solver's model.
///
/// The message reads `"{object}: {path}: {message}"`, e.g.
/// `Pod shop/web-0: spec.containers[0].resources.requests.cpu: ...`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {path}: {message}")]
pub struct ConvertError {
    /// `Kind namespace/name` of the object, e.g. `Pod shop/web-0`.
    pub object: String,
    /// The field path within the object, as written in YAML, e.g. `spec.tolerations[0].effect`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A field that was read but is not (fully) modelled by the solver; the conversion went on
/// without it. Displayed like a [`ConvertError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertWarning {
    /// `Kind namespace/name` of the object.
    pub object: String,
    /// The field path within the object.
    pub path: String,
    /// What was ignored and how it is treated instead.
    pub message: String,
}

impl fmt::Display for ConvertWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.path, self.message)
    }
}

/// Where the fields being converted live: the object, and the path of the pod spec inside it
/// (`spec` for a Pod, `spec.template.spec` for a DaemonSet), so that shared code (a pod spec's
/// conversion) reports paths relative to the object the caller passed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct At<'a> {
    /// `Kind namespace/name`.
    pub object: &'a str,
    /// Path of the pod spec; empty for objects without one.
    pub spec: &'a str,
}

impl At<'_> {
    /// The path of `field` below the pod spec, e.g. `spec.containers[0]`.
    pub fn spec_field(&self, field: &str) -> String {
        match (self.spec.is_empty(), field.is_empty()) {
            (_, true) => self.spec.to_owned(),
            (true, false) => field.to_owned(),
            (false, false) => format!("{}.{field}", self.spec),
        }
    }

    /// An error at `path` (a full path within the object).
    pub fn error(&self, path: impl Into<String>, message: impl Into<String>) -> ConvertError {
        ConvertError {
            object: self.object.to_owned(),
            path: path.into(),
            message: message.into(),
        }
    }

    /// A warning at `path` (a full path within the object).
    pub fn warning(&self, path: impl Into<String>, message: impl Into<String>) -> ConvertWarning {
        ConvertWarning {
            object: self.object.to_owned(),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// `Kind namespace/name` (or `Kind name` for cluster-scoped objects), `<unnamed>` standing in
/// for a missing name, as errors name objects.
pub(crate) fn describe(kind: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    let name = name.filter(|n| !n.is_empty()).unwrap_or("<unnamed>");
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Parses a resource list (`{cpu: 500m, memory: 1Gi}`) exactly (never through floating point).
///
/// `object` names the object and `path` the list's field path for errors, which name
/// `path.<resource>`. Negative amounts are refused: no request, capacity or limit can be
/// negative, and the solver's arithmetic assumes so.
pub fn parse_resources(
    object: &str,
    path: &str,
    list: &BTreeMap<String, Quantity>,
) -> Result<Resources, ConvertError> {
    let at = At { object, spec: "" };
    let mut out = Resources::new();
    for (name, q) in list {
        let field = || format!("{path}.{name}");
        let v = parse_for_resource(name, &q.0).map_err(|e| at.error(field(), e.to_string()))?;
        if v < 0 {
            return Err(at.error(field(), format!("{:?} must not be negative", q.0)));
        }
        out.add_one(name, v);
    }
    Ok(out)
}
