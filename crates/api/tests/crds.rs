//! The generated CRDs: checked-in copies are current, schemas are structural, and every CEL
//! rule compiles and stays within the apiserver's cost budget.

use std::path::PathBuf;

use karpenter_api::crds::{all_crds, crd_file_name, crd_yaml};
use kube::core::cel::{ScopeContext, WarningKind, analyze_rule, compile_schema};
use serde_json::Value;

fn chart_crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/karpenter/crds")
}

#[test]
fn checked_in_crds_are_current() {
    let dir = chart_crds_dir();
    let update = std::env::var_os("UPDATE_CRDS").is_some();
    if update {
        std::fs::create_dir_all(&dir).expect("create charts/karpenter/crds");
    }
    let mut stale = Vec::new();
    for crd in all_crds() {
        let path = dir.join(crd_file_name(&crd));
        let want = crd_yaml(&crd).expect("serialize CRD");
        if update {
            std::fs::write(&path, &want).expect("write CRD");
            continue;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "CRD manifests are out of date with the Rust types: {stale:?}\n\
         regenerate them with: UPDATE_CRDS=1 cargo test -p karpenter-api --test crds"
    );
}

#[test]
fn crds_yaml_is_deterministic_and_parses_back() {
    let a = karpenter_api::crds_yaml().expect("yaml");
    let b = karpenter_api::crds_yaml().expect("yaml");
    assert_eq!(a, b);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&a).expect("parse back");
    assert_eq!(docs.len(), 7);
    let names: Vec<&str> = docs
        .iter()
        .filter_map(|d| d.pointer("/metadata/name").and_then(Value::as_str))
        .collect();
    assert_eq!(
        names,
        [
            "nodepools.karpenter.sh",
            "nodeclaims.karpenter.sh",
            "kwoknodeclasses.karpenter.kwok.sh",
            "ec2nodeclasses.karpenter.k8s.aws",
            "provisioners.karpenter.sh",
            "nodeoverlays.karpenter.sh",
            "capacitybuffers.autoscaling.x-k8s.io"
        ]
    );
    // Karpenter's own kinds are cluster-scoped; CapacityBuffers live next to their workloads.
    for d in &docs {
        let want = if d.pointer("/spec/names/kind") == Some(&Value::from("CapacityBuffer")) {
            "Namespaced"
        } else {
            "Cluster"
        };
        assert_eq!(d.pointer("/spec/scope"), Some(&Value::from(want)));
    }
}

/// Kubernetes' structural-schema rules, as far as a static walk can check them.
fn check_structural(path: &str, s: &Value, problems: &mut Vec<String>) {
    let Some(obj) = s.as_object() else {
        problems.push(format!("{path}: schema is not an object"));
        return;
    };
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !int_or_string {
        problems.push(format!("{path}: no type"));
    }
    for forbidden in [
        "$ref",
        "allOf",
        "oneOf",
        "not",
        "uniqueItems",
        "definitions",
        "$schema",
    ] {
        if obj.contains_key(forbidden) {
            problems.push(format!("{path}: uses {forbidden}"));
        }
    }
    if let Some(any_of) = obj.get("anyOf") {
        if !int_or_string {
            problems.push(format!("{path}: anyOf outside int-or-string"));
        }
        let want = serde_json::json!([{"type": "integer"}, {"type": "string"}]);
        if any_of != &want {
            problems.push(format!("{path}: anyOf is {any_of}"));
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        problems.push(format!("{path}: both properties and additionalProperties"));
    }
    if let Some(t) = obj.get("type").and_then(Value::as_str) {
        if t == "object"
            && !preserve
            && !obj.contains_key("properties")
            && !obj.contains_key("additionalProperties")
        {
            problems.push(format!("{path}: object without properties"));
        }
        if t == "array" && !obj.contains_key("items") {
            problems.push(format!("{path}: array without items"));
        }
        if t == "array" && !obj.contains_key("maxItems") && path.contains(".spec") {
            problems.push(format!("{path}: unbounded list in spec"));
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(&format!("{path}.{k}"), v, problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(&format!("{path}[]"), items, problems);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        check_structural(&format!("{path}{{}}"), ap, problems);
    }
}

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let v = serde_json::to_value(crd).expect("crd json");
    v.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
        .expect("schema")
}

#[test]
fn schemas_are_structural() {
    let mut problems = Vec::new();
    for crd in all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let schema = schema_of(&crd);
        // The root carries apiVersion/kind/metadata implicitly.
        check_structural(&name, &schema, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "non-structural schema:\n{}",
        problems.join("\n")
    );
}

fn collect_rules(path: &str, s: &Value, out: &mut Vec<(String, Value, String)>) {
    if let Some(rules) = s.get("x-kubernetes-validations").and_then(Value::as_array) {
        for r in rules {
            let rule = r
                .get("rule")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            out.push((path.to_owned(), s.clone(), rule));
        }
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            collect_rules(&format!("{path}.{k}"), v, out);
        }
    }
    if let Some(items) = s.get("items") {
        collect_rules(&format!("{path}[]"), items, out);
    }
    if let Some(ap) = s.get("additionalProperties").filter(|v| v.is_object()) {
        collect_rules(&format!("{path}{{}}"), ap, out);
    }
}

#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    let mut rules = Vec::new();
    for crd in all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        collect_rules(&name, &schema_of(&crd), &mut rules);
    }
    assert!(
        rules.len() > 30,
        "expected many rules, found {}",
        rules.len()
    );
    let mut problems = Vec::new();
    for (path, node, rule) in &rules {
        let compiled = compile_schema(node);
        for e in compiled.validations.iter().filter_map(|r| r.as_ref().err()) {
            problems.push(format!("{path}: {rule}: {e}"));
        }
        // WrongScope is not checked: kube-cel flags comprehension variables (`x` in
        // `self.all(x, ...)`) as out of scope.
        for w in analyze_rule(rule, &compiled, ScopeContext::CrdValidation) {
            if matches!(
                w.kind,
                WarningKind::CostExceeded | WarningKind::MissingBounds
            ) {
                problems.push(format!("{path}: {}", w.message));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "CEL problems:\n{}",
        problems.join("\n")
    );
}
