//! Tests of `karpenter_api::solver_input::volume_requirements`: the node requirements a pod's
//! claimed volumes impose, on plain objects (no apiserver).

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use karpenter_api::solver_input::{VolumeIndex, volume_requirements};
use karpenter_solver::{NodeSelectorRequirement, Operator};
use serde::de::DeserializeOwned;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const ZONE: &str = "topology.kubernetes.io/zone";

fn obj<T: DeserializeOwned>(yaml: &str) -> TestResult<T> {
    Ok(serde_saphyr::from_str(yaml)?)
}

/// A pod `shop/web-0` mounting claim `data`.
fn pod_with_claim() -> TestResult<Pod> {
    obj(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop}\nspec:\n  containers: [{name: c}]\n  volumes:\n  - {name: v, persistentVolumeClaim: {claimName: data}}\n",
    )
}

fn claim(spec: &str) -> TestResult<PersistentVolumeClaim> {
    obj(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: shop}}\nspec: {spec}\n"
    ))
}

fn zone_pv(name: &str, zones: &str) -> TestResult<PersistentVolume> {
    obj(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - {{key: {ZONE}, operator: In, values: [{zones}]}}\n      - matchExpressions:\n        - {{key: {ZONE}, operator: In, values: [ignored]}}\n"
    ))
}

fn class(name: &str, rest: &str) -> TestResult<StorageClass> {
    obj(&format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {name}}}\nprovisioner: ebs.csi.aws.com\n{rest}"
    ))
}

#[test]
fn bound_claim_takes_the_first_term_of_its_volume_affinity() -> TestResult {
    let pod = pod_with_claim()?;
    let pvc = claim("{volumeName: pv-1, storageClassName: gp3}")?;
    let pv = zone_pv("pv-1", "zone-a")?;
    let index = VolumeIndex::new([&pvc], [&pv], []);
    let reqs = volume_requirements(&pod, &index)?;
    assert_eq!(
        reqs,
        vec![NodeSelectorRequirement::new(
            ZONE,
            Operator::In,
            &["zone-a"]
        )]
    );
    Ok(())
}

#[test]
fn local_volume_drops_its_hostname_but_keeps_its_zone() -> TestResult {
    let pod = pod_with_claim()?;
    let pvc = claim("{volumeName: local-1}")?;
    let pv: PersistentVolume = obj(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: local-1}}\nspec:\n  local: {{path: /mnt/disk}}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - {{key: kubernetes.io/hostname, operator: In, values: [old-node]}}\n        - {{key: {ZONE}, operator: In, values: [zone-b]}}\n"
    ))?;
    let index = VolumeIndex::new([&pvc], [&pv], []);
    assert_eq!(
        volume_requirements(&pod, &index)?,
        vec![NodeSelectorRequirement::new(
            ZONE,
            Operator::In,
            &["zone-b"]
        )]
    );
    Ok(())
}

#[test]
fn unbound_wait_for_first_consumer_claim_takes_allowed_topologies() -> TestResult {
    let pod = pod_with_claim()?;
    let pvc = claim("{storageClassName: zonal}")?;
    let sc = class(
        "zonal",
        &format!(
            "volumeBindingMode: WaitForFirstConsumer\nallowedTopologies:\n- matchLabelExpressions:\n  - {{key: {ZONE}, values: [zone-a, zone-c]}}\n"
        ),
    )?;
    let index = VolumeIndex::new([&pvc], [], [&sc]);
    assert_eq!(
        volume_requirements(&pod, &index)?,
        vec![NodeSelectorRequirement::new(
            ZONE,
            Operator::In,
            &["zone-a", "zone-c"]
        )]
    );

    // Without allowedTopologies the class can provision anywhere.
    let anywhere = class("zonal", "volumeBindingMode: WaitForFirstConsumer\n")?;
    let index = VolumeIndex::new([&pvc], [], [&anywhere]);
    assert_eq!(volume_requirements(&pod, &index)?, vec![]);
    Ok(())
}

#[test]
fn pod_without_claimed_volumes_has_no_requirements() -> TestResult {
    let pod: Pod = obj(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c}]\n  volumes:\n  - {name: scratch, emptyDir: {}}\n",
    )?;
    assert_eq!(volume_requirements(&pod, &VolumeIndex::default())?, vec![]);
    Ok(())
}

#[test]
fn missing_claim_is_an_error_naming_pod_and_claim() -> TestResult {
    let pod = pod_with_claim()?;
    let Err(e) = volume_requirements(&pod, &VolumeIndex::default()) else {
        return Err("a missing claim must not convert".into());
    };
    assert_eq!(e.object, "Pod shop/web-0");
    assert_eq!(e.path, "spec.volumes[0].persistentVolumeClaim.claimName");
    assert!(e.message.contains("PersistentVolumeClaim shop/data"), "{e}");
    Ok(())
}

#[test]
fn unbound_claims_that_cannot_be_judged_yet_are_errors() -> TestResult {
    let pod = pod_with_claim()?;
    // Immediate binding (explicit or the default): the claim must be bound first.
    let pvc = claim("{storageClassName: fast}")?;
    for mode in ["volumeBindingMode: Immediate\n", ""] {
        let sc = class("fast", mode)?;
        let index = VolumeIndex::new([&pvc], [], [&sc]);
        let Err(e) = volume_requirements(&pod, &index) else {
            return Err(format!("immediate binding ({mode:?}) must wait").into());
        };
        assert!(e.message.contains("binds immediately"), "{e}");
    }
    // The class is missing.
    let index = VolumeIndex::new([&pvc], [], []);
    let Err(e) = volume_requirements(&pod, &index) else {
        return Err("a missing class must not convert".into());
    };
    assert!(e.message.contains("StorageClass fast"), "{e}");
    // Bound to a PV that is not there.
    let pvc = claim("{volumeName: gone}")?;
    let index = VolumeIndex::new([&pvc], [], []);
    let Err(e) = volume_requirements(&pod, &index) else {
        return Err("a missing volume must not convert".into());
    };
    assert!(e.message.contains("PersistentVolume gone"), "{e}");
    Ok(())
}

#[test]
fn unbound_claim_without_a_class_imposes_nothing() -> TestResult {
    let pod = pod_with_claim()?;
    let pvc = claim("{}")?;
    let index = VolumeIndex::new([&pvc], [], []);
    assert_eq!(volume_requirements(&pod, &index)?, vec![]);
    Ok(())
}

#[test]
fn ephemeral_volume_uses_its_claim_or_else_its_template_class() -> TestResult {
    let pod: Pod = obj(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: job, namespace: shop}\nspec:\n  containers: [{name: c}]\n  volumes:\n  - name: scratch\n    ephemeral:\n      volumeClaimTemplate:\n        spec: {storageClassName: zonal, accessModes: [ReadWriteOnce]}\n",
    )?;
    let sc = class(
        "zonal",
        &format!(
            "volumeBindingMode: WaitForFirstConsumer\nallowedTopologies:\n- matchLabelExpressions:\n  - {{key: {ZONE}, values: [zone-c]}}\n"
        ),
    )?;
    // Not created yet: the template's class decides.
    let index = VolumeIndex::new([], [], [&sc]);
    assert_eq!(
        volume_requirements(&pod, &index)?,
        vec![NodeSelectorRequirement::new(
            ZONE,
            Operator::In,
            &["zone-c"]
        )]
    );
    // Created and bound: the volume decides.
    let pvc: PersistentVolumeClaim = obj(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: job-scratch, namespace: shop}\nspec: {volumeName: pv-9}\n",
    )?;
    let pv = zone_pv("pv-9", "zone-a")?;
    let index = VolumeIndex::new([&pvc], [&pv], [&sc]);
    assert_eq!(
        volume_requirements(&pod, &index)?,
        vec![NodeSelectorRequirement::new(
            ZONE,
            Operator::In,
            &["zone-a"]
        )]
    );
    Ok(())
}
