//! Helpers shared by the `simulate` integration tests: run the built binary, read its JSON,
//! and count pods independently of the implementation.
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

/// Runs `karpenter simulate ARGS` with `stdin` (if any) and returns its output.
pub fn simulate(args: &[&str], stdin: Option<&str>) -> Result<Output, std::io::Error> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_karpenter"))
        .arg("simulate")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or("").as_bytes())?;
    }
    child.wait_with_output()
}

/// Runs and parses `-o json`; fails unless the run succeeded.
pub fn json(args: &[&str], stdin: Option<&str>) -> Result<Value, Box<dyn std::error::Error>> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = simulate(&all, stdin)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("simulate failed: {stderr}").into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every pod key the plan lists, with how often.
pub fn listed_pods(plan: &Value) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let empty = Vec::new();
    for c in plan["nodeClaims"].as_array().unwrap_or(&empty) {
        for p in strings(&c["pods"]) {
            *seen.entry(p).or_insert(0) += 1;
        }
    }
    for n in plan["existingNodes"].as_array().unwrap_or(&empty) {
        for p in strings(&n["pods"]) {
            *seen.entry(p).or_insert(0) += 1;
        }
    }
    for u in plan["unschedulable"].as_array().unwrap_or(&empty) {
        if let Some(p) = u["pod"].as_str() {
            *seen.entry(p.to_owned()).or_insert(0) += 1;
        }
    }
    seen
}

/// Pending pods of some manifests, counted independently of the implementation: Pods without
/// `spec.nodeName`, and `<workload>-<i>` for every replica of every workload.
pub fn pending_pods(yaml_files: &[PathBuf]) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for file in yaml_files {
        let docs: Vec<Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(file)?)?;
        for d in docs.into_iter().filter(|d| !d.is_null()) {
            let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = d["metadata"]["name"].as_str().unwrap_or("");
            let count = match d["kind"].as_str().unwrap_or("") {
                "Pod" if d["spec"]["nodeName"].is_null() => Some(None),
                "Deployment" | "StatefulSet" | "ReplicaSet" => Some(d["spec"]["replicas"].as_u64()),
                "Job" => Some(d["spec"]["parallelism"].as_u64()),
                _ => None,
            };
            match count {
                Some(None) if d["kind"] == "Pod" => out.push(format!("{ns}/{name}")),
                Some(n) => {
                    for i in 0..n.unwrap_or(1) {
                        out.push(format!("{ns}/{name}-{i}"));
                    }
                }
                None => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn bundled_files() -> Vec<PathBuf> {
    let dir = repo_root().join("examples/simulate");
    vec![dir.join("nodepools.yaml"), dir.join("workloads.yaml")]
}

pub fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

pub const KWOK_POOL: &str = r"apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: default}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}
      requirements:
      - {key: kubernetes.io/arch, operator: In, values: [amd64]}
      - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
";

pub fn pod(name: &str, cpu: &str, extra_spec: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{extra_spec}  containers:\n  - name: c\n    resources: {{requests: {{cpu: \"{cpu}\", memory: 1Gi}}}}\n"
    )
}

pub fn node(name: &str, cpu: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels: {{kubernetes.io/arch: amd64, kubernetes.io/os: linux, topology.kubernetes.io/zone: test-zone-a}}
status:
  allocatable: {{cpu: "{cpu}", memory: 8Gi, pods: "110"}}
"#
    )
}
