//! In-code validation: the same rules as the CRD's CEL (see [`crate::rules`]), for objects that
//! never reach an apiserver (`karpenter simulate`, `karpenter convert`) and for the controller.
//! Errors carry the object and the exact field path, e.g.
//! `NodePool "default": spec.template.spec.requirements[1].values: 'In' requires at least one value`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{LazyLock, Mutex};

use regex::Regex;

use crate::ec2::{self, EC2NodeClass};
use crate::kwok::KWOKNodeClass;
use crate::labels::{self, CAPACITY_TYPE_LABEL, CAPACITY_TYPES, Restriction};
use crate::rules::{self, msg};
use crate::v1::{NodeClaim, NodePool, NodeSelectorRequirementWithMinValues, Operator, Taint};
use crate::v1alpha5::{self, Provisioner};

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.disruption.budgets[0].nodes`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every invalid field of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors {
    /// Kind of the object (`NodePool`, `Provisioner`, ...).
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// The invalid fields, in document order.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{} \"{}\": {e}", self.kind, self.name)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Collects field errors for one object.
#[derive(Default)]
pub(crate) struct Collector {
    errors: Vec<FieldError>,
}

impl Collector {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn finish(self, kind: &str, name: &str) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors {
                kind: kind.to_owned(),
                name: name.to_owned(),
                errors: self.errors,
            })
        }
    }
}

static REGEXES: LazyLock<Mutex<HashMap<&'static str, Regex>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Whether `s` matches one of the crate's pattern constants (compiled once, cached).
pub(crate) fn matches(pattern: &'static str, s: &str) -> bool {
    let Ok(mut cache) = REGEXES.lock() else {
        return false;
    };
    if let Some(re) = cache.get(pattern) {
        return re.is_match(s);
    }
    match Regex::new(pattern) {
        Ok(re) => {
            let hit = re.is_match(s);
            cache.insert(pattern, re);
            hit
        }
        // The patterns are constants covered by tests; failing closed is the safe answer.
        Err(_) => false,
    }
}

fn name_of(meta: &kube::api::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// Validates a NodePool with the rules its CRD enforces.
pub fn validate_node_pool(np: &NodePool) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    let spec = &np.spec;
    check_labels(
        &mut c,
        "spec.template.metadata.labels",
        &spec.template.metadata.labels,
    );
    let t = &spec.template.spec;
    check_taints(&mut c, "spec.template.spec.taints", &t.taints);
    check_taints(
        &mut c,
        "spec.template.spec.startupTaints",
        &t.startup_taints,
    );
    check_requirements(
        &mut c,
        "spec.template.spec.requirements",
        &t.requirements,
        labels::node_pool_restriction,
    );
    check_node_class_ref(&mut c, "spec.template.spec.nodeClassRef", &t.node_class_ref);
    if let Some(tgp) = &t.termination_grace_period {
        check_pattern(
            &mut c,
            "spec.template.spec.terminationGracePeriod",
            rules::DURATION_PATTERN,
            tgp,
            msg::DURATION,
        );
    }
    check_pattern(
        &mut c,
        "spec.template.spec.expireAfter",
        rules::NILLABLE_DURATION_PATTERN,
        &t.expire_after,
        msg::NILLABLE_DURATION,
    );
    let d = &spec.disruption;
    check_pattern(
        &mut c,
        "spec.disruption.consolidateAfter",
        rules::NILLABLE_DURATION_PATTERN,
        &d.consolidate_after,
        msg::NILLABLE_DURATION,
    );
    for (i, b) in d.budgets.iter().enumerate() {
        let p = format!("spec.disruption.budgets[{i}]");
        check_pattern(
            &mut c,
            &format!("{p}.nodes"),
            rules::BUDGET_NODES_PATTERN,
            &b.nodes,
            msg::BUDGET_NODES,
        );
        if let Some(s) = &b.schedule {
            check_pattern(
                &mut c,
                &format!("{p}.schedule"),
                rules::SCHEDULE_PATTERN,
                s,
                msg::SCHEDULE,
            );
        }
        if let Some(s) = &b.duration {
            check_pattern(
                &mut c,
                &format!("{p}.duration"),
                rules::BUDGET_DURATION_PATTERN,
                s,
                msg::BUDGET_DURATION,
            );
        }
        if b.schedule.is_some() != b.duration.is_some() {
            c.push(p, msg::SCHEDULE_WITH_DURATION);
        }
    }
    check_limits(&mut c, "spec.limits", &spec.limits);
    if let Some(w) = spec.weight {
        check_weight(&mut c, "spec.weight", w);
    }
    check_static(&mut c, spec);
    c.finish("NodePool", name_of(&np.metadata))
}

/// Validates a NodeClaim with the rules its CRD enforces.
pub fn validate_node_claim(nc: &NodeClaim) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    let s = &nc.spec;
    check_taints(&mut c, "spec.taints", &s.taints);
    check_taints(&mut c, "spec.startupTaints", &s.startup_taints);
    check_requirements(
        &mut c,
        "spec.requirements",
        &s.requirements,
        labels::node_claim_restriction,
    );
    check_node_class_ref(&mut c, "spec.nodeClassRef", &s.node_class_ref);
    if let Some(tgp) = &s.termination_grace_period {
        check_pattern(
            &mut c,
            "spec.terminationGracePeriod",
            rules::DURATION_PATTERN,
            tgp,
            msg::DURATION,
        );
    }
    check_pattern(
        &mut c,
        "spec.expireAfter",
        rules::NILLABLE_DURATION_PATTERN,
        &s.expire_after,
        msg::NILLABLE_DURATION,
    );
    check_limits(&mut c, "spec.resources.requests", &s.resources.requests);
    c.finish("NodeClaim", name_of(&nc.metadata))
}

/// Validates an EC2NodeClass with the rules its CRD enforces.
pub fn validate_ec2_node_class(nc: &EC2NodeClass) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    let s = &nc.spec;
    if s.role.is_some() == s.instance_profile.is_some() {
        c.push(
            "spec.role, spec.instanceProfile",
            ec2::msg::ROLE_XOR_PROFILE,
        );
    }
    for (field, terms, allow_name) in [
        ("spec.subnetSelectorTerms", &s.subnet_selector_terms, false),
        (
            "spec.securityGroupSelectorTerms",
            &s.security_group_selector_terms,
            true,
        ),
    ] {
        if terms.is_empty() {
            c.push(field, ec2::msg::TERMS_REQUIRED);
        }
        for (i, t) in terms.iter().enumerate() {
            let has_name = allow_name && t.name.is_some();
            if t.tags.is_none() && t.id.is_none() && !has_name {
                c.push(format!("{field}[{i}]"), ec2::msg::TERM_EMPTY);
            }
            if t.id.is_some() && (t.tags.is_some() || has_name) {
                c.push(format!("{field}[{i}].id"), ec2::msg::ID_EXCLUSIVE);
            }
        }
    }
    for (i, t) in s.capacity_reservation_selector_terms.iter().enumerate() {
        let field = "spec.capacityReservationSelectorTerms";
        if t.tags.is_none() && t.id.is_none() {
            c.push(format!("{field}[{i}]"), ec2::msg::TERM_EMPTY);
        }
        if t.id.is_some() && (t.tags.is_some() || t.owner_id.is_some()) {
            c.push(format!("{field}[{i}].id"), ec2::msg::ID_EXCLUSIVE);
        }
    }
    for (i, t) in s.ami_selector_terms.iter().enumerate() {
        let others = t.tags.is_some() || t.id.is_some() || t.name.is_some() || t.owner.is_some();
        if t.alias.is_none() && !(t.tags.is_some() || t.id.is_some() || t.name.is_some()) {
            c.push(format!("spec.amiSelectorTerms[{i}]"), ec2::msg::TERM_EMPTY);
        }
        if t.alias.is_some() && others {
            c.push(
                format!("spec.amiSelectorTerms[{i}].alias"),
                ec2::msg::ALIAS_EXCLUSIVE,
            );
        }
    }
    c.finish("EC2NodeClass", name_of(&nc.metadata))
}

/// Validates a KWOKNodeClass with the rules its CRD enforces.
pub fn validate_kwok_node_class(nc: &KWOKNodeClass) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    if let Some(d) = &nc.spec.node_registration_delay {
        check_pattern(
            &mut c,
            "spec.nodeRegistrationDelay",
            rules::DURATION_PATTERN,
            d,
            msg::DURATION,
        );
    }
    c.finish("KWOKNodeClass", name_of(&nc.metadata))
}

/// Validates a legacy Provisioner: its own rules plus the v1 NodePool rules on the fields
/// that conversion copies, reported at the Provisioner's paths.
pub fn validate_provisioner(p: &Provisioner) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    check_provisioner_into(&mut c, p);
    c.finish("Provisioner", name_of(&p.metadata))
}

pub(crate) fn check_provisioner_into(c: &mut Collector, p: &Provisioner) {
    let s = &p.spec;
    if let Some(ttl) = s.ttl_seconds_after_empty
        && ttl < 0
    {
        c.push(
            "spec.ttlSecondsAfterEmpty",
            v1alpha5::provisioner::msg::TTL_NON_NEGATIVE,
        );
    }
    if let Some(ttl) = s.ttl_seconds_until_expired
        && ttl < 0
    {
        c.push(
            "spec.ttlSecondsUntilExpired",
            v1alpha5::provisioner::msg::TTL_NON_NEGATIVE,
        );
    }
    let consolidation = s.consolidation.as_ref().and_then(|c| c.enabled) == Some(true);
    if s.ttl_seconds_after_empty.is_some() && consolidation {
        c.push(
            "spec.ttlSecondsAfterEmpty, spec.consolidation.enabled",
            v1alpha5::provisioner::msg::TTL_XOR_CONSOLIDATION,
        );
    }
    if s.provider.is_some() == s.provider_ref.is_some() {
        c.push(
            "spec.provider, spec.providerRef",
            v1alpha5::provisioner::msg::PROVIDER_XOR_REF,
        );
    }
    if let Some(w) = s.weight {
        check_weight(c, "spec.weight", w);
    }
    check_labels(c, "spec.labels", &s.labels);
    check_taints(c, "spec.taints", &s.taints);
    check_taints(c, "spec.startupTaints", &s.startup_taints);
    check_requirements(
        c,
        "spec.requirements",
        &s.requirements,
        labels::node_pool_restriction,
    );
    if let Some(l) = &s.limits {
        check_limits(c, "spec.limits.resources", &l.resources);
    }
}

/// A static NodePool's rules that need no old object ([`rules::static_rules`]); `replicas`
/// itself is at least 0.
fn check_static(c: &mut Collector, spec: &crate::v1::NodePoolSpec) {
    let Some(replicas) = spec.replicas else {
        return;
    };
    if replicas < 0 {
        c.push("spec.replicas", "must be at least 0");
    }
    if spec.limits.keys().any(|k| k != "nodes") {
        c.push("spec", msg::STATIC_LIMITS);
    }
    if spec.weight.is_some() {
        c.push("spec", msg::STATIC_WEIGHT);
    }
}

fn check_weight(c: &mut Collector, path: &str, w: i32) {
    if !(1..=100).contains(&w) {
        c.push(path, msg::WEIGHT);
    }
}

fn check_pattern(c: &mut Collector, path: &str, pattern: &'static str, value: &str, tail: &str) {
    if !matches(pattern, value) {
        c.push(path, format!("{tail} (got {value:?})"));
    }
}

fn check_labels(c: &mut Collector, path: &str, labels_map: &BTreeMap<String, String>) {
    for (k, v) in labels_map {
        if let Some(r) = labels::node_pool_restriction(k) {
            c.push(format!("{path}[{k}]"), r.reason());
        }
        if v.len() > 63 {
            c.push(
                format!("{path}[{k}]"),
                "label values must be at most 63 characters",
            );
        }
    }
}

fn check_taints(c: &mut Collector, path: &str, taints: &[Taint]) {
    for (i, t) in taints.iter().enumerate() {
        if t.key.is_empty() {
            c.push(format!("{path}[{i}].key"), msg::TAINT_KEY);
        }
    }
}

fn check_node_class_ref(c: &mut Collector, path: &str, r: &crate::v1::NodeClassReference) {
    for (field, value) in [("group", &r.group), ("kind", &r.kind), ("name", &r.name)] {
        if value.is_empty() {
            c.push(format!("{path}.{field}"), msg::NOT_EMPTY);
        }
    }
    if r.group.contains('/') {
        c.push(format!("{path}.group"), msg::NO_SLASH);
    }
}

fn check_limits(
    c: &mut Collector,
    path: &str,
    limits: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) {
    for (k, q) in limits {
        if !matches(crate::schema::QUANTITY_PATTERN, &q.0) {
            c.push(
                format!("{path}[{k}]"),
                format!("{:?} is not a quantity", q.0),
            );
        }
    }
}

fn check_requirements(
    c: &mut Collector,
    path: &str,
    reqs: &[NodeSelectorRequirementWithMinValues],
    restriction: fn(&str) -> Option<Restriction>,
) {
    for (i, r) in reqs.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Some(why) = restriction(&r.key) {
            c.push(format!("{p}.key"), why.reason());
        }
        match r.operator {
            Operator::In if r.values.is_empty() => {
                c.push(format!("{p}.values"), msg::IN_NEEDS_VALUE);
            }
            Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                c.push(format!("{p}.values"), msg::EXISTS_NO_VALUES);
            }
            Operator::Gt | Operator::Lt | Operator::Gte | Operator::Lte
                if r.values.len() != 1
                    || !matches(rules::NON_NEGATIVE_INTEGER_PATTERN, &r.values[0]) =>
            {
                c.push(format!("{p}.values"), msg::NUMERIC_SINGLE_VALUE);
            }
            _ => {}
        }
        if let Some(mv) = r.min_values {
            if !(1..=50).contains(&mv) {
                c.push(format!("{p}.minValues"), msg::MIN_VALUES_RANGE);
            } else if r.operator == Operator::In
                && usize::try_from(mv).is_ok_and(|mv| r.values.len() < mv)
            {
                c.push(format!("{p}.minValues"), msg::MIN_VALUES_EXCEEDS_VALUES);
            }
        }
        if r.key == CAPACITY_TYPE_LABEL
            && r.operator == Operator::In
            && r.values
                .iter()
                .any(|v| !CAPACITY_TYPES.contains(&v.as_str()))
        {
            c.push(format!("{p}.values"), msg::CAPACITY_TYPE_VALUES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile() {
        for p in [
            rules::DURATION_PATTERN,
            rules::NILLABLE_DURATION_PATTERN,
            rules::BUDGET_DURATION_PATTERN,
            rules::BUDGET_NODES_PATTERN,
            rules::SCHEDULE_PATTERN,
            rules::NON_NEGATIVE_INTEGER_PATTERN,
            rules::KUBERNETES_DOMAIN_PATTERN,
            rules::ALLOWED_KUBERNETES_DOMAIN_PATTERN,
            crate::schema::QUANTITY_PATTERN,
        ] {
            assert!(Regex::new(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn pattern_semantics() {
        assert!(matches(rules::BUDGET_NODES_PATTERN, "10%"));
        assert!(matches(rules::BUDGET_NODES_PATTERN, "100%"));
        assert!(matches(rules::BUDGET_NODES_PATTERN, "5"));
        assert!(!matches(rules::BUDGET_NODES_PATTERN, "101%"));
        assert!(!matches(rules::BUDGET_NODES_PATTERN, "ten"));
        assert!(matches(rules::SCHEDULE_PATTERN, "0 9 * * mon-fri"));
        assert!(matches(rules::SCHEDULE_PATTERN, "@daily"));
        assert!(!matches(rules::SCHEDULE_PATTERN, "0 9 * *"));
        assert!(matches(rules::NILLABLE_DURATION_PATTERN, "Never"));
        assert!(!matches(rules::DURATION_PATTERN, "Never"));
        assert!(matches(crate::schema::QUANTITY_PATTERN, "1000"));
        assert!(matches(crate::schema::QUANTITY_PATTERN, "1.5Gi"));
        assert!(!matches(crate::schema::QUANTITY_PATTERN, "lots"));
    }

    /// The CEL form of the Kubernetes-domain rule (regexes) and the code form
    /// ([`labels::node_pool_restriction`]) must agree.
    #[test]
    fn kubernetes_domain_rule_agrees_with_code() {
        for key in [
            "kubernetes.io/foo",
            "foo.kubernetes.io/bar",
            "k8s.io/x",
            "a.b.k8s.io/x",
            "node.kubernetes.io/role",
            "x.node.kubernetes.io/role",
            "node-restriction.kubernetes.io/a",
            "kops.k8s.io/ig",
            "topology.kubernetes.io/zone",
            "kubernetes.io/arch",
            "example.com/team",
            "notkubernetes.io/x",
            "team",
        ] {
            let cel_restricted = !labels::ALLOWED_KUBERNETES_LABELS.contains(&key)
                && matches(rules::KUBERNETES_DOMAIN_PATTERN, key)
                && !matches(rules::ALLOWED_KUBERNETES_DOMAIN_PATTERN, key);
            let code_restricted =
                labels::node_pool_restriction(key) == Some(Restriction::KubernetesDomain);
            assert_eq!(cel_restricted, code_restricted, "{key}");
        }
    }
}
