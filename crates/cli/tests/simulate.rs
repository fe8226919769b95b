//! End-to-end tests of `karpenter simulate` plans: the built binary on real manifests, checked
//! against the §6 contract of design.md.

mod common;

use serde_json::Value;

use common::*;

#[test]
fn bundled_example_places_every_pending_pod_exactly_once() -> TestResult {
    let plan = json(&[], None)?;
    let expected = pending_pods(&bundled_files())?;
    assert!(
        expected.len() >= 10,
        "the example should have a dozen pods: {expected:?}"
    );
    let listed = listed_pods(&plan);
    let dupes: Vec<_> = listed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "listed more than once: {dupes:?}");
    assert_eq!(listed.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(
        !listed.contains_key("monitoring/prometheus-0"),
        "bound pods are not listed"
    );
    let s = &plan["summary"];
    assert_eq!(
        s["pods"].as_u64().unwrap_or(0) + s["unschedulable"].as_u64().unwrap_or(0),
        expected.len() as u64
    );
    assert_eq!(
        s["nodeClaims"].as_u64(),
        plan["nodeClaims"].as_array().map(|a| a.len() as u64)
    );
    assert_eq!(plan["disruptions"], Value::Array(vec![]));
    // The example shows every kind of outcome.
    assert!(
        !plan["existingNodes"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    );
    let reasons: Vec<&str> = plan["unschedulable"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["reason"].as_str()).collect())
        .unwrap_or_default();
    assert!(reasons.iter().any(|r| r.contains("500 cpu")), "{reasons:?}");
    Ok(())
}

#[test]
fn prices_add_up_and_the_ratio_is_price_over_bound() -> TestResult {
    let plan = json(&[], None)?;
    let sum: f64 = plan["nodeClaims"]
        .as_array()
        .map(|a| a.iter().map(|c| f64_of(&c["pricePerHour"])).sum())
        .unwrap_or(0.0);
    let s = &plan["summary"];
    let (price, bound, ratio) = (
        f64_of(&s["pricePerHour"]),
        f64_of(&s["lowerBoundPerHour"]),
        f64_of(&s["costRatio"]),
    );
    assert!((price - sum).abs() < 1e-9, "{price} != {sum}");
    assert!(
        bound > 0.0 && bound <= price,
        "bound {bound}, price {price}"
    );
    assert!(ratio >= 1.0, "{ratio}");
    assert!(
        (ratio - price / bound).abs() < 1e-5,
        "{ratio} vs {}",
        price / bound
    );
    Ok(())
}

#[test]
fn claims_carry_the_documented_labels() -> TestResult {
    let plan = json(&[], None)?;
    let claims = plan["nodeClaims"].as_array().cloned().unwrap_or_default();
    assert!(!claims.is_empty());
    for c in &claims {
        let l = &c["labels"];
        assert_eq!(l["node.kubernetes.io/instance-type"], c["instanceType"]);
        assert_eq!(l["topology.kubernetes.io/zone"], c["zone"]);
        assert_eq!(l["karpenter.sh/capacity-type"], c["capacityType"]);
        assert_eq!(l["karpenter.sh/nodepool"], c["nodePool"]);
        assert!(
            strings(&c["instanceTypeOptions"])
                .contains(&c["instanceType"].as_str().unwrap_or("").to_owned())
        );
        if c["nodePool"] == "default" {
            assert_eq!(l["team"], "platform", "template labels");
        }
        if c["nodePool"] == "batch" {
            assert_eq!(l["node-type"], "batch", "Provisioner labels");
            assert_eq!(c["taints"][0]["key"], "example.com/batch");
        }
    }
    Ok(())
}

#[test]
fn output_is_deterministic_and_the_directory_gives_the_bundled_plan() -> TestResult {
    let a = simulate(&["-o", "json"], None)?;
    let b = simulate(&["-o", "json"], None)?;
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout, "two runs must be byte-identical");
    let dir = repo_root().join("examples/simulate").display().to_string();
    let c = simulate(&["-f", &dir, "-o", "json"], None)?;
    assert_eq!(
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&c.stdout)
    );
    let t1 = simulate(&[], None)?;
    let t2 = simulate(&[], None)?;
    assert_eq!(t1.stdout, t2.stdout, "the table too");
    Ok(())
}

#[test]
fn yaml_is_the_same_document_as_json() -> TestResult {
    let from_json = json(&[], None)?;
    let out = simulate(&["-o", "yaml"], None)?;
    assert!(out.status.success());
    let from_yaml: Value = serde_saphyr::from_str(&String::from_utf8(out.stdout)?)?;
    assert_eq!(from_yaml, from_json);
    Ok(())
}

#[test]
fn table_shows_rows_totals_bound_and_reasons() -> TestResult {
    let out = simulate(&[], None)?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    for needle in [
        "NODEPOOL",
        "INSTANCE TYPE",
        "TOTAL",
        "lower bound",
        "x the bound",
        "Unschedulable pods:",
        "default/huge-0",
        "node-1:",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    Ok(())
}

#[test]
fn the_legacy_provisioner_works_as_a_nodepool() -> TestResult {
    let plan = json(
        &[
            "-f",
            &data("legacy-provisioner.yaml"),
            "--catalog",
            &data("aws-small-catalog.json"),
        ],
        None,
    )?;
    let claims = plan["nodeClaims"].as_array().cloned().unwrap_or_default();
    assert!(!claims.is_empty(), "{plan}");
    let allowed = ["m5.large", "m5.xlarge", "m5.2xlarge", "c5.xlarge"];
    for c in &claims {
        assert_eq!(c["nodePool"], "default");
        assert_eq!(
            c["capacityType"], "spot",
            "spot only, even where on-demand is cheaper"
        );
        assert!(
            allowed.contains(&c["instanceType"].as_str().unwrap_or("")),
            "{}",
            c["instanceType"]
        );
        for o in strings(&c["instanceTypeOptions"]) {
            assert!(allowed.contains(&o.as_str()), "{o}");
        }
        assert_eq!(c["labels"]["node-type"], "worker");
    }
    assert_eq!(plan["summary"]["pods"], 5);
    Ok(())
}

#[test]
fn an_existing_node_with_room_is_used_before_buying() -> TestResult {
    let input = format!("{KWOK_POOL}{}{}", node("node-1", "4"), pod("a", "1", ""));
    let plan = json(&["-f", "-"], Some(&input))?;
    assert_eq!(plan["nodeClaims"], Value::Array(vec![]), "{plan}");
    assert_eq!(plan["existingNodes"][0]["name"], "node-1");
    assert_eq!(strings(&plan["existingNodes"][0]["pods"]), ["default/a"]);
    assert_eq!(plan["summary"]["pricePerHour"].as_f64(), Some(0.0));
    Ok(())
}

#[test]
fn bound_pods_use_their_node_and_are_not_listed_again() -> TestResult {
    let bound = pod("running", "1500m", "  nodeName: node-1\n");
    let input = format!(
        "{KWOK_POOL}{}{bound}{}",
        node("node-1", "2"),
        pod("new", "1", "")
    );
    let plan = json(&["-f", "-"], Some(&input))?;
    let listed = listed_pods(&plan);
    assert!(!listed.contains_key("default/running"), "{plan}");
    assert_eq!(listed.len(), 1);
    // node-1 has 0.5 cpu left after the bound pod: the new pod needs a new node.
    assert_eq!(
        plan["nodeClaims"].as_array().map(Vec::len),
        Some(1),
        "{plan}"
    );
    assert_eq!(plan["existingNodes"], Value::Array(vec![]));
    Ok(())
}

#[test]
fn daemonset_overhead_changes_the_chosen_instance_type() -> TestResult {
    let input = format!("{KWOK_POOL}{}", pod("a", "1500m", ""));
    let without = json(&["-f", "-"], Some(&input))?;
    let ds = r"---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - name: agent
        resources: {requests: {cpu: 500m, memory: 128Mi}}
";
    let with = json(&["-f", "-"], Some(&format!("{input}{ds}")))?;
    let t1 = without["nodeClaims"][0]["instanceType"]
        .as_str()
        .unwrap_or("");
    let t2 = with["nodeClaims"][0]["instanceType"].as_str().unwrap_or("");
    assert_eq!(t1, "c-2x-amd64-linux", "{without}");
    assert_ne!(t1, t2, "1.5 + 0.5 cpu no longer fits 1.9 allocatable");
    assert!(f64_of(&with["summary"]["pricePerHour"]) > f64_of(&without["summary"]["pricePerHour"]));
    Ok(())
}

#[test]
fn a_gpu_pod_lands_on_the_tainted_gpu_pool_with_a_gpu_catalog() -> TestResult {
    let gpu_pool = r#"---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: gpu}
spec:
  weight: 50
  template:
    spec:
      nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}
      taints: [{key: nvidia.com/gpu, value: "true", effect: NoSchedule}]
      requirements: []
"#;
    let gpu_pod = r#"---
apiVersion: v1
kind: Pod
metadata: {name: train, namespace: ml}
spec:
  tolerations: [{key: nvidia.com/gpu, operator: Exists}]
  containers:
  - name: c
    resources: {requests: {cpu: "2"}, limits: {nvidia.com/gpu: 1}}
"#;
    let input = format!("{KWOK_POOL}{gpu_pool}{gpu_pod}{}", pod("web", "1", ""));
    let plan = json(
        &["-f", "-", "--catalog", &data("gpu-catalog.json")],
        Some(&input),
    )?;
    let claims = plan["nodeClaims"].as_array().cloned().unwrap_or_default();
    let gpu = claims
        .iter()
        .find(|c| strings(&c["pods"]).contains(&"ml/train".to_owned()));
    assert_eq!(
        gpu.map(|c| c["instanceType"].clone()),
        Some("g.1gpu".into()),
        "{plan}"
    );
    assert_eq!(gpu.map(|c| c["nodePool"].clone()), Some("gpu".into()));
    let web = claims
        .iter()
        .find(|c| strings(&c["pods"]).contains(&"default/web".to_owned()));
    assert_eq!(
        web.map(|c| c["nodePool"].clone()),
        Some("default".into()),
        "the web pod does not tolerate the GPU taint"
    );
    Ok(())
}

#[test]
fn explain_prints_the_why_not() -> TestResult {
    let out = simulate(&["--explain", "default/huge-0"], None)?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    assert!(text.contains("nodePool \"default\""), "{text}");
    assert!(text.contains("500 cpu"), "{text}");
    assert!(text.contains("result: unschedulable"), "{text}");
    let out = simulate(&["--explain", "nowhere/nothing"], None)?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere/nothing"));
    Ok(())
}

#[test]
fn no_optimise_still_accounts_for_every_pod() -> TestResult {
    let plan = json(&["--no-optimise"], None)?;
    assert_eq!(
        listed_pods(&plan).len(),
        pending_pods(&bundled_files())?.len()
    );
    Ok(())
}
