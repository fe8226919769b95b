//! Pod label selectors (`metav1.LabelSelector`).

use std::collections::BTreeMap;

/// A label-selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SelectorOperator {
    /// Label present with one of the values.
    In,
    /// Label absent or with none of the values.
    NotIn,
    /// Label present.
    Exists,
    /// Label absent.
    DoesNotExist,
}

/// One `matchExpressions` entry of a label selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SelectorRequirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: SelectorOperator,
    /// Values.
    pub values: Vec<String>,
}

/// A label selector. An *empty* selector matches every pod; a *missing* one (`None` where it
/// is optional) matches nothing, as in Kubernetes topology and affinity terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSelector {
    /// `matchLabels`.
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`.
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    /// A selector with `matchLabels` only.
    pub fn labels(pairs: &[(&str, &str)]) -> Self {
        Self {
            match_labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether `labels` match.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let got = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => got.is_some_and(|g| e.values.contains(g)),
                    SelectorOperator::NotIn => got.is_none_or(|g| !e.values.contains(g)),
                    SelectorOperator::Exists => got.is_some(),
                    SelectorOperator::DoesNotExist => got.is_none(),
                }
            })
    }

    /// Adds `key In [value]` for each `matchLabelKeys` key the pod carries (upstream merges the
    /// pod's own values into the selector).
    pub fn with_match_label_keys(
        &self,
        keys: &[String],
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let mut out = self.clone();
        for k in keys {
            if let Some(v) = labels.get(k) {
                out.match_labels.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn matches() {
        let mut l = BTreeMap::new();
        l.insert("app".to_string(), "nginx".to_string());
        assert!(LabelSelector::default().matches(&l));
        assert!(LabelSelector::labels(&[("app", "nginx")]).matches(&l));
        assert!(!LabelSelector::labels(&[("app", "web")]).matches(&l));
        let s = LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![SelectorRequirement {
                key: "tier".into(),
                operator: SelectorOperator::DoesNotExist,
                values: vec![],
            }],
        };
        assert!(s.matches(&l));
    }
}
