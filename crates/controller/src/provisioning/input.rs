//! Kubernetes objects → solver model, for the provisioner.
//!
//! A thin adapter: effective requests, node selector, required and preferred node affinity,
//! tolerations, host ports and NodePool templates. Topology spread and pod (anti-)affinity are
//! not converted yet: the full conversion is being written for `karpenter simulate` and is to
//! move to a shared module, which should replace this file.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use karpenter_api::v1::{self, NodePool};
use karpenter_solver::quantity::parse_for_resource;
use karpenter_solver::{
    ContainerRequests, DaemonSetView, HostPort, NodePoolView, NodeSelectorRequirement,
    NodeSelectorTerm, Operator, PodView, Resources, Taint, TaintEffect, Toleration,
    TolerationOperator, WeightedNodeSelectorTerm, effective_pod_requests,
};

/// Parses a resource list; unparsable quantities are an error naming the resource.
pub fn resources(list: Option<&BTreeMap<String, Quantity>>) -> Result<Resources, String> {
    let mut out = Resources::new();
    for (name, q) in list.into_iter().flatten() {
        let v = parse_for_resource(name, &q.0).map_err(|e| format!("{name}: {e}"))?;
        out.add_one(name, v);
    }
    Ok(out)
}

fn container_requests(c: &k8s::Container) -> Result<Resources, String> {
    resources(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// Converts a pod (or a pod template, for DaemonSets).
pub fn pod_view(
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    spec: &k8s::PodSpec,
) -> Result<PodView, String> {
    let containers = spec
        .containers
        .iter()
        .map(container_requests)
        .collect::<Result<Vec<_>, _>>()?;
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            Ok(ContainerRequests {
                requests: container_requests(c)?,
                sidecar: c.restart_policy.as_deref() == Some("Always"),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let overhead = resources(spec.overhead.as_ref())?;
    let node_affinity = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref());
    let required = node_affinity
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|s| {
            s.node_selector_terms
                .iter()
                .map(term)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let preferred = node_affinity
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    Ok(WeightedNodeSelectorTerm {
                        weight: p.weight,
                        term: term(&p.preference)?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .transpose()?
        .unwrap_or_default();
    let mut host_ports = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            if let Some(port) = p.host_port.filter(|p| *p > 0) {
                host_ports.push(HostPort {
                    port: u16::try_from(port)
                        .map_err(|_| format!("hostPort {port} out of range"))?,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    Ok(PodView {
        namespace: namespace.to_string(),
        name: name.to_string(),
        labels,
        requests: effective_pod_requests(&containers, &init, &overhead),
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        required_node_affinity: required,
        preferred_node_affinity: preferred,
        tolerations: spec
            .tolerations
            .iter()
            .flatten()
            .map(toleration)
            .collect::<Result<Vec<_>, _>>()?,
        host_ports,
        ..PodView::default()
    })
}

/// Converts a Pod object.
pub fn pod(p: &k8s::Pod) -> Result<PodView, String> {
    let empty = k8s::PodSpec::default();
    pod_view(
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or_default(),
        p.metadata.labels.clone().unwrap_or_default(),
        p.spec.as_ref().unwrap_or(&empty),
    )
}

fn term(t: &k8s::NodeSelectorTerm) -> Result<NodeSelectorTerm, String> {
    if t.match_fields.as_ref().is_some_and(|f| !f.is_empty()) {
        return Err("matchFields in node affinity is not supported".into());
    }
    Ok(NodeSelectorTerm {
        match_expressions: t
            .match_expressions
            .iter()
            .flatten()
            .map(|r| {
                Ok(NodeSelectorRequirement {
                    key: r.key.clone(),
                    operator: match r.operator.as_str() {
                        "In" => Operator::In,
                        "NotIn" => Operator::NotIn,
                        "Exists" => Operator::Exists,
                        "DoesNotExist" => Operator::DoesNotExist,
                        "Gt" => Operator::Gt,
                        "Lt" => Operator::Lt,
                        other => return Err(format!("unsupported operator {other:?}")),
                    },
                    values: r.values.clone().unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?,
    })
}

fn effect(s: &str) -> Result<TaintEffect, String> {
    match s {
        "NoSchedule" => Ok(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Ok(TaintEffect::PreferNoSchedule),
        "NoExecute" => Ok(TaintEffect::NoExecute),
        other => Err(format!("unknown taint effect {other:?}")),
    }
}

fn toleration(t: &k8s::Toleration) -> Result<Toleration, String> {
    Ok(Toleration {
        key: t.key.clone().unwrap_or_default(),
        operator: match t.operator.as_deref() {
            Some("Exists") => TolerationOperator::Exists,
            _ => TolerationOperator::Equal,
        },
        value: t.value.clone().unwrap_or_default(),
        effect: t
            .effect
            .as_deref()
            .filter(|e| !e.is_empty())
            .map(effect)
            .transpose()?,
    })
}

/// Converts a Node taint.
pub fn node_taint(t: &k8s::Taint) -> Result<Taint, String> {
    Ok(Taint::new(
        &t.key,
        t.value.as_deref().unwrap_or_default(),
        effect(&t.effect)?,
    ))
}

/// Converts a NodePool/NodeClaim taint.
pub fn template_taint(t: &v1::Taint) -> Taint {
    Taint::new(
        &t.key,
        t.value.as_deref().unwrap_or_default(),
        match t.effect {
            v1::TaintEffect::NoSchedule => TaintEffect::NoSchedule,
            v1::TaintEffect::PreferNoSchedule => TaintEffect::PreferNoSchedule,
            v1::TaintEffect::NoExecute => TaintEffect::NoExecute,
        },
    )
}

/// Converts a NodePool/NodeClaim requirement.
pub fn requirement(r: &v1::NodeSelectorRequirementWithMinValues) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: r.key.clone(),
        operator: match r.operator {
            v1::Operator::In => Operator::In,
            v1::Operator::NotIn => Operator::NotIn,
            v1::Operator::Exists => Operator::Exists,
            v1::Operator::DoesNotExist => Operator::DoesNotExist,
            v1::Operator::Gt => Operator::Gt,
            v1::Operator::Lt => Operator::Lt,
            v1::Operator::Gte => Operator::Gte,
            v1::Operator::Lte => Operator::Lte,
        },
        values: r.values.clone(),
    }
}

/// Converts a NodePool; `usage` is the capacity its nodes already have (against `limits`).
pub fn node_pool_view(
    pool: &NodePool,
    usage: Resources,
    instance_types: Option<Vec<String>>,
) -> Result<NodePoolView, String> {
    let t = &pool.spec.template;
    Ok(NodePoolView {
        name: pool.metadata.name.clone().unwrap_or_default(),
        weight: pool.spec.weight.unwrap_or(0),
        requirements: t.spec.requirements.iter().map(requirement).collect(),
        labels: t.metadata.labels.clone(),
        taints: t.spec.taints.iter().map(template_taint).collect(),
        startup_taints: t.spec.startup_taints.iter().map(template_taint).collect(),
        limits: if pool.spec.limits.is_empty() {
            None
        } else {
            Some(resources(Some(&pool.spec.limits))?)
        },
        usage,
        instance_types,
    })
}

/// Converts a DaemonSet (its pod template).
pub fn daemon_set_view(ds: &DaemonSet) -> Result<DaemonSetView, String> {
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let template = ds.spec.as_ref().map(|s| &s.template);
    let empty = k8s::PodSpec::default();
    let spec = template.and_then(|t| t.spec.as_ref()).unwrap_or(&empty);
    let labels = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    Ok(DaemonSetView {
        pod: pod_view(&namespace, &name, labels, spec)?,
        namespace,
        name,
    })
}
