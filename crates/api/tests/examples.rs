//! Every example manifest round-trips through the types without losing a field, passes the
//! in-code validation and the CRDs' CEL rules.

mod common;

use common::{documents, repo_root, validate_with_crd_cel, yaml_files};
use karpenter_api::read::{KarpenterObject, object_from_value};
use serde_json::Value;

/// Whether every field of `input` is in `output` with the same value. A YAML integer may come
/// back as the equal string (quantities are stored as strings).
fn contained(path: &str, input: &Value, output: &Value, problems: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                match o.get(k) {
                    Some(ov) => contained(&format!("{path}.{k}"), v, ov, problems),
                    None => problems.push(format!("{path}.{k} was dropped")),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            if i.len() != o.len() {
                problems.push(format!("{path}: {} items became {}", i.len(), o.len()));
            }
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                contained(&format!("{path}[{n}]"), iv, ov, problems);
            }
        }
        (Value::Number(n), Value::String(s)) if n.to_string() == *s => {}
        (i, o) if i == o => {}
        (i, o) => problems.push(format!("{path}: {i} became {o}")),
    }
}

fn example_files() -> Vec<std::path::PathBuf> {
    let root = repo_root().join("examples");
    let mut files = yaml_files(&root.join("nodepools"));
    files.extend(yaml_files(&root.join("legacy")));
    files
}

#[test]
fn examples_round_trip_without_dropping_fields() {
    let files = example_files();
    assert!(files.len() >= 6, "examples missing: {files:?}");
    let mut kinds = Vec::new();
    let mut problems = Vec::new();
    for path in &files {
        for (i, doc) in documents(path).into_iter().enumerate() {
            let at = format!("{}#{i}", path.display());
            let object = match object_from_value(doc.clone()) {
                Ok(Some(o)) => o,
                Ok(None) => {
                    problems.push(format!("{at}: not a Karpenter object"));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{at}: {e}"));
                    continue;
                }
            };
            kinds.push(object.kind());
            let out = object.to_value().expect("serialize");
            contained(&at, &doc, &out, &mut problems);
            let again = object_from_value(out.clone())
                .expect("re-read")
                .expect("still a Karpenter object");
            assert_eq!(again, object, "{at}: parse(serialize(x)) != x");
            assert_eq!(
                again.to_value().expect("serialize"),
                out,
                "{at}: not idempotent"
            );
            if let Err(e) = validate_with_crd_cel(&doc) {
                problems.push(format!("{at}: CEL rejected a valid example: {e}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for kind in [
        "NodePool",
        "NodeClaim",
        "EC2NodeClass",
        "KWOKNodeClass",
        "Provisioner",
    ] {
        assert!(kinds.contains(&kind), "no {kind} example");
    }
}

#[test]
fn defaults_are_applied_on_read() {
    let np = object_from_value(serde_json::json!({
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": "minimal"},
        "spec": {"template": {"spec": {
            "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "d"},
            "requirements": []
        }}}
    }))
    .expect("valid")
    .expect("typed");
    let KarpenterObject::NodePool(np) = np else {
        panic!("not a NodePool")
    };
    assert_eq!(np.spec.template.spec.expire_after, "720h");
    assert_eq!(np.spec.disruption.consolidate_after, "0s");
    assert_eq!(
        np.spec.disruption.consolidation_policy,
        karpenter_api::v1::ConsolidationPolicy::WhenEmptyOrUnderutilized
    );
    assert_eq!(np.spec.disruption.budgets.len(), 1);
    assert_eq!(np.spec.disruption.budgets[0].nodes, "10%");
    assert_eq!(np.spec.weight, None);
}

#[test]
fn parse_karpenter_objects_reads_a_stream_and_names_the_bad_document() {
    let text = std::fs::read_to_string(repo_root().join("examples/legacy/provisioner.yaml"))
        .expect("read");
    let docs = karpenter_api::parse_karpenter_objects(&text).expect("valid stream");
    assert_eq!(docs.len(), 2);
    assert!(
        docs.iter()
            .all(|d| matches!(d.object, Some(KarpenterObject::Provisioner(_))))
    );

    let bad = format!(
        "{text}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n{}",
        text.replace("ttlSecondsAfterEmpty: 30", "ttlSecondsAfterEmpty: -5")
    );
    let err = karpenter_api::parse_karpenter_objects(&bad).expect_err("negative TTL");
    let msg = err.to_string();
    assert!(msg.starts_with("document 3: "), "{msg}");
    assert!(
        msg.contains("Provisioner \"default\": spec.ttlSecondsAfterEmpty: must be non-negative"),
        "{msg}"
    );
}

#[test]
fn transition_rules_keep_immutable_fields_immutable() {
    use karpenter_api::v1::{NodeClaim, NodePool};
    let np_doc = documents(&repo_root().join("examples/nodepools/default.yaml")).remove(0);
    let old: NodePool = serde_json::from_value(np_doc).expect("NodePool");
    let mut reweighted = old.clone();
    reweighted.spec.weight = Some(7);
    reweighted
        .validate_cel_update(&old)
        .expect("weight may change");
    let mut rekinded = old.clone();
    rekinded.spec.template.spec.node_class_ref.kind = "EC2NodeClass".into();
    let err = rekinded
        .validate_cel_update(&old)
        .expect_err("kind is immutable");
    assert!(
        err.to_string().contains("nodeClassRef.kind: is immutable"),
        "{err}"
    );

    let nc_doc = documents(&repo_root().join("examples/nodepools/nodeclaim.yaml")).remove(0);
    let old: NodeClaim = serde_json::from_value(nc_doc).expect("NodeClaim");
    let mut changed = old.clone();
    changed.spec.expire_after = "1h".into();
    let err = changed
        .validate_cel_update(&old)
        .expect_err("spec is immutable");
    assert!(err.to_string().contains("spec: is immutable"), "{err}");
    let mut status_only = old.clone();
    status_only.status = None;
    status_only
        .validate_cel_update(&old)
        .expect("status may change");
}

#[test]
fn kwok_node_class_without_spec_is_read_and_not_required_by_the_crd() {
    // Upstream's KWOKNodeClass has no required field, and manifests often leave spec out.
    let text =
        "apiVersion: karpenter.kwok.sh/v1alpha1\nkind: KWOKNodeClass\nmetadata: {name: default}\n";
    let docs = karpenter_api::parse_karpenter_objects(text).expect("a spec-less KWOKNodeClass");
    match docs.first().and_then(|d| d.object.as_ref()) {
        Some(KarpenterObject::KWOKNodeClass(c)) => {
            assert_eq!(c.spec, karpenter_api::kwok::KWOKNodeClassSpec::default());
        }
        other => panic!("expected a KWOKNodeClass, got {other:?}"),
    }
    let crd = karpenter_api::all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "KWOKNodeClass")
        .expect("the KWOKNodeClass CRD");
    for v in &crd.spec.versions {
        let required = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.required.clone())
            .unwrap_or_default();
        assert!(!required.contains(&"spec".to_string()), "{required:?}");
    }
}
