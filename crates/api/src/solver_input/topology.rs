//! Pod-to-pod constraints of a pod spec: topology spread and pod (anti-)affinity, with their
//! label selectors and namespace resolution.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use karpenter_solver::{
    LabelSelector, Labels, PodAffinityTerm, SelectorOperator, SelectorRequirement,
    TopologySpreadConstraint, WeightedPodAffinityTerm, WhenUnsatisfiable,
};

use super::{At, ConvertError, ConvertWarning};

/// A namespace name no real namespace can have: stands for "the namespaceSelector matched no
/// namespace", because an empty list would mean "the pod's own namespace" to the solver.
pub const NO_NAMESPACE: &str = "<no namespace matched>";

/// The label the apiserver sets on every namespace, so selectors can pick namespaces by name.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Namespace name → labels: what pod affinity `namespaceSelector`s are resolved against.
///
/// Fill it from the Namespace objects ([`NamespaceIndex::insert`]) and, where Namespace objects
/// may be missing (simulate's files), from the namespaces pods live in
/// ([`NamespaceIndex::ensure`]). Every entry carries `kubernetes.io/metadata.name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceIndex(BTreeMap<String, Labels>);

impl NamespaceIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a Namespace with its labels; a nameless one is ignored (it cannot be
    /// referred to).
    pub fn insert(&mut self, ns: &k8s::Namespace) {
        let Some(name) = ns.metadata.name.clone().filter(|n| !n.is_empty()) else {
            return;
        };
        let mut labels = ns.metadata.labels.clone().unwrap_or_default();
        labels.insert(NAME_LABEL.to_owned(), name.clone());
        self.0.insert(name, labels);
    }

    /// Makes sure `name` is known, with only the name label when no Namespace object was seen.
    pub fn ensure(&mut self, name: &str) {
        self.0
            .entry(name.to_owned())
            .or_insert_with(|| BTreeMap::from([(NAME_LABEL.to_owned(), name.to_owned())]));
    }

    /// The labels of a known namespace.
    pub fn labels(&self, name: &str) -> Option<&Labels> {
        self.0.get(name)
    }

    /// Names of the namespaces whose labels `selector` matches, in name order.
    pub fn matching<'a>(&'a self, selector: &'a LabelSelector) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(|(_, labels)| selector.matches(labels))
            .map(|(name, _)| name.as_str())
    }
}

impl<'a> FromIterator<&'a k8s::Namespace> for NamespaceIndex {
    fn from_iter<I: IntoIterator<Item = &'a k8s::Namespace>>(iter: I) -> Self {
        let mut index = Self::new();
        for ns in iter {
            index.insert(ns);
        }
        index
    }
}

/// A `metav1.LabelSelector`; `at` is its field path.
pub(crate) fn label_selector(
    loc: At<'_>,
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
                    return Err(loc.error(
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

/// A pod spec's topology spread constraints. `nodeTaintsPolicy: Honor` is not modelled by the
/// solver (domains are counted as with `Ignore`), which is said in a warning.
pub(crate) fn topology_spread(
    terms: &TermContext<'_>,
    spec: &k8s::PodSpec,
    warnings: &mut Vec<ConvertWarning>,
) -> Result<Vec<TopologySpreadConstraint>, ConvertError> {
    let loc = terms.at;
    let list = spec
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default();
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let at = |f: &str| loc.spec_field(&format!("topologySpreadConstraints[{i}].{f}"));
        if c.topology_key.is_empty() {
            let msg = "missing: a topology spread constraint needs a topologyKey";
            return Err(loc.error(at("topologyKey"), msg));
        }
        if c.max_skew < 1 {
            return Err(loc.error(at("maxSkew"), format!("{} must be at least 1", c.max_skew)));
        }
        if let Some(m) = c.min_domains.filter(|m| *m < 1) {
            return Err(loc.error(at("minDomains"), format!("{m} must be at least 1")));
        }
        let when_unsatisfiable = match c.when_unsatisfiable.as_str() {
            "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
            "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
            other => {
                let msg =
                    format!("unknown value {other:?} (expected DoNotSchedule or ScheduleAnyway)");
                return Err(loc.error(at("whenUnsatisfiable"), msg));
            }
        };
        let ignore_node_affinity = match c.node_affinity_policy.as_deref() {
            None | Some("Honor") => false,
            Some("Ignore") => true,
            Some(other) => {
                let msg = format!("unknown value {other:?} (expected Honor or Ignore)");
                return Err(loc.error(at("nodeAffinityPolicy"), msg));
            }
        };
        if c.node_taints_policy.as_deref() == Some("Honor") {
            warnings.push(loc.warning(
                at("nodeTaintsPolicy"),
                "Honor is not modelled; domains are counted as with Ignore",
            ));
        }
        let label_selector = c
            .label_selector
            .as_ref()
            .map(|s| label_selector(loc, &at("labelSelector"), s))
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
pub(crate) struct TermContext<'a> {
    /// Where the pod is, for error paths.
    pub at: At<'a>,
    /// The pod's labels (`matchLabelKeys` take their values from them).
    pub labels: &'a Labels,
    /// Known namespaces.
    pub namespaces: &'a NamespaceIndex,
}

impl TermContext<'_> {
    /// Required pod (anti-)affinity terms under `base` (`affinity.podAffinity`, ...).
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

    /// Preferred (weighted) pod (anti-)affinity terms under `base`.
    pub fn preferred(
        &self,
        base: &str,
        terms: Option<&[k8s::WeightedPodAffinityTerm]>,
    ) -> Result<Vec<WeightedPodAffinityTerm>, ConvertError> {
        let at = format!("{base}.preferredDuringSchedulingIgnoredDuringExecution");
        let mut out = Vec::new();
        for (i, w) in terms.unwrap_or_default().iter().enumerate() {
            if !(1..=100).contains(&w.weight) {
                let path = self.at.spec_field(&format!("{at}[{i}].weight"));
                return Err(self
                    .at
                    .error(path, format!("{} is not in 1..100", w.weight)));
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
        let loc = self.at;
        if t.topology_key.is_empty() {
            let path = loc.spec_field(&format!("{at}.topologyKey"));
            return Err(loc.error(path, "missing: a pod affinity term needs a topologyKey"));
        }
        let mut selector = t
            .label_selector
            .as_ref()
            .map(|s| label_selector(loc, &loc.spec_field(&format!("{at}.labelSelector")), s))
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
            let path = loc.spec_field(&format!("{at}.namespaceSelector"));
            let ns_sel = label_selector(loc, &path, ns_sel)?;
            if ns_sel == LabelSelector::default() {
                all_namespaces = true;
            } else {
                namespaces.extend(self.namespaces.matching(&ns_sel).map(str::to_owned));
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
