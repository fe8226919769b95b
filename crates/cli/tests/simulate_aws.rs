//! `karpenter simulate --catalog aws`: the AWS provider's embedded us-east-1 catalog.

mod common;

use common::{TestResult, data, json, listed_pods, strings};
use serde_json::Value;

/// The embedded catalog's on-demand price of `name`, read through the library the binary uses.
fn on_demand(name: &str) -> Result<f64, String> {
    let catalog = karpenter_aws::StaticCatalog::embedded().map_err(|e| e.to_string())?;
    catalog
        .on_demand_price(name)
        .ok_or_else(|| format!("{name} is not in the aws catalog"))
}

fn claims(plan: &Value) -> Vec<Value> {
    plan["nodeClaims"].as_array().cloned().unwrap_or_default()
}

#[test]
fn the_legacy_provisioner_simulates_against_the_aws_catalog() -> TestResult {
    let plan = json(
        &["-f", &data("legacy-provisioner.yaml"), "--catalog", "aws"],
        None,
    )?;
    let claims = claims(&plan);
    assert!(!claims.is_empty(), "{plan}");
    assert!(
        plan["unschedulable"].as_array().is_some_and(Vec::is_empty),
        "{plan}"
    );
    let allowed = ["m5.large", "m5.xlarge", "m5.2xlarge", "c5.xlarge"];
    let mut total = 0.0;
    for c in &claims {
        let it = c["instanceType"].as_str().unwrap_or("");
        assert!(allowed.contains(&it), "{it}");
        assert_eq!(c["capacityType"], "spot");
        let zone = c["zone"].as_str().unwrap_or("");
        assert!(zone.starts_with("us-east-1"), "{zone}");
        // Spot prices of the static catalog are on-demand × the documented ratio.
        let expected = on_demand(it)? * karpenter_aws::SPOT_PRICE_RATIO;
        let price = c["pricePerHour"].as_f64().unwrap_or(-1.0);
        assert!(
            (price - expected).abs() < 1e-6,
            "{it}: {price} != {expected}"
        );
        total += price;
        let labels = &c["labels"];
        assert_eq!(labels["node-type"], "worker");
        assert_eq!(labels["topology.kubernetes.io/region"], "us-east-1");
        let family = it.split('.').next().unwrap_or("");
        assert_eq!(labels["karpenter.k8s.aws/instance-family"], family);
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        for o in strings(&c["instanceTypeOptions"]) {
            assert!(allowed.contains(&o.as_str()), "{o}");
        }
    }
    let summary = plan["summary"]["pricePerHour"].as_f64().unwrap_or(-1.0);
    assert!((summary - total).abs() < 1e-6, "{summary} != {total}");
    assert_eq!(plan["summary"]["pods"], 5);
    assert!(listed_pods(&plan).values().all(|n| *n == 1));
    Ok(())
}

/// A NodePool that selects by AWS labels (family, arch) only gets matching types.
#[test]
fn aws_labels_select_instance_types() -> TestResult {
    let input = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: graviton}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.k8s.aws/instance-category, operator: In, values: ["c"]}
        - {key: karpenter.k8s.aws/instance-generation, operator: In, values: ["7"]}
        - {key: kubernetes.io/arch, operator: In, values: ["arm64"]}
        - {key: karpenter.sh/capacity-type, operator: In, values: ["on-demand"]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          resources: {requests: {cpu: "3", memory: 4Gi}}
"#;
    let plan = json(&["-f", "-", "--catalog", "aws"], Some(input))?;
    let claims = claims(&plan);
    assert!(!claims.is_empty(), "{plan}");
    for c in &claims {
        let it = c["instanceType"].as_str().unwrap_or("");
        assert!(it.starts_with("c7g"), "{it}");
        assert_eq!(c["labels"]["kubernetes.io/arch"], "arm64");
        assert_eq!(c["capacityType"], "on-demand");
        let price = c["pricePerHour"].as_f64().unwrap_or(-1.0);
        assert!((price - on_demand(it)?).abs() < 1e-9, "{it}: {price}");
    }
    assert_eq!(plan["summary"]["unschedulable"], 0, "{plan}");
    Ok(())
}
