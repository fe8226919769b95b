//! Taints and tolerations with Kubernetes semantics.

use std::fmt;

/// A taint effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaintEffect {
    /// New pods that do not tolerate it are not scheduled.
    NoSchedule,
    /// Soft: the scheduler avoids it; Karpenter provisioning ignores it (relaxation adds a
    /// toleration when some NodePool has one).
    PreferNoSchedule,
    /// Like NoSchedule, and running pods are evicted.
    NoExecute,
}

impl fmt::Display for TaintEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        })
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (may be empty).
    pub value: String,
    /// Effect.
    pub effect: TaintEffect,
}

impl Taint {
    /// Convenience constructor.
    pub fn new(key: &str, value: &str, effect: TaintEffect) -> Self {
        Self {
            key: key.to_string(),
            value: value.to_string(),
            effect,
        }
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect)
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect)
        }
    }
}

/// A toleration operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum TolerationOperator {
    /// Key and value must match.
    #[default]
    Equal,
    /// Key must match (any value); an empty key with Exists matches every taint.
    Exists,
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Toleration {
    /// Key; empty means "all keys" (only valid with `Exists`).
    pub key: String,
    /// Operator.
    pub operator: TolerationOperator,
    /// Value for `Equal`.
    pub value: String,
    /// Effect to match; `None` matches all effects.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// `key Exists` for any effect.
    pub fn exists(key: &str) -> Self {
        Self {
            key: key.to_string(),
            operator: TolerationOperator::Exists,
            ..Self::default()
        }
    }

    /// `key=value` with the given effect (None = any).
    pub fn equal(key: &str, value: &str, effect: Option<TaintEffect>) -> Self {
        Self {
            key: key.to_string(),
            operator: TolerationOperator::Equal,
            value: value.to_string(),
            effect,
        }
    }

    /// Whether this toleration tolerates `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => self.key.is_empty() || self.key == taint.key,
            TolerationOperator::Equal => self.key == taint.key && self.value == taint.value,
        }
    }
}

/// The first taint (in order) that blocks scheduling and is not tolerated.
///
/// `PreferNoSchedule` never blocks here; callers that want it strict (existing nodes, like
/// upstream) pass `strict_prefer = true`.
pub fn first_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    strict_prefer: bool,
) -> Option<&'a Taint> {
    taints.iter().find(|t| {
        (strict_prefer || t.effect != TaintEffect::PreferNoSchedule)
            && !tolerations.iter().any(|tol| tol.tolerates(t))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn semantics() {
        let gpu = Taint::new("nvidia.com/gpu", "true", TaintEffect::NoSchedule);
        assert!(first_untolerated(std::slice::from_ref(&gpu), &[], false).is_some());
        assert!(Toleration::exists("nvidia.com/gpu").tolerates(&gpu));
        assert!(Toleration::exists("").tolerates(&gpu));
        assert!(Toleration::equal("nvidia.com/gpu", "true", None).tolerates(&gpu));
        assert!(!Toleration::equal("nvidia.com/gpu", "false", None).tolerates(&gpu));
        assert!(
            !Toleration::equal("nvidia.com/gpu", "true", Some(TaintEffect::NoExecute))
                .tolerates(&gpu)
        );
        let soft = Taint::new("a", "", TaintEffect::PreferNoSchedule);
        assert!(first_untolerated(std::slice::from_ref(&soft), &[], false).is_none());
        assert!(first_untolerated(std::slice::from_ref(&soft), &[], true).is_some());
        assert_eq!(gpu.to_string(), "nvidia.com/gpu=true:NoSchedule");
    }
}
