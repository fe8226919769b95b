//! `karpenter simulate` with PersistentVolumeClaims, PersistentVolumes and StorageClasses in
//! the input: a pending pod goes where its volume can be attached; a claim the input does not
//! have is a warning, not a failure.

mod common;

use common::*;

/// A claim `data` bound to a zonal volume in `zone`.
fn bound_claim(zone: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: default}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: zonal
  volumeName: pv-data
  resources: {{requests: {{storage: 10Gi}}}}
status: {{phase: Bound}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: pv-data}}
spec:
  capacity: {{storage: 10Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: zonal
  csi: {{driver: ebs.csi.aws.com, volumeHandle: vol-1}}
  claimRef: {{name: data, namespace: default}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: topology.kubernetes.io/zone, operator: In, values: [{zone}]}}
"#
    )
}

const USES_DATA: &str =
    "  volumes:\n  - name: data\n    persistentVolumeClaim: {claimName: data}\n";

fn zones_of(plan: &serde_json::Value) -> Vec<String> {
    plan["nodeClaims"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["zone"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_pod_follows_its_bound_volume_into_that_zone() -> TestResult {
    // Every zone: not an accident of the cheapest zone being the volume's.
    for zone in ["test-zone-a", "test-zone-b", "test-zone-c", "test-zone-d"] {
        let input = format!(
            "{KWOK_POOL}{}{}",
            bound_claim(zone),
            pod("db", "1", USES_DATA)
        );
        let plan = json(&["-f", "-"], Some(&input))?;
        assert_eq!(zones_of(&plan), vec![zone.to_string()], "{plan}");
        assert_eq!(strings(&plan["nodeClaims"][0]["pods"]), ["default/db"]);
    }
    Ok(())
}

#[test]
fn a_volume_in_a_zone_no_nodepool_offers_leaves_the_pod_unschedulable() -> TestResult {
    let input = format!(
        "{KWOK_POOL}{}{}",
        bound_claim("elsewhere-1a"),
        pod("db", "1", USES_DATA)
    );
    let plan = json(&["-f", "-"], Some(&input))?;
    assert_eq!(zones_of(&plan), Vec::<String>::new(), "{plan}");
    assert_eq!(plan["unschedulable"][0]["pod"], "default/db", "{plan}");
    Ok(())
}

#[test]
fn wait_for_first_consumer_follows_the_storage_class_topology() -> TestResult {
    let input = format!(
        r#"{KWOK_POOL}---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: late}}
provisioner: ebs.csi.aws.com
volumeBindingMode: WaitForFirstConsumer
allowedTopologies:
- matchLabelExpressions:
  - {{key: topology.kubernetes.io/zone, values: [test-zone-c]}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: late
  resources: {{requests: {{storage: 10Gi}}}}
status: {{phase: Pending}}
{}"#,
        pod("db", "1", USES_DATA)
    );
    let plan = json(&["-f", "-"], Some(&input))?;
    assert_eq!(zones_of(&plan), vec!["test-zone-c".to_string()], "{plan}");
    Ok(())
}

#[test]
fn a_claim_missing_from_the_input_is_a_warning_and_the_pod_is_placed() -> TestResult {
    let input = format!("{KWOK_POOL}{}", pod("db", "1", USES_DATA));
    let out = simulate(&["-f", "-", "-o", "json"], Some(&input))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("data"),
        "the warning names the claim: {stderr}"
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        strings(&plan["nodeClaims"][0]["pods"]),
        ["default/db"],
        "{plan}"
    );
    Ok(())
}
