//! The node-requirements algebra (upstream `pkg/scheduling/requirement(s).go`).
//!
//! A [`Requirement`] is the set of states a node label may be in: "absent" and/or a set of
//! values (an explicit set, or the complement of one, optionally bounded by integer `Gt`/`Lt`).
//! Intersecting requirements is set intersection, which is all the scheduler needs to narrow a
//! NodeClaim as pods join it.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::SolveError;

/// A node-selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    /// Label present with one of the values.
    In,
    /// Label absent or with none of the values.
    NotIn,
    /// Label present (any value).
    Exists,
    /// Label absent.
    DoesNotExist,
    /// Label present, an integer strictly greater than the single value.
    Gt,
    /// Label present, an integer strictly less than the single value.
    Lt,
    /// Label present, an integer ≥ the single value (Karpenter extension).
    Gte,
    /// Label present, an integer ≤ the single value (Karpenter extension).
    Lte,
}

/// One `matchExpressions` entry as written in Kubernetes objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeSelectorRequirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Values (one integer for Gt/Lt/Gte/Lte, none for Exists/DoesNotExist).
    pub values: Vec<String>,
}

impl NodeSelectorRequirement {
    /// Convenience constructor.
    pub fn new(key: &str, operator: Operator, values: &[&str]) -> Self {
        Self {
            key: key.to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }
}

/// A `nodeSelectorTerm`: all its expressions must hold (AND). Several terms are ORed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeSelectorTerm {
    /// The ANDed expressions.
    pub match_expressions: Vec<NodeSelectorRequirement>,
}

/// The allowed states of one label key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// Whether a node *without* the label satisfies it.
    pub allow_absent: bool,
    /// If true, `values` are excluded (any other value allowed); else only `values` allowed.
    pub complement: bool,
    /// The listed values.
    pub values: BTreeSet<String>,
    /// Exclusive integer lower bound (values must parse as integers when a bound is set).
    pub gt: Option<i64>,
    /// Exclusive integer upper bound.
    pub lt: Option<i64>,
}

impl Requirement {
    /// `Exists`: any value, label must be present.
    pub fn exists() -> Self {
        Self {
            allow_absent: false,
            complement: true,
            values: BTreeSet::new(),
            gt: None,
            lt: None,
        }
    }

    /// `In [values]`.
    pub fn in_values<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> Self {
        Self {
            allow_absent: false,
            complement: false,
            values: values.into_iter().map(|v| v.as_ref().to_string()).collect(),
            gt: None,
            lt: None,
        }
    }

    /// `DoesNotExist`.
    pub fn does_not_exist() -> Self {
        Self {
            allow_absent: true,
            complement: false,
            values: BTreeSet::new(),
            gt: None,
            lt: None,
        }
    }

    /// Builds the requirement for one `matchExpressions` entry.
    pub fn from_selector(r: &NodeSelectorRequirement) -> Result<Self, SolveError> {
        let int = |r: &NodeSelectorRequirement| -> Result<i64, SolveError> {
            match r.values.as_slice() {
                [v] => v
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| SolveError::InvalidRequirement {
                        key: r.key.clone(),
                        reason: format!("{:?} needs an integer value, got {v:?}", r.operator),
                    }),
                _ => Err(SolveError::InvalidRequirement {
                    key: r.key.clone(),
                    reason: format!("{:?} needs exactly one value", r.operator),
                }),
            }
        };
        let bounded = |gt: Option<i64>, lt: Option<i64>| Self {
            gt,
            lt,
            ..Self::exists()
        };
        Ok(match r.operator {
            Operator::In => Self::in_values(&r.values),
            Operator::NotIn => Self {
                allow_absent: true,
                complement: true,
                values: r.values.iter().cloned().collect(),
                gt: None,
                lt: None,
            },
            Operator::Exists => Self::exists(),
            Operator::DoesNotExist => Self::does_not_exist(),
            Operator::Gt => bounded(Some(int(r)?), None),
            Operator::Lt => bounded(None, Some(int(r)?)),
            Operator::Gte => bounded(Some(int(r)?.saturating_sub(1)), None),
            Operator::Lte => bounded(None, Some(int(r)?.saturating_add(1))),
        })
    }

    fn within_bounds(&self, v: &str) -> bool {
        if self.gt.is_none() && self.lt.is_none() {
            return true;
        }
        match v.parse::<i64>() {
            Ok(n) => self.gt.is_none_or(|g| n > g) && self.lt.is_none_or(|l| n < l),
            Err(_) => false,
        }
    }

    /// Whether a node whose label has value `v` satisfies this requirement.
    pub fn has(&self, v: &str) -> bool {
        self.values.contains(v) != self.complement && self.within_bounds(v)
    }

    /// Whether a node with the label present *or* absent (`None`) satisfies this requirement.
    pub fn matches(&self, v: Option<&str>) -> bool {
        match v {
            None => self.allow_absent,
            Some(v) => self.has(v),
        }
    }

    /// Whether some label value (not absence) satisfies it.
    pub fn any_value(&self) -> bool {
        if let (Some(g), Some(l)) = (self.gt, self.lt)
            && g.saturating_add(1) >= l
        {
            return false;
        }
        if self.complement {
            true
        } else {
            !self.values.is_empty()
        }
    }

    /// True when no node state satisfies it (a contradiction).
    pub fn is_unsatisfiable(&self) -> bool {
        !self.allow_absent && !self.any_value()
    }

    /// The single value this requirement pins the label to, if exactly one.
    pub fn single_value(&self) -> Option<&str> {
        if !self.complement && self.values.len() == 1 && !self.allow_absent {
            self.values.iter().next().map(String::as_str)
        } else {
            None
        }
    }

    /// Set intersection.
    pub fn intersect(&self, other: &Requirement) -> Requirement {
        let gt = match (self.gt, other.gt) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let lt = match (self.lt, other.lt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let allow_absent = self.allow_absent && other.allow_absent;
        let mut out = match (self.complement, other.complement) {
            (true, true) => Requirement {
                allow_absent,
                complement: true,
                values: self.values.union(&other.values).cloned().collect(),
                gt,
                lt,
            },
            (true, false) | (false, true) => {
                let (comp, set) = if self.complement {
                    (self, other)
                } else {
                    (other, self)
                };
                Requirement {
                    allow_absent,
                    complement: false,
                    values: set
                        .values
                        .iter()
                        .filter(|v| !comp.values.contains(*v))
                        .cloned()
                        .collect(),
                    gt,
                    lt,
                }
            }
            (false, false) => Requirement {
                allow_absent,
                complement: false,
                values: self.values.intersection(&other.values).cloned().collect(),
                gt,
                lt,
            },
        };
        if !out.complement && (out.gt.is_some() || out.lt.is_some()) {
            // An explicit set is filtered by the bounds once, so later checks stay cheap.
            let (g, l) = (out.gt, out.lt);
            let probe = Requirement {
                gt: g,
                lt: l,
                ..Requirement::exists()
            };
            out.values.retain(|v| probe.within_bounds(v));
            out.gt = None;
            out.lt = None;
        }
        if let (Some(g), Some(l)) = (out.gt, out.lt)
            && g.saturating_add(1) >= l
        {
            // Empty integer range: only absence can still satisfy it.
            out = Requirement {
                allow_absent: out.allow_absent,
                ..Requirement::in_values::<&str>([])
            };
        }
        out
    }

    /// Whether the two requirements have a common satisfying state.
    pub fn intersects(&self, other: &Requirement) -> bool {
        !self.intersect(other).is_unsatisfiable()
    }

    /// Human-readable form: `In [a, b]`, `NotIn [x]`, `Exists`, `DoesNotExist`, `Gt 4`.
    pub fn describe(&self) -> String {
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        match (self.complement, self.allow_absent, self.values.is_empty()) {
            (false, false, _) => parts.push(format!("In [{}]", list(&self.values))),
            (false, true, true) => parts.push("DoesNotExist".to_string()),
            (false, true, false) => parts.push(format!("In [{}] or absent", list(&self.values))),
            (true, false, true) => parts.push("Exists".to_string()),
            (true, false, false) => parts.push(format!("Exists, NotIn [{}]", list(&self.values))),
            (true, true, _) => parts.push(format!("NotIn [{}]", list(&self.values))),
        }
        if let Some(g) = self.gt {
            parts.push(format!("Gt {g}"));
        }
        if let Some(l) = self.lt {
            parts.push(format!("Lt {l}"));
        }
        parts.join(", ")
    }
}

/// Requirements over several label keys (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Requirements(pub BTreeMap<String, Requirement>);

impl Requirements {
    /// No constraint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds from `matchExpressions` (AND).
    pub fn from_selectors(reqs: &[NodeSelectorRequirement]) -> Result<Self, SolveError> {
        let mut out = Self::new();
        for r in reqs {
            out.add(&r.key, &Requirement::from_selector(r)?);
        }
        Ok(out)
    }

    /// Builds `key In [value]` for each label (a nodeSelector or NodePool template labels).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Self {
        let mut out = Self::new();
        for (k, v) in labels {
            out.add(k, &Requirement::in_values([v]));
        }
        out
    }

    /// Intersects `req` into the requirement for `key`.
    pub fn add(&mut self, key: &str, req: &Requirement) {
        match self.0.get_mut(key) {
            Some(cur) => *cur = cur.intersect(req),
            None => {
                self.0.insert(key.to_string(), req.clone());
            }
        }
    }

    /// Intersects every requirement of `other` into `self`.
    pub fn add_all(&mut self, other: &Requirements) {
        for (k, r) in &other.0 {
            self.add(k, r);
        }
    }

    /// The intersection of both.
    pub fn intersect(&self, other: &Requirements) -> Requirements {
        let mut out = self.clone();
        out.add_all(other);
        out
    }

    /// The requirement on `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Requirement> {
        self.0.get(key)
    }

    /// True when some key is contradictory.
    pub fn is_unsatisfiable(&self) -> bool {
        self.0.values().any(Requirement::is_unsatisfiable)
    }

    /// The first key (in key order) on which `self` and `other` have no common state.
    pub fn first_conflict<'a>(&'a self, other: &'a Requirements) -> Option<&'a str> {
        // Iterate the smaller map for speed; report keys in sorted order for determinism.
        let (small, large) = if self.0.len() <= other.0.len() {
            (self, other)
        } else {
            (other, self)
        };
        small
            .0
            .iter()
            .find(|(k, r)| large.0.get(*k).is_some_and(|o| !r.intersects(o)))
            .map(|(k, _)| k.as_str())
    }

    /// Whether every shared key has a common state.
    pub fn intersects(&self, other: &Requirements) -> bool {
        self.first_conflict(other).is_none()
    }

    /// Whether a node with exactly `labels` satisfies every requirement.
    pub fn satisfied_by(&self, labels: &BTreeMap<String, String>) -> bool {
        self.first_unsatisfied(labels).is_none()
    }

    /// The first key (sorted) whose requirement the labels do not satisfy.
    pub fn first_unsatisfied(&self, labels: &BTreeMap<String, String>) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, r)| !r.matches(labels.get(*k).map(String::as_str)))
            .map(|(k, _)| k.as_str())
    }

    /// The labels implied by single-valued `In` requirements (what a new Node will carry).
    pub fn single_values(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter_map(|(k, r)| r.single_value().map(|v| (k.clone(), v.to_string())))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(op: Operator, vals: &[&str]) -> Requirement {
        Requirement::from_selector(&NodeSelectorRequirement::new("k", op, vals)).unwrap()
    }

    #[test]
    fn in_and_notin() {
        let a = req(Operator::In, &["a", "b"]);
        let b = req(Operator::NotIn, &["a"]);
        let i = a.intersect(&b);
        assert!(i.has("b") && !i.has("a") && !i.matches(None));
        assert_eq!(i.single_value(), Some("b"));
    }

    #[test]
    fn exists_vs_does_not_exist() {
        let e = req(Operator::Exists, &[]);
        let d = req(Operator::DoesNotExist, &[]);
        assert!(!e.intersects(&d));
        assert!(d.matches(None) && !d.matches(Some("x")));
        // NotIn and DoesNotExist are compatible: both allow the label to be absent.
        assert!(req(Operator::NotIn, &["x"]).intersects(&d));
    }

    #[test]
    fn gt_lt() {
        let g = req(Operator::Gt, &["4"]);
        let l = req(Operator::Lt, &["8"]);
        let i = g.intersect(&l);
        assert!(i.has("5") && i.has("7") && !i.has("4") && !i.has("8") && !i.has("abc"));
        assert!(!req(Operator::Gt, &["5"]).intersects(&req(Operator::Lt, &["6"])));
        assert!(req(Operator::Gte, &["5"]).intersects(&req(Operator::Lte, &["5"])));
        let set = req(Operator::In, &["2", "16", "x"]).intersect(&g);
        assert_eq!(set.values.iter().collect::<Vec<_>>(), vec!["16"]);
        assert!(
            Requirement::from_selector(&NodeSelectorRequirement::new("k", Operator::Gt, &["x"]))
                .is_err()
        );
    }

    #[test]
    fn requirements_satisfied_by() {
        let r = Requirements::from_selectors(&[
            NodeSelectorRequirement::new("arch", Operator::In, &["amd64"]),
            NodeSelectorRequirement::new("team", Operator::NotIn, &["b"]),
        ])
        .unwrap();
        let mut labels = BTreeMap::new();
        labels.insert("arch".to_string(), "amd64".to_string());
        assert!(r.satisfied_by(&labels));
        labels.insert("team".to_string(), "b".to_string());
        assert_eq!(r.first_unsatisfied(&labels), Some("team"));
    }
}
