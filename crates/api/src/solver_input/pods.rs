//! A Kubernetes pod → the solver's [`PodView`]: effective requests, node selector and
//! affinity, tolerations and host ports here; topology spread and pod (anti-)affinity in
//! [`super::topology`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use karpenter_solver::{
    ContainerRequests, HostPort, Labels, NodeSelectorRequirement, NodeSelectorTerm, Operator,
    PodView, Resources, TaintEffect, Toleration, TolerationOperator, WeightedNodeSelectorTerm,
    effective_pod_requests,
};

use super::topology::{NamespaceIndex, TermContext, topology_spread};
use super::{At, ConvertError, ConvertWarning, describe, parse_resources};

/// What the conversion reads of a pod: its metadata and its spec. The Kubernetes [`k8s::Pod`]
/// is one; a store may keep pods in another shape (the controller shares one spec between the
/// identical pods of a ReplicaSet, which most of a pod's memory is).
pub trait PodObject {
    /// `metadata`.
    fn metadata(&self) -> &ObjectMeta;
    /// `spec`, if the object has one.
    fn spec(&self) -> Option<&k8s::PodSpec>;
}

impl PodObject for k8s::Pod {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn spec(&self) -> Option<&k8s::PodSpec> {
        self.spec.as_ref()
    }
}

impl<T: PodObject + ?Sized> PodObject for &T {
    fn metadata(&self) -> &ObjectMeta {
        (**self).metadata()
    }

    fn spec(&self) -> Option<&k8s::PodSpec> {
        (**self).spec()
    }
}

impl<T: PodObject + ?Sized> PodObject for Box<T> {
    fn metadata(&self) -> &ObjectMeta {
        (**self).metadata()
    }

    fn spec(&self) -> Option<&k8s::PodSpec> {
        (**self).spec()
    }
}

impl<T: PodObject + ?Sized> PodObject for std::sync::Arc<T> {
    fn metadata(&self) -> &ObjectMeta {
        (**self).metadata()
    }

    fn spec(&self) -> Option<&k8s::PodSpec> {
        (**self).spec()
    }
}

/// What converting a pod needs besides the pod.
#[derive(Clone, Copy, Debug)]
pub struct PodContext<'a> {
    /// Known namespaces and their labels, to resolve pod affinity `namespaceSelector`s.
    pub namespaces: &'a NamespaceIndex,
}

/// Converts a pod (namespace defaulted to `default`, as the apiserver does).
///
/// Errors and warnings name the object `Pod namespace/name` and paths from the pod
/// (`spec.containers[0]...`). Fields the solver does not model (`matchFields`,
/// `nodeTaintsPolicy: Honor`) are dropped with a warning pushed to `warnings`.
pub fn pod_view(
    pod: &(impl PodObject + ?Sized),
    ctx: &PodContext<'_>,
    warnings: &mut Vec<ConvertWarning>,
) -> Result<PodView, ConvertError> {
    let namespace = pod.metadata().namespace.as_deref().unwrap_or("default");
    let object = describe("Pod", Some(namespace), pod.metadata().name.as_deref());
    let at = At {
        object: &object,
        spec: "spec",
    };
    pod_view_at(at, pod, ctx, warnings)
}

/// [`pod_view`] with errors located at `at` (a DaemonSet's template is converted as a pod).
pub(crate) fn pod_view_at(
    loc: At<'_>,
    pod: &(impl PodObject + ?Sized),
    ctx: &PodContext<'_>,
    warnings: &mut Vec<ConvertWarning>,
) -> Result<PodView, ConvertError> {
    let namespace = pod.metadata().namespace.as_deref().unwrap_or("default");
    let Some(name) = pod.metadata().name.as_deref().filter(|n| !n.is_empty()) else {
        return Err(loc.error("metadata.name", "missing: every pod needs a name"));
    };
    let labels: Labels = pod.metadata().labels.clone().unwrap_or_default();
    let empty = k8s::PodSpec::default();
    let spec = pod.spec().unwrap_or(&empty);
    let affinity = spec.affinity.as_ref();
    let node_affinity = affinity.and_then(|a| a.node_affinity.as_ref());
    let pod_affinity = affinity.and_then(|a| a.pod_affinity.as_ref());
    let anti_affinity = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
    let terms = TermContext {
        at: loc,
        labels: &labels,
        namespaces: ctx.namespaces,
    };
    let (required_node_affinity, preferred_node_affinity) =
        node_affinity_terms(loc, node_affinity, warnings)?;
    Ok(PodView {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        requests: requests(loc, spec)?,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        required_node_affinity,
        preferred_node_affinity,
        tolerations: tolerations(loc, spec.tolerations.as_deref().unwrap_or_default())?,
        topology_spread: topology_spread(&terms, spec, warnings)?,
        pod_affinity: terms.required(
            "affinity.podAffinity",
            pod_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
        preferred_pod_affinity: terms.preferred(
            "affinity.podAffinity",
            pod_affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
        pod_anti_affinity: terms.required(
            "affinity.podAntiAffinity",
            anti_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
        preferred_pod_anti_affinity: terms.preferred(
            "affinity.podAntiAffinity",
            anti_affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
        host_ports: host_ports(loc, spec)?,
        labels,
        volume_requirements: Vec::new(),
    })
}

/// A pod's effective requests ([`effective_pod_requests`], one `pods` slot included), without
/// converting the rest of it: for per-node totals (metrics), where a full [`pod_view`] per pod
/// would cost far more than the sum needs.
pub fn pod_requests(pod: &(impl PodObject + ?Sized)) -> Result<Resources, ConvertError> {
    let namespace = pod.metadata().namespace.as_deref().unwrap_or("default");
    let object = describe("Pod", Some(namespace), pod.metadata().name.as_deref());
    let at = At {
        object: &object,
        spec: "spec",
    };
    let empty = k8s::PodSpec::default();
    requests(at, pod.spec().unwrap_or(&empty))
}

/// Effective requests: containers, sidecar and ordinary init containers, pod overhead.
fn requests(loc: At<'_>, spec: &k8s::PodSpec) -> Result<Resources, ConvertError> {
    let containers = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| container_requests(loc, &format!("containers[{i}]"), c))
        .collect::<Result<Vec<_>, _>>()?;
    let init = spec
        .init_containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(ContainerRequests {
                requests: container_requests(loc, &format!("initContainers[{i}]"), c)?,
                sidecar: is_sidecar(c),
            })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    let overhead = match &spec.overhead {
        Some(o) => parse_resources(loc.object, &loc.spec_field("overhead"), o)?,
        None => Resources::new(),
    };
    Ok(effective_pod_requests(&containers, &init, &overhead))
}

fn is_sidecar(c: &k8s::Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// A container's requests; a resource with a limit but no request requests its limit, as the
/// apiserver defaults it (objects read from files never went through one).
fn container_requests(
    loc: At<'_>,
    at: &str,
    c: &k8s::Container,
) -> Result<Resources, ConvertError> {
    let Some(r) = &c.resources else {
        return Ok(Resources::new());
    };
    let requests = r.requests.clone().unwrap_or_default();
    let mut out = parse_resources(
        loc.object,
        &loc.spec_field(&format!("{at}.resources.requests")),
        &requests,
    )?;
    if let Some(limits) = &r.limits {
        let defaulted: BTreeMap<_, _> = limits
            .iter()
            .filter(|(k, _)| !requests.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let path = loc.spec_field(&format!("{at}.resources.limits"));
        out.add(&parse_resources(loc.object, &path, &defaulted)?);
    }
    Ok(out)
}

/// Required node-affinity terms (ORed) and preferred ones. `matchFields` (only `metadata.name`
/// exists) cannot select a node that does not exist yet, and the solver plans new nodes, so it
/// is dropped with a warning.
fn node_affinity_terms(
    loc: At<'_>,
    affinity: Option<&k8s::NodeAffinity>,
    warnings: &mut Vec<ConvertWarning>,
) -> Result<(Vec<NodeSelectorTerm>, Vec<WeightedNodeSelectorTerm>), ConvertError> {
    let Some(affinity) = affinity else {
        return Ok((Vec::new(), Vec::new()));
    };
    let base = "affinity.nodeAffinity";
    let mut required = Vec::new();
    if let Some(sel) = &affinity.required_during_scheduling_ignored_during_execution {
        for (i, term) in sel.node_selector_terms.iter().enumerate() {
            let at = format!(
                "{base}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]"
            );
            if let Some(t) = node_selector_term(loc, &at, term, warnings)? {
                required.push(t);
            }
        }
    }
    let mut preferred = Vec::new();
    let prefs = affinity
        .preferred_during_scheduling_ignored_during_execution
        .as_deref();
    for (i, p) in prefs.unwrap_or_default().iter().enumerate() {
        let at = format!("{base}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        if !(1..=100).contains(&p.weight) {
            let path = loc.spec_field(&format!("{at}.weight"));
            return Err(loc.error(path, format!("{} is not in 1..100", p.weight)));
        }
        if let Some(term) =
            node_selector_term(loc, &format!("{at}.preference"), &p.preference, warnings)?
        {
            preferred.push(WeightedNodeSelectorTerm {
                weight: p.weight,
                term,
            });
        }
    }
    Ok((required, preferred))
}

/// One term; `None` when only unsupported `matchFields` were in it.
fn node_selector_term(
    loc: At<'_>,
    at: &str,
    term: &k8s::NodeSelectorTerm,
    warnings: &mut Vec<ConvertWarning>,
) -> Result<Option<NodeSelectorTerm>, ConvertError> {
    if term.match_fields.as_ref().is_some_and(|f| !f.is_empty()) {
        warnings.push(loc.warning(
            loc.spec_field(&format!("{at}.matchFields")),
            "matchFields is not modelled (a new node has no name yet to match); ignored",
        ));
    }
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    if exprs.is_empty() {
        return Ok(None);
    }
    let match_expressions = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| node_requirement(loc, &format!("{at}.matchExpressions[{i}]"), e))
        .collect::<Result<_, _>>()?;
    Ok(Some(NodeSelectorTerm { match_expressions }))
}

fn node_requirement(
    loc: At<'_>,
    at: &str,
    e: &k8s::NodeSelectorRequirement,
) -> Result<NodeSelectorRequirement, ConvertError> {
    let operator = match e.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::Gt,
        "Lt" => Operator::Lt,
        other => {
            return Err(loc.error(
                loc.spec_field(&format!("{at}.operator")),
                format!(
                    "unknown operator {other:?} (expected In, NotIn, Exists, DoesNotExist, Gt or Lt)"
                ),
            ));
        }
    };
    if e.key.is_empty() {
        let path = loc.spec_field(&format!("{at}.key"));
        return Err(loc.error(path, "missing: a requirement needs a key"));
    }
    let values = e.values.clone().unwrap_or_default();
    let bad =
        |message: &str| loc.error(loc.spec_field(&format!("{at}.values")), message.to_owned());
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => {
            return Err(bad("must have at least one value for In and NotIn"));
        }
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
            return Err(bad("must be empty for Exists and DoesNotExist"));
        }
        Operator::Gt | Operator::Lt
            if values.len() != 1 || values[0].trim().parse::<i64>().is_err() =>
        {
            return Err(bad("must be a single integer for Gt and Lt"));
        }
        _ => {}
    }
    Ok(NodeSelectorRequirement {
        key: e.key.clone(),
        operator,
        values,
    })
}

/// Parses a taint effect (`""` means "any effect" where the caller allows it).
pub(crate) fn taint_effect(
    loc: At<'_>,
    path: &str,
    effect: &str,
) -> Result<TaintEffect, ConvertError> {
    match effect {
        "NoSchedule" => Ok(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Ok(TaintEffect::PreferNoSchedule),
        "NoExecute" => Ok(TaintEffect::NoExecute),
        other => Err(loc.error(
            path,
            format!(
                "unknown effect {other:?} (expected NoSchedule, PreferNoSchedule or NoExecute)"
            ),
        )),
    }
}

fn tolerations(loc: At<'_>, tols: &[k8s::Toleration]) -> Result<Vec<Toleration>, ConvertError> {
    let mut out = Vec::with_capacity(tols.len());
    for (i, t) in tols.iter().enumerate() {
        let at = |f: &str| loc.spec_field(&format!("tolerations[{i}].{f}"));
        let key = t.key.clone().unwrap_or_default();
        let value = t.value.clone().unwrap_or_default();
        let operator = match t.operator.as_deref().unwrap_or("Equal") {
            "Equal" | "" => TolerationOperator::Equal,
            "Exists" => TolerationOperator::Exists,
            other => {
                let msg = format!("unknown operator {other:?} (expected Equal or Exists)");
                return Err(loc.error(at("operator"), msg));
            }
        };
        if operator == TolerationOperator::Equal && key.is_empty() {
            let msg = "operator must be Exists when the key is empty";
            return Err(loc.error(at("operator"), msg));
        }
        if operator == TolerationOperator::Exists && !value.is_empty() {
            let msg = "must be empty when the operator is Exists";
            return Err(loc.error(at("value"), msg));
        }
        let effect = match t.effect.as_deref().unwrap_or("") {
            "" => None,
            e => Some(taint_effect(loc, &at("effect"), e)?),
        };
        out.push(Toleration {
            key,
            operator,
            value,
            effect,
        });
    }
    Ok(out)
}

/// Host ports of the containers and of sidecar init containers (which keep running).
fn host_ports(loc: At<'_>, spec: &k8s::PodSpec) -> Result<Vec<HostPort>, ConvertError> {
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let containers = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("containers[{i}]"), c))
        .chain(
            inits
                .iter()
                .enumerate()
                .filter(|(_, c)| is_sidecar(c))
                .map(|(i, c)| (format!("initContainers[{i}]"), c)),
        );
    let mut out = Vec::new();
    for (at, c) in containers {
        for (j, p) in c.ports.as_deref().unwrap_or_default().iter().enumerate() {
            let Some(port) = p.host_port.filter(|p| *p != 0) else {
                continue;
            };
            let port = match u16::try_from(port) {
                Ok(p) if p > 0 => p,
                _ => {
                    let path = loc.spec_field(&format!("{at}.ports[{j}].hostPort"));
                    let msg = format!("{port} is not a valid port (1..65535)");
                    return Err(loc.error(path, msg));
                }
            };
            out.push(HostPort {
                port,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    Ok(out)
}
