//! `karpenter simulate` on inputs of any size (issue 16, item 1): thousands of documents in one
//! file are read and planned, and a bad document deep inside is still named. The inputs are
//! generated here (nothing large is committed). Speed is measured in `bench/`, not here.

mod common;

use std::path::Path;

use common::*;

const POOL: &str = "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: default}\n\
spec:\n  template:\n    spec:\n      nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}\n      requirements: []\n";

/// The NodePool, then `pods` Pod documents `default/p-0`.. asking 1 cpu each: document i + 1
/// is pod i.
fn input(pods: usize) -> String {
    let mut text = String::from(POOL);
    for i in 0..pods {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p-{i}, namespace: default}}\n\
             spec:\n  containers:\n  - name: c\n    resources: {{requests: {{cpu: \"1\"}}}}\n"
        ));
    }
    text
}

fn write(name: &str, text: &str) -> Result<String, std::io::Error> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

#[test]
fn five_thousand_documents_are_read_and_planned() -> TestResult {
    // 1 NodePool + 4 999 pods = 5 000 documents. The catalog's only type has 4 cpu and no
    // overhead at 1.0/h, so 4 pods per node: ⌈4999 / 4⌉ = 1 250 nodes for 1 250.0/h. The
    // bound: the LP alone gives 4999/4 = 1 249.75, the cover cut "pods / pods per node, rounded
    // up" lifts it to 1 250 whole nodes at 1.0.
    let file = write("five-thousand-documents.yaml", &input(4999))?;
    let catalog = data("one-type-catalog.json");
    let plan = json(&["-f", &file, "--catalog", &catalog], None)?;
    let listed = listed_pods(&plan);
    assert_eq!(listed.len(), 4999);
    assert!(listed.values().all(|n| *n == 1));
    assert!(listed.contains_key("default/p-0") && listed.contains_key("default/p-4998"));
    let s = &plan["summary"];
    assert_eq!(s["nodeClaims"].as_u64(), Some(1250));
    assert_eq!(s["pods"].as_u64(), Some(4999));
    assert!((f64_of(&s["pricePerHour"]) - 1250.0).abs() < 1e-6, "{s}");
    assert!(
        (f64_of(&s["lowerBoundPerHour"]) - 1250.0).abs() < 1e-3,
        "{s}"
    );
    Ok(())
}

#[test]
fn a_malformed_document_at_index_3000_is_named() -> TestResult {
    // Document 3000 is pod p-2999 (document 0 is the NodePool).
    let text = input(4999).replace(
        "name: p-2999, namespace: default}\nspec:\n  containers:\n  - name: c\n    resources: {requests: {cpu: \"1\"}}",
        "name: p-2999, namespace: default}\nspec:\n  containers:\n  - name: c\n    resources: {requests: [1]}",
    );
    let file = write("bad-document-3000.yaml", &text)?;
    let catalog = data("one-type-catalog.json");
    let out = simulate(&["-f", &file, "--catalog", &catalog, "-o", "json"], None)?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing is half-printed");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}: document 3000 (Pod default/p-2999): spec.containers[0].resources.requests: "
        )),
        "{stderr}"
    );
    Ok(())
}
