//! Pod-to-pod constraints of a pod spec: topology spread and pod (anti-)affinity, with their
//! label selectors and namespace resolution.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use karpenter_solver::{
    LabelSelector, Labels, PodAffinityTerm, SelectorOperator, SelectorRequirement,
    TopologySpreadConstraint, WeightedPodAffinityTerm, WhenUnsatisfiable,
};

use super::convert::{ConvertError, field};
use super::manifests::Origin;

/// A namespace name no real namespace can have: stands for "the namespaceSelector matched no
/// namespace", because an empty list would mean "the pod's own namespace" to the solver.
const NO_NAMESPACE: &str = "<no namespace matched>";

/// Namespace name → labels, from the Namespace documents and the namespaces pods live in (which
/// carry only the `kubernetes.io/metadata.name` label the apiserver sets on every namespace).
pub type NamespaceIndex = BTreeMap<String, Labels>;

/// A `metav1.LabelSelector`.
pub fn label_selector(
    origin: &Origin,
    at: &str,
    s: &meta::LabelSelector,
) -> Result<LabelSelector, ConvertError> {
    let match_expressions = s
        .match_expressions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let operator = match e.operator.as_str() {
                "In" => SelectorOperator::In,
                "NotIn" => SelectorOperator::NotIn,
                "Exists" => SelectorOperator::Exists,
                "DoesNotExist" => SelectorOperator::DoesNotExist,
                other => {
                    return Err(field(
                        origin,
                        format!("{at}.matchExpressions[{i}].operator"),
                        format!("unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"),
                    ));
                }
            };
            Ok(SelectorRequirement {
                key: e.key.clone(),
                operator,
                values: e.values.clone().unwrap_or_default(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

pub fn topology_spread(
    terms: &TermContext<'_>,
    spec: &k8s::PodSpec,
    warnings: &mut Vec<String>,
) -> Result<Vec<TopologySpreadConstraint>, ConvertError> {
    let origin = terms.origin;
    let list = spec
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default();
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let at = |f: &str| origin.spec_field(&format!("topologySpreadConstraints[{i}].{f}"));
        if c.topology_key.is_empty() {
            let msg = "missing: a topology spread constraint needs a topologyKey";
            return Err(field(origin, at("topologyKey"), msg));
        }
        if c.max_skew < 1 {
            return Err(field(
                origin,
                at("maxSkew"),
                format!("{} must be at least 1", c.max_skew),
            ));
        }
        if let Some(m) = c.min_domains.filter(|m| *m < 1) {
            return Err(field(
                origin,
                at("minDomains"),
                format!("{m} must be at least 1"),
            ));
        }
        let when_unsatisfiable = match c.when_unsatisfiable.as_str() {
            "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
            "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
            other => {
                let msg =
                    format!("unknown value {other:?} (expected DoNotSchedule or ScheduleAnyway)");
                return Err(field(origin, at("whenUnsatisfiable"), msg));
            }
        };
        let ignore_node_affinity = match c.node_affinity_policy.as_deref() {
            None | Some("Honor") => false,
            Some("Ignore") => true,
            Some(other) => {
                let msg = format!("unknown value {other:?} (expected Honor or Ignore)");
                return Err(field(origin, at("nodeAffinityPolicy"), msg));
            }
        };
        if c.node_taints_policy.as_deref() == Some("Honor") {
            warnings.push(format!(
                "warning: {origin}: {}: Honor is not modelled by simulate; domains are counted as with Ignore",
                at("nodeTaintsPolicy")
            ));
        }
        let label_selector = c
            .label_selector
            .as_ref()
            .map(|s| label_selector(origin, &at("labelSelector"), s))
            .transpose()?;
        out.push(TopologySpreadConstraint {
            max_skew: c.max_skew,
            topology_key: c.topology_key.clone(),
            when_unsatisfiable,
            label_selector,
            min_domains: c.min_domains,
            match_label_keys: c.match_label_keys.clone().unwrap_or_default(),
            ignore_node_affinity,
        });
    }
    Ok(out)
}

/// What pod (anti-)affinity terms are resolved against.
pub struct TermContext<'a> {
    /// The pod's origin, for error paths.
    pub origin: &'a Origin,
    /// The pod's labels (`matchLabelKeys` take their values from them).
    pub labels: &'a Labels,
    /// Known namespaces.
    pub namespaces: &'a NamespaceIndex,
}

impl TermContext<'_> {
    pub fn required(
        &self,
        base: &str,
        terms: Option<&[k8s::PodAffinityTerm]>,
    ) -> Result<Vec<PodAffinityTerm>, ConvertError> {
        let at = format!("{base}.requiredDuringSchedulingIgnoredDuringExecution");
        terms
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, t)| self.term(&format!("{at}[{i}]"), t))
            .collect()
    }

    pub fn preferred(
        &self,
        base: &str,
        terms: Option<&[k8s::WeightedPodAffinityTerm]>,
    ) -> Result<Vec<WeightedPodAffinityTerm>, ConvertError> {
        let at = format!("{base}.preferredDuringSchedulingIgnoredDuringExecution");
        let mut out = Vec::new();
        for (i, w) in terms.unwrap_or_default().iter().enumerate() {
            if !(1..=100).contains(&w.weight) {
                let path = self.origin.spec_field(&format!("{at}[{i}].weight"));
                return Err(field(
                    self.origin,
                    path,
                    format!("{} is not in 1..100", w.weight),
                ));
            }
            let term = self.term(&format!("{at}[{i}].podAffinityTerm"), &w.pod_affinity_term)?;
            out.push(WeightedPodAffinityTerm {
                weight: w.weight,
                term,
            });
        }
        Ok(out)
    }

    /// One term. `matchLabelKeys`/`mismatchLabelKeys` are merged into the selector with this
    /// pod's values (as the apiserver does); `namespaceSelector` is resolved against the known
    /// namespaces, `{}` meaning all of them.
    fn term(&self, at: &str, t: &k8s::PodAffinityTerm) -> Result<PodAffinityTerm, ConvertError> {
        let origin = self.origin;
        if t.topology_key.is_empty() {
            let path = origin.spec_field(&format!("{at}.topologyKey"));
            return Err(field(
                origin,
                path,
                "missing: a pod affinity term needs a topologyKey",
            ));
        }
        let mut selector = t
            .label_selector
            .as_ref()
            .map(|s| {
                label_selector(
                    origin,
                    &origin.spec_field(&format!("{at}.labelSelector")),
                    s,
                )
            })
            .transpose()?;
        if let Some(sel) = selector.as_mut() {
            let keys = |k: &Option<Vec<String>>| k.clone().unwrap_or_default();
            for (keys, operator) in [
                (keys(&t.match_label_keys), SelectorOperator::In),
                (keys(&t.mismatch_label_keys), SelectorOperator::NotIn),
            ] {
                for key in keys {
                    if let Some(v) = self.labels.get(&key) {
                        sel.match_expressions.push(SelectorRequirement {
                            key,
                            operator,
                            values: vec![v.clone()],
                        });
                    }
                }
            }
        }
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        let mut all_namespaces = false;
        if let Some(ns_sel) = &t.namespace_selector {
            let path = origin.spec_field(&format!("{at}.namespaceSelector"));
            let ns_sel = label_selector(origin, &path, ns_sel)?;
            if ns_sel == LabelSelector::default() {
                all_namespaces = true;
            } else {
                let matched = self.namespaces.iter().filter(|(_, l)| ns_sel.matches(l));
                namespaces.extend(matched.map(|(n, _)| n.clone()));
                if namespaces.is_empty() {
                    namespaces.push(NO_NAMESPACE.to_owned());
                }
            }
        }
        namespaces.sort();
        namespaces.dedup();
        Ok(PodAffinityTerm {
            label_selector: selector,
            namespaces,
            all_namespaces,
            topology_key: t.topology_key.clone(),
        })
    }
}
