//! Unit tests of the manifests reader: documents, Lists and workloads; errors that name the
//! file, the document and the field; inputs of any size; YAML bombs.

use k8s_openapi::api::core::v1::Pod;

use super::manifests::*;

fn parse_one(text: &str) -> Result<Manifests, ManifestError> {
    parse(&[Input {
        name: "test.yaml".into(),
        text: text.into(),
    }])
}

fn key(p: &Sourced<Box<Pod>>) -> String {
    format!(
        "{}/{}",
        p.object.metadata.namespace.as_deref().unwrap_or(""),
        p.object.metadata.name.as_deref().unwrap_or("")
    )
}

#[test]
fn workloads_expand_into_named_pods() -> Result<(), ManifestError> {
    let m = parse_one(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n\
         spec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    \
         metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: c\n        \
         resources: {requests: {cpu: 1, memory: 1Gi}}\n---\n\
         apiVersion: batch/v1\nkind: Job\nmetadata: {name: etl}\n\
         spec:\n  template:\n    spec:\n      containers: [{name: c}]\n",
    )?;
    let names: Vec<String> = m.pods.iter().map(key).collect();
    assert_eq!(
        names,
        ["shop/web-0", "shop/web-1", "shop/web-2", "default/etl-0"]
    );
    let labels = m.pods[1]
        .object
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app"));
    assert_eq!(labels.map(String::as_str), Some("web"));
    assert_eq!(m.pods[0].origin.object, "Deployment shop/web");
    assert_eq!(m.pods[0].origin.spec_path, "spec.template.spec");
    assert_eq!(m.pods[3].origin.source.document, 1);
    Ok(())
}

#[test]
fn a_bad_field_names_file_document_and_path() {
    let err = parse_one(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\nspec: {containers: [{name: c}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\n\
         spec:\n  containers:\n  - name: c\n    ports: [{containerPort: eighty}]\n",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("test.yaml: document 1"), "{err}");
    assert!(err.contains("Pod bad"), "{err}");
    assert!(
        err.contains("spec.containers[0].ports[0].containerPort"),
        "{err}"
    );
}

#[test]
fn empty_documents_are_not_counted() {
    let err = parse_one("---\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: 3\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.starts_with("test.yaml: document 0 (Pod x): spec"),
        "{err}"
    );
}

#[test]
fn lists_are_read_item_by_item() -> Result<(), ManifestError> {
    let text = "apiVersion: v1\nkind: List\nitems:\n\
                - {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: []}}\n\
                - {apiVersion: v1, kind: Pod, metadata: {name: b}, spec: {nodeName: 7}}\n";
    let err = parse_one(text)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("(Pod b): items[1].spec.nodeName"), "{err}");
    let m = parse_one(&text.replace("nodeName: 7", "containers: []"))?;
    assert_eq!(m.pods.len(), 2);
    assert_eq!(m.pods[1].origin.spec_path, "items[1].spec");
    Ok(())
}

#[test]
fn unknown_kinds_are_skipped_with_one_warning() -> Result<(), ManifestError> {
    let m = parse_one("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n")?;
    assert_eq!(m.warnings.len(), 1);
    assert!(m.warnings[0].contains("Service web"), "{}", m.warnings[0]);
    Ok(())
}

#[test]
fn invalid_yaml_is_an_error_naming_the_file() {
    let err = parse_one("kind: Pod\n  bad: [indent\n")
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.starts_with("test.yaml: invalid YAML")));
}

#[test]
fn a_document_without_kind_is_an_error() {
    let err = parse_one("apiVersion: v1\nmetadata: {name: x}\n")
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("kind: missing")));
}

/// `n` Pod documents `shop/p-0`..`shop/p-{n-1}`, document i being pod i.
fn pods_text(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p-{i}, namespace: shop}}\n\
                 spec:\n  containers:\n  - name: c\n    ports: [{{containerPort: 80}}]\n"
            )
        })
        .collect()
}

#[test]
fn five_thousand_documents_are_read() -> Result<(), ManifestError> {
    // serde-saphyr's default budget stops at 1 024 documents.
    let m = parse_one(&pods_text(5000))?;
    assert_eq!(m.pods.len(), 5000);
    assert_eq!(key(&m.pods[4999]), "shop/p-4999");
    assert_eq!(m.pods[4999].origin.source.document, 4999);
    Ok(())
}

#[test]
fn a_bad_document_deep_in_a_large_file_is_named() {
    let text = pods_text(5000).replace(
        "name: p-3000, namespace: shop}\nspec:\n  containers:\n  - name: c\n    ports: [{containerPort: 80}]",
        "name: p-3000, namespace: shop}\nspec:\n  containers:\n  - name: c\n    ports: [{containerPort: eighty}]",
    );
    let err = parse_one(&text)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.starts_with(
            "test.yaml: document 3000 (Pod shop/p-3000): spec.containers[0].ports[0].containerPort: "
        ),
        "{err}"
    );
}

#[test]
fn a_list_past_the_default_yaml_budget_is_read() -> Result<(), ManifestError> {
    // 5 000 Pod documents, then one List of 20 000 Pods: 300 000 YAML nodes in that one
    // document alone (serde-saphyr's default budget allows 250 000 per stream). 100 000 pods
    // end to end are in the bench (`simulate-diverse-100000`): in a debug test build they
    // took minutes.
    let mut text = String::with_capacity(25_000 * 100);
    for i in 0..5_000 {
        text.push_str(&format!(
            "---\n{{apiVersion: v1, kind: Pod, metadata: {{name: d-{i}}}, spec: {{containers: [{{name: c}}]}}}}\n"
        ));
    }
    text.push_str("---\napiVersion: v1\nkind: List\nitems:\n");
    for i in 0..20_000 {
        text.push_str(&format!(
            "- {{apiVersion: v1, kind: Pod, metadata: {{name: l-{i}}}, spec: {{containers: [{{name: c}}]}}}}\n"
        ));
    }
    let m = parse_one(&text)?;
    assert_eq!(m.pods.len(), 25_000);
    assert_eq!(key(&m.pods[4_999]), "/d-4999");
    assert_eq!(key(&m.pods[24_999]), "/l-19999");
    assert_eq!(m.pods[24_999].origin.source.document, 5_000);
    assert_eq!(m.pods[24_999].origin.spec_path, "items[19999].spec");
    Ok(())
}

#[test]
fn a_yaml_bomb_is_refused() {
    // "Billion laughs": 9 levels of 10 aliases each expand 200 bytes into 10^9 strings.
    let mut text = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    let levels = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in levels.windows(2) {
        let refs = vec![format!("*{}", pair[0]); 10].join(", ");
        text.push_str(&format!("  {}: &{} [{refs}]\n", pair[1], pair[1]));
    }
    let err = parse_one(&text).err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.starts_with("test.yaml: invalid YAML")),
        "{err:?}"
    );
}
