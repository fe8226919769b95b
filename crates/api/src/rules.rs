//! The validation rules, written once: their CEL form for the CRD schema and the message tails
//! and patterns the in-code validation ([`crate::validation`]) reuses, so both reject the same
//! manifests with the same words.
//!
//! Every CEL message starts with the field it is about (`spec.weight: ...`, or
//! `spec.template.spec.requirements[].values: ...` for list items), because the apiserver
//! reports list-level rules against the list, not the offending item.

use schemars::{Schema, transform::Transform};
use serde_json::{Value, json};

use crate::labels::{
    ALLOWED_KUBERNETES_LABELS, CAPACITY_TYPE_LABEL, HOSTNAME_LABEL, NODE_POOL_LABEL, Restriction,
};

/// Duration without `Never`: `30s`, `5m`, `1h30m`.
pub const DURATION_PATTERN: &str = "^([0-9]+(s|m|h))+$";
/// Duration or the literal `Never`.
pub const NILLABLE_DURATION_PATTERN: &str = "^(([0-9]+(s|m|h))+|Never)$";
/// Budget window duration (upstream: hours and/or minutes, optional trailing `0s`).
pub const BUDGET_DURATION_PATTERN: &str = "^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$";
/// Budget `nodes`: a percentage or an absolute count.
pub const BUDGET_NODES_PATTERN: &str = "^((100|[0-9]{1,2})%|[0-9]+)$";
/// Budget schedule: a cron macro or five whitespace-separated fields (evaluated in UTC).
pub const SCHEDULE_PATTERN: &str =
    "^(@(annually|yearly|monthly|weekly|daily|midnight|hourly)|[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+)$";
/// Non-negative integer (values of Gt/Lt/Gte/Lte).
pub const NON_NEGATIVE_INTEGER_PATTERN: &str = "^[0-9]+$";
/// A key in a restricted Kubernetes domain (`kubernetes.io`, `k8s.io` or a sub-domain).
pub const KUBERNETES_DOMAIN_PATTERN: &str = "^([^/]*[.])?(kubernetes|k8s)[.]io/";
/// A key in a Kubernetes sub-domain kubelets may set.
pub const ALLOWED_KUBERNETES_DOMAIN_PATTERN: &str =
    "^([^/]*[.])?(node[.]kubernetes[.]io|node-restriction[.]kubernetes[.]io|kops[.]k8s[.]io)/";

/// Message tails (the part after `field: `).
pub mod msg {
    /// `In` with an empty value list.
    pub const IN_NEEDS_VALUE: &str = "'In' requires at least one value";
    /// `Exists` / `DoesNotExist` with values.
    pub const EXISTS_NO_VALUES: &str = "'Exists' and 'DoesNotExist' take no values";
    /// Numeric operators.
    pub const NUMERIC_SINGLE_VALUE: &str =
        "'Gt', 'Lt', 'Gte' and 'Lte' require exactly one non-negative integer value";
    /// minValues bounds.
    pub const MIN_VALUES_RANGE: &str = "must be between 1 and 50";
    /// minValues larger than the value list.
    pub const MIN_VALUES_EXCEEDS_VALUES: &str =
        "must not exceed the number of values when the operator is 'In'";
    /// Unknown capacity type.
    pub const CAPACITY_TYPE_VALUES: &str =
        "values for \"karpenter.sh/capacity-type\" must be one of on-demand, spot, reserved";
    /// Operator enum.
    pub const OPERATOR: &str = "must be one of In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte, Lte";
    /// NodePool weight.
    pub const WEIGHT: &str = "must be between 1 and 100";
    /// Budget nodes.
    pub const BUDGET_NODES: &str =
        "must be a percentage from 0% to 100% (e.g. \"10%\") or a node count (e.g. \"5\")";
    /// Budget schedule/duration pairing.
    pub const SCHEDULE_WITH_DURATION: &str = "'schedule' must be set together with 'duration'";
    /// Budget schedule.
    pub const SCHEDULE: &str =
        "must be a cron expression with five fields or a macro such as \"@daily\"";
    /// Budget duration.
    pub const BUDGET_DURATION: &str =
        "must be hours and/or minutes, e.g. \"10m\", \"1h\", \"1h30m\"";
    /// Duration fields.
    pub const DURATION: &str =
        "must be a duration made of hours, minutes and seconds, e.g. \"30s\", \"5m\", \"1h30m\"";
    /// Duration-or-Never fields.
    pub const NILLABLE_DURATION: &str =
        "must be a duration made of hours, minutes and seconds (e.g. \"720h\") or \"Never\"";
    /// Taint effects.
    pub const TAINT_EFFECT: &str = "must be one of NoSchedule, PreferNoSchedule, NoExecute";
    /// Taint key.
    pub const TAINT_KEY: &str = "must not be empty";
    /// Empty strings.
    pub const NOT_EMPTY: &str = "must not be empty";
    /// '/' in a group.
    pub const NO_SLASH: &str = "must not contain '/'";
    /// Transition rules.
    pub const IMMUTABLE: &str = "is immutable";
    /// Consolidation policy enum.
    pub const CONSOLIDATION_POLICY: &str =
        "must be one of WhenEmpty, WhenEmptyOrUnderutilized, Balanced";
    /// `replicas` added or removed.
    pub const STATIC_TRANSITION: &str =
        "cannot change between static (replicas set) and dynamic (replicas unset)";
    /// Limits other than `nodes` on a static NodePool.
    pub const STATIC_LIMITS: &str = "only 'limits.nodes' is supported on static NodePools";
    /// `weight` on a static NodePool.
    pub const STATIC_WEIGHT: &str = "'weight' is not supported on static NodePools";
    /// Budget reasons.
    pub const BUDGET_REASONS: &str = "must be a subset of Underutilized, Empty, Drifted, Unhealthy";
}

/// One CEL rule with its message, as it appears under `x-kubernetes-validations`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The CEL expression; `self` is the field the rule is attached to.
    pub rule: String,
    /// The message the apiserver returns when the rule evaluates to false.
    pub message: String,
}

/// A schemars transform appending CEL rules to a field's schema; used as
/// `#[schemars(transform = AddRules(...))]` so one attribute can carry several rules.
pub(crate) struct AddRules(pub Vec<Rule>);

impl Transform for AddRules {
    fn transform(&mut self, schema: &mut Schema) {
        let rules = self
            .0
            .iter()
            .map(|r| json!({"rule": r.rule, "message": r.message}));
        let obj = schema.ensure_object();
        match obj.get_mut("x-kubernetes-validations") {
            Some(Value::Array(existing)) => existing.extend(rules),
            _ => {
                obj.insert(
                    "x-kubernetes-validations".into(),
                    Value::Array(rules.collect()),
                );
            }
        }
    }
}

/// Builds a rule whose message names `field`.
pub(crate) fn rule(expr: impl Into<String>, field: &str, tail: &str) -> Rule {
    Rule {
        rule: expr.into(),
        message: format!("{field}: {tail}"),
    }
}

fn quoted_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A string field matching `pattern`.
pub(crate) fn matches(field: &str, pattern: &str, tail: &str) -> Rule {
    rule(format!("self.matches('{pattern}')"), field, tail)
}

/// A non-empty string.
pub(crate) fn not_empty(field: &str) -> Rule {
    rule("self != ''", field, msg::NOT_EMPTY)
}

/// A value that may not change after creation.
pub(crate) fn immutable(field: &str) -> Rule {
    rule("self == oldSelf", field, msg::IMMUTABLE)
}

/// Weight (1..100).
pub(crate) fn weight(field: &str) -> Rule {
    rule("self >= 1 && self <= 100", field, msg::WEIGHT)
}

/// Upstream's rules of a static NodePool (`replicas` set), on the NodePool spec at `field`:
/// it stays static (or dynamic) for life, limits only its node count, and has no weight.
pub(crate) fn static_rules(field: &str) -> Vec<Rule> {
    vec![
        rule(
            "has(self.replicas) == has(oldSelf.replicas)",
            field,
            msg::STATIC_TRANSITION,
        ),
        rule(
            "!has(self.replicas) || !has(self.limits) || size(self.limits) == 0 || \
             (size(self.limits) == 1 && 'nodes' in self.limits)",
            field,
            msg::STATIC_LIMITS,
        ),
        rule(
            "!has(self.replicas) || !has(self.weight)",
            field,
            msg::STATIC_WEIGHT,
        ),
    ]
}

/// Which set of label-key restrictions applies.
#[derive(Clone, Copy)]
pub(crate) enum Keys {
    /// NodePool template labels and requirement keys.
    NodePool,
    /// NodeClaim requirement keys (Karpenter writes `karpenter.sh/nodepool` there).
    NodeClaim,
}

/// Restriction rules on label keys; `iter` is `self` for a map of labels, or `self` with
/// `.key` accessor for a list of requirements (`accessor` = ".key").
pub(crate) fn key_rules(field: &str, accessor: &str, keys: Keys) -> Vec<Rule> {
    let k = format!("x{accessor}");
    let mut rules = Vec::new();
    let karpenter_allowed = match keys {
        Keys::NodePool => {
            rules.push(rule(
                format!("self.all(x, {k} != '{NODE_POOL_LABEL}')"),
                field,
                Restriction::NodePoolLabel.reason(),
            ));
            quoted_list(&[CAPACITY_TYPE_LABEL])
        }
        Keys::NodeClaim => quoted_list(&[CAPACITY_TYPE_LABEL, NODE_POOL_LABEL]),
    };
    rules.push(rule(
        format!("self.all(x, {k} != '{HOSTNAME_LABEL}')"),
        field,
        Restriction::Hostname.reason(),
    ));
    rules.push(rule(
        format!("self.all(x, {k} in {karpenter_allowed} || !{k}.find('^([^/]+)').endsWith('karpenter.sh'))"),
        field,
        Restriction::KarpenterDomain.reason(),
    ));
    if let Keys::NodePool = keys {
        rules.push(rule(
            format!(
                "self.all(x, {k} in {} || !{k}.matches('{KUBERNETES_DOMAIN_PATTERN}') || {k}.matches('{ALLOWED_KUBERNETES_DOMAIN_PATTERN}'))",
                quoted_list(&ALLOWED_KUBERNETES_LABELS)
            ),
            field,
            Restriction::KubernetesDomain.reason(),
        ));
    }
    rules
}

/// Rules for a label map (`spec.template.metadata.labels`).
pub(crate) fn label_rules(field: &str) -> Vec<Rule> {
    key_rules(field, "", Keys::NodePool)
}

/// Rules for a requirement list; `field` is the list's path, e.g.
/// `spec.template.spec.requirements`.
pub(crate) fn requirement_rules(field: &str, keys: Keys) -> Vec<Rule> {
    let item = format!("{field}[]");
    let mut rules = key_rules(&format!("{item}.key"), ".key", keys);
    rules.extend([
        rule(
            "self.all(x, x.operator != 'In' || (has(x.values) && size(x.values) > 0))",
            &format!("{item}.values"),
            msg::IN_NEEDS_VALUE,
        ),
        rule(
            "self.all(x, !(x.operator in ['Exists', 'DoesNotExist']) || !has(x.values) || size(x.values) == 0)",
            &format!("{item}.values"),
            msg::EXISTS_NO_VALUES,
        ),
        rule(
            format!(
                "self.all(x, !(x.operator in ['Gt', 'Lt', 'Gte', 'Lte']) || (has(x.values) && size(x.values) == 1 && x.values[0].matches('{NON_NEGATIVE_INTEGER_PATTERN}')))"
            ),
            &format!("{item}.values"),
            msg::NUMERIC_SINGLE_VALUE,
        ),
        rule(
            "self.all(x, !has(x.minValues) || (x.minValues >= 1 && x.minValues <= 50))",
            &format!("{item}.minValues"),
            msg::MIN_VALUES_RANGE,
        ),
        rule(
            "self.all(x, !(x.operator == 'In' && has(x.minValues)) || (has(x.values) && size(x.values) >= x.minValues))",
            &format!("{item}.minValues"),
            msg::MIN_VALUES_EXCEEDS_VALUES,
        ),
        rule(
            format!(
                "self.all(x, !(x.key == '{CAPACITY_TYPE_LABEL}' && x.operator == 'In') || !has(x.values) || x.values.all(v, v in ['on-demand', 'spot', 'reserved']))"
            ),
            &format!("{item}.values"),
            msg::CAPACITY_TYPE_VALUES,
        ),
        rule(
            "self.all(x, x.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist', 'Gt', 'Lt', 'Gte', 'Lte'])",
            &format!("{item}.operator"),
            msg::OPERATOR,
        ),
    ]);
    rules
}

/// Rules for a taint list (`spec.template.spec.taints`).
pub(crate) fn taint_rules(field: &str) -> Vec<Rule> {
    vec![
        rule(
            "self.all(x, x.effect in ['NoSchedule', 'PreferNoSchedule', 'NoExecute'])",
            &format!("{field}[].effect"),
            msg::TAINT_EFFECT,
        ),
        rule(
            "self.all(x, x.key != '')",
            &format!("{field}[].key"),
            msg::TAINT_KEY,
        ),
    ]
}
