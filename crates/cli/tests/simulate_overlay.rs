//! `karpenter simulate` with NodeOverlays in the input: they change the catalog's prices and
//! capacity before solving, visible in the JSON plan. The catalog (tests/data/overlay-catalog.json)
//! has `cheap.2x` (on-demand 0.2) and `dear.4x` (on-demand 0.3); the NodePool allows on-demand
//! only, so without overlays a 1-cpu pod goes to `cheap.2x` at 0.2.

mod common;

use common::*;
use serde_json::Value;

fn overlay(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: karpenter.sh/v1alpha1\nkind: NodeOverlay\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

fn plan(extra: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let input = format!("{KWOK_POOL}{}{extra}", pod("web", "1", ""));
    json(
        &["-f", "-", "--catalog", &data("overlay-catalog.json")],
        Some(&input),
    )
}

/// (instance type, price per hour) of the only NodeClaim.
fn only_claim(plan: &Value) -> (String, f64) {
    let claims = plan["nodeClaims"].as_array().cloned().unwrap_or_default();
    assert_eq!(claims.len(), 1, "{plan:#}");
    (
        claims[0]["instanceType"].as_str().unwrap_or("").to_owned(),
        f64_of(&claims[0]["pricePerHour"]),
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn without_overlays_the_cheapest_type_is_chosen() -> TestResult {
    let (it, price) = only_claim(&plan("")?);
    assert_eq!(it, "cheap.2x");
    assert!(close(price, 0.2), "{price}");
    Ok(())
}

#[test]
fn a_percentage_adjustment_shows_in_the_price() -> TestResult {
    let p = plan(&overlay(
        "discount",
        "  requirements:\n  - {key: node.kubernetes.io/instance-type, operator: In, values: [cheap.2x]}\n  priceAdjustment: \"-10%\"\n",
    ))?;
    let (it, price) = only_claim(&p);
    assert_eq!(it, "cheap.2x");
    // 0.2 - 10% = 0.18, and the summary is the sum of the one claim.
    assert!(close(price, 0.18), "{price}");
    assert!(close(f64_of(&p["summary"]["pricePerHour"]), 0.18), "{p:#}");
    Ok(())
}

#[test]
fn a_price_making_the_cheapest_type_expensive_changes_the_choice() -> TestResult {
    let p = plan(&overlay(
        "licence",
        "  requirements:\n  - {key: node.kubernetes.io/instance-type, operator: In, values: [cheap.2x]}\n  - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}\n  price: \"0.5\"\n",
    ))?;
    // cheap.2x on-demand now costs 0.5 > dear.4x's 0.3.
    let (it, price) = only_claim(&p);
    assert_eq!(it, "dear.4x");
    assert!(close(price, 0.3), "{price}");
    Ok(())
}

#[test]
fn a_capacity_overlay_makes_an_extended_resource_schedulable() -> TestResult {
    let dongle_pod = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: dongle}\nspec:\n  containers:\n  - name: c\n    resources: {requests: {cpu: \"1\", memory: 1Gi, example.com/dongle: \"1\"}, limits: {example.com/dongle: \"1\"}}\n";
    let input = |extra: &str| format!("{KWOK_POOL}{dongle_pod}{extra}");
    let catalog = data("overlay-catalog.json");
    let args = ["-f", "-", "--catalog", catalog.as_str()];
    let before = json(&args, Some(&input("")))?;
    assert_eq!(before["summary"]["unschedulable"], 1, "{before:#}");
    let after = json(
        &args,
        Some(&input(&overlay(
            "dongles",
            "  requirements:\n  - {key: node.kubernetes.io/instance-type, operator: In, values: [dear.4x]}\n  capacity:\n    example.com/dongle: 2\n",
        ))),
    )?;
    // Only dear.4x has dongles now.
    let (it, _) = only_claim(&after);
    assert_eq!(it, "dear.4x");
    assert_eq!(after["summary"]["unschedulable"], 0, "{after:#}");
    Ok(())
}

#[test]
fn higher_weight_wins_and_equal_weight_conflicts_are_warned() -> TestResult {
    let input = format!(
        "{KWOK_POOL}{}{}{}{}",
        pod("web", "1", ""),
        overlay(
            "a-cheap",
            "  weight: 5\n  requirements: []\n  price: \"0.01\"\n"
        ),
        overlay(
            "b-dear",
            "  weight: 5\n  requirements:\n  - {key: node.kubernetes.io/instance-type, operator: In, values: [dear.4x]}\n  price: \"0.05\"\n"
        ),
        overlay(
            "z-heavy",
            "  weight: 9\n  requirements:\n  - {key: node.kubernetes.io/instance-type, operator: In, values: [cheap.2x]}\n  priceAdjustment: \"+0.2\"\n"
        ),
    );
    let out = simulate(
        &[
            "-f",
            "-",
            "--catalog",
            &data("overlay-catalog.json"),
            "-o",
            "json",
        ],
        Some(&input),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let p: Value = serde_json::from_slice(&out.stdout)?;
    // z-heavy (weight 9) first: cheap.2x 0.2 + 0.2 = 0.4. Then weight 5 in reverse name order:
    // b-dear sets dear.4x to 0.05; a-cheap overlaps b-dear on dear.4x → left out.
    // So dear.4x at 0.05 beats cheap.2x at 0.4.
    let (it, price) = only_claim(&p);
    assert_eq!(it, "dear.4x");
    assert!(close(price, 0.05), "{price}");
    assert!(
        stderr.contains("NodeOverlay a-cheap: not applied") && stderr.contains("\"b-dear\""),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_malformed_overlay_is_an_error_naming_the_field() -> TestResult {
    let input = format!(
        "{KWOK_POOL}{}{}",
        pod("web", "1", ""),
        overlay(
            "bad",
            "  requirements: []\n  priceAdjustment: \"ten percent\"\n"
        ),
    );
    let out = simulate(
        &["-f", "-", "--catalog", &data("overlay-catalog.json")],
        Some(&input),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("NodeOverlay \"bad\": spec.priceAdjustment"),
        "{stderr}"
    );
    Ok(())
}

/// (pod, NodePool, instance type, price per hour) of a NodeClaim.
type Claim = (String, String, String, f64);

/// Pools `default` (KWOK_POOL) and `gpu` (template label team=ml), pod `web` pinned to
/// default and `ml` pinned to gpu, plus `extra`; the claims' (NodePool, type, price), by pod.
fn two_pools(extra: &str) -> Result<Vec<Claim>, Box<dyn std::error::Error>> {
    let gpu_pool = KWOK_POOL.replace("name: default}", "name: gpu}").replace(
        "  template:\n",
        "  template:\n    metadata: {labels: {team: ml}}\n",
    );
    let pin = |pool: &str| format!("  nodeSelector: {{karpenter.sh/nodepool: {pool}}}\n");
    let input = format!(
        "{KWOK_POOL}---\n{gpu_pool}{}{}{extra}",
        pod("web", "1", &pin("default")),
        pod("ml", "1", &pin("gpu"))
    );
    let p = json(
        &["-f", "-", "--catalog", &data("overlay-catalog.json")],
        Some(&input),
    )?;
    let mut out = Vec::new();
    for c in p["nodeClaims"].as_array().cloned().unwrap_or_default() {
        let s = |k: &str| c[k].as_str().unwrap_or("").to_owned();
        let pods = c["pods"].as_array().cloned().unwrap_or_default();
        let pod = pods
            .first()
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        out.push((
            pod,
            s("nodePool"),
            s("instanceType"),
            f64_of(&c["pricePerHour"]),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 2, "{p:#}");
    Ok(out)
}

#[test]
fn an_overlay_on_karpenter_sh_nodepool_changes_only_that_pools_choice() -> TestResult {
    let claims = two_pools(&overlay(
        "cheap-dear-in-gpu",
        "  requirements:\n  - {key: karpenter.sh/nodepool, operator: In, values: [gpu]}\n  - {key: node.kubernetes.io/instance-type, operator: In, values: [dear.4x]}\n  price: \"0.01\"\n",
    ))?;
    // In gpu dear.4x costs 0.01 < cheap.2x's 0.2; in default it still costs 0.3 > 0.2.
    let (ml, web) = (&claims[0], &claims[1]);
    assert_eq!(
        (ml.0.as_str(), ml.1.as_str(), ml.2.as_str()),
        ("default/ml", "gpu", "dear.4x")
    );
    assert!(close(ml.3, 0.01), "{}", ml.3);
    assert_eq!(
        (web.0.as_str(), web.1.as_str(), web.2.as_str()),
        ("default/web", "default", "cheap.2x")
    );
    assert!(close(web.3, 0.2), "{}", web.3);
    Ok(())
}

#[test]
fn an_overlay_on_a_template_label_changes_only_the_pools_carrying_it() -> TestResult {
    let claims = two_pools(&overlay(
        "dear-for-ml",
        "  requirements:\n  - {key: team, operator: In, values: [ml]}\n  - {key: node.kubernetes.io/instance-type, operator: In, values: [cheap.2x]}\n  priceAdjustment: \"+100%\"\n",
    ))?;
    // For team=ml (gpu) cheap.2x costs 0.2 + 100% = 0.4 > dear.4x's 0.3; default keeps 0.2.
    let (ml, web) = (&claims[0], &claims[1]);
    assert_eq!((ml.1.as_str(), ml.2.as_str()), ("gpu", "dear.4x"));
    assert!(close(ml.3, 0.3), "{}", ml.3);
    assert_eq!((web.1.as_str(), web.2.as_str()), ("default", "cheap.2x"));
    assert!(close(web.3, 0.2), "{}", web.3);
    Ok(())
}
