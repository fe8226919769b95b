//! `karpenter simulate` with CapacityBuffers in the input: each buffer adds its virtual pods
//! (shaped by its PodTemplate) to the pending pods; the plan places them like any pod and lists
//! them under `bufferPods`.

mod common;

use common::*;
use serde_json::Value;

const TEMPLATE: &str = "---\napiVersion: v1\nkind: PodTemplate\nmetadata: {name: chunk, namespace: team}\ntemplate:\n  spec:\n    containers:\n    - name: c\n      resources: {requests: {cpu: \"1\", memory: 1Gi}}\n";

fn buffer(spec: &str) -> String {
    format!(
        "---\napiVersion: autoscaling.x-k8s.io/v1beta1\nkind: CapacityBuffer\nmetadata: {{name: spare, namespace: team}}\nspec:\n{spec}"
    )
}

fn plan(extra: &str) -> Result<Value, Box<dyn std::error::Error>> {
    json(&["-f", "-"], Some(&format!("{KWOK_POOL}{extra}")))
}

#[test]
fn replicas_add_that_many_placed_buffer_pods() -> TestResult {
    let p = plan(&format!(
        "{TEMPLATE}{}{}",
        buffer("  podTemplateRef: {name: chunk}\n  replicas: 3\n"),
        pod("web", "1", "")
    ))?;
    let want = [
        "team/capacity-buffer:spare:1",
        "team/capacity-buffer:spare:2",
        "team/capacity-buffer:spare:3",
    ];
    assert_eq!(strings(&p["bufferPods"]), want, "{p:#}");
    // Three buffer pods and the real one, each placed once on a new NodeClaim.
    let listed = listed_pods(&p);
    for key in want.iter().chain(&["default/web"]) {
        assert_eq!(listed.get(*key), Some(&1), "{key} in {p:#}");
    }
    assert_eq!(p["summary"]["pods"], 4, "{p:#}");
    assert_eq!(p["summary"]["unschedulable"], 0, "{p:#}");
    Ok(())
}

#[test]
fn limits_alone_size_the_buffer() -> TestResult {
    // Chunks of 1 CPU / 1Gi under cpu 2.5 and memory 10Gi: floor(2.5) = 2 chunks.
    let p = plan(&format!(
        "{TEMPLATE}{}",
        buffer("  podTemplateRef: {name: chunk}\n  limits: {cpu: \"2500m\", memory: 10Gi}\n")
    ))?;
    assert_eq!(
        strings(&p["bufferPods"]),
        [
            "team/capacity-buffer:spare:1",
            "team/capacity-buffer:spare:2"
        ]
    );
    Ok(())
}

#[test]
fn a_buffer_without_its_template_adds_nothing_and_says_so() -> TestResult {
    let input = format!(
        "{KWOK_POOL}{}{}",
        buffer("  podTemplateRef: {name: missing}\n  replicas: 2\n"),
        pod("web", "1", "")
    );
    let out = simulate(&["-f", "-", "-o", "json"], Some(&input))?;
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CapacityBuffer team/spare") && stderr.contains("PodTemplate team/missing"),
        "{stderr}"
    );
    let p: Value = serde_json::from_slice(&out.stdout)?;
    assert!(p.get("bufferPods").is_none(), "{p:#}");
    assert_eq!(p["summary"]["pods"], 1, "{p:#}");
    Ok(())
}

#[test]
fn an_invalid_buffer_is_an_error_naming_the_rule() -> TestResult {
    let input = format!(
        "{KWOK_POOL}{TEMPLATE}{}",
        buffer("  podTemplateRef: {name: chunk}\n")
    );
    let out = simulate(&["-f", "-"], Some(&input))?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replicas or limits must also be set"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_percentage_of_a_deployment_of_the_input() -> TestResult {
    // 50% of 3 replicas = 1.5, rounded up: 2 chunks shaped like the Deployment's pods.
    let deployment = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: team}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: c\n        resources: {requests: {cpu: \"1\", memory: 1Gi}}\n";
    let p = plan(&format!(
        "{deployment}{}",
        buffer("  scalableRef: {apiGroup: apps, kind: Deployment, name: web}\n  percentage: 50\n")
    ))?;
    assert_eq!(
        strings(&p["bufferPods"]),
        [
            "team/capacity-buffer:spare:1",
            "team/capacity-buffer:spare:2"
        ],
        "{p:#}"
    );
    // The Deployment's 3 pods and the 2 chunks.
    assert_eq!(p["summary"]["pods"], 5, "{p:#}");
    Ok(())
}
