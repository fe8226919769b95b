//! End-to-end tests of `karpenter simulate` on bad input: every mistake is a clean non-zero
//! exit whose message names the file, the document and the field, never a panic.

mod common;

use std::path::Path;

use serde_json::Value;

use common::*;

/// Writes `text` to a file named `name` for a test that wants a real file name in errors.
fn temp_file(name: &str, text: &str) -> Result<String, std::io::Error> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

/// Runs on a bad input file and returns stderr, checking for a clean non-zero exit.
fn failure(name: &str, text: &str) -> Result<String, Box<dyn std::error::Error>> {
    let file = temp_file(name, text)?;
    let out = simulate(&["-f", &file], None)?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(!out.status.success(), "{name} should fail");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(&file), "names the file: {stderr}");
    Ok(stderr)
}

#[test]
fn malformed_yaml_is_an_error_naming_the_file() -> TestResult {
    let err = failure(
        "malformed.yaml",
        "apiVersion: v1\nkind: Pod\n  metadata: [oops\n",
    )?;
    assert!(err.contains("invalid YAML"), "{err}");
    Ok(())
}

#[test]
fn an_unknown_operator_in_a_nodepool_names_document_and_field() -> TestResult {
    let bad = KWOK_POOL.replace(
        "operator: In, values: [amd64]",
        "operator: Into, values: [amd64]",
    );
    let err = failure(
        "bad-operator.yaml",
        &format!("{}---\n{bad}", pod("a", "1", "")),
    )?;
    assert!(err.contains("document 1"), "{err}");
    assert!(err.contains("NodePool"), "{err}");
    assert!(
        err.contains("spec.template.spec.requirements[0].operator"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_bad_quantity_names_document_object_and_field() -> TestResult {
    let deploy = r"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        resources: {requests: {cpu: 1, memory: 1Gb}}
";
    let err = failure("bad-quantity.yaml", &format!("{KWOK_POOL}---\n{deploy}"))?;
    assert!(err.contains("document 1"), "{err}");
    assert!(err.contains("Deployment shop/web"), "{err}");
    assert!(
        err.contains("spec.template.spec.containers[0].resources.requests.memory"),
        "{err}"
    );
    let err = failure("bad-cpu.yaml", &pod("a", "lots", ""))?;
    assert!(
        err.contains("spec.containers[0].resources.requests.cpu"),
        "{err}"
    );
    let bad_limit = KWOK_POOL.replace(
        "spec:\n  template:",
        "spec:\n  limits: {cpu: ten}\n  template:",
    );
    let err = failure("bad-limit.yaml", &bad_limit)?;
    // The api crate checks NodePool limits and names the field its own way.
    assert!(err.contains("spec.limits") && err.contains("cpu"), "{err}");
    Ok(())
}

#[test]
fn a_missing_field_names_document_and_field() -> TestResult {
    let no_ref = KWOK_POOL.replace(
        "      nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}\n",
        "",
    );
    let err = failure("missing-ref.yaml", &no_ref)?;
    assert!(err.contains("document 0"), "{err}");
    assert!(err.contains("nodeClassRef"), "{err}");
    let node = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {}\n";
    let err = failure("no-allocatable.yaml", &format!("{KWOK_POOL}---\n{node}"))?;
    assert!(
        err.contains("document 1 (Node n1): status.allocatable"),
        "{err}"
    );
    let spread =
        "  topologySpreadConstraints:\n  - {maxSkew: 1, whenUnsatisfiable: DoNotSchedule}\n";
    let err = failure("no-topology-key.yaml", &pod("a", "1", spread))?;
    assert!(err.contains("spec.topologySpreadConstraints[0]"), "{err}");
    assert!(err.contains("topologyKey"), "{err}");
    Ok(())
}

#[test]
fn unknown_kinds_are_skipped_with_a_warning() -> TestResult {
    let input = format!(
        "{KWOK_POOL}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n{}",
        pod("a", "1", "")
    );
    let out = simulate(&["-f", "-", "-o", "json"], Some(&input))?;
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    assert_eq!(
        stderr.lines().filter(|l| l.contains("Service web")).count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.starts_with("warning: <stdin>: document 1"),
        "{stderr}"
    );
    let plan: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(plan["summary"]["pods"], 1);
    Ok(())
}

#[test]
fn bad_catalog_files_give_clear_errors() -> TestResult {
    let file = temp_file(
        "bad-catalog.json",
        r#"{"instanceTypes": [{"name": "x", "capacity": {"cpu": "two"}, "offerings": []}]}"#,
    )?;
    let out = simulate(&["--catalog", &file], None)?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{file}: instanceTypes[0].capacity.cpu")),
        "{stderr}"
    );
    Ok(())
}
