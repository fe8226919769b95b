//! One invalid manifest per validation rule (`tests/invalid/*.yaml`): each must be rejected by
//! the CRD's CEL rules AND by the in-code validation, both naming the field. Each file's
//! header says which messages to expect:
//!
//! ```text
//! # cel: <substring of one CEL failure message>
//! # code: <substring of the in-code error>
//! ```

mod common;

use std::path::Path;

use common::{documents, validate_with_crd_cel, yaml_files};
use karpenter_api::read::{KarpenterObject, object_from_value};
use serde_json::Value;

fn header(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).expect("read");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
        .unwrap_or_else(|| panic!("{}: no '# {key}:' header", path.display()))
        .to_owned()
}

/// The typed `validate_cel()` kube-derive generates, for documents that decode.
fn typed_validate_cel(doc: &Value) -> Option<Result<(), String>> {
    let obj = serde_json::from_value::<Value>(doc.clone()).ok()?;
    let kind = obj["kind"].as_str()?;
    let result = match kind {
        "NodePool" => serde_json::from_value::<karpenter_api::v1::NodePool>(obj)
            .ok()?
            .validate_cel(),
        "NodeClaim" => serde_json::from_value::<karpenter_api::v1::NodeClaim>(obj)
            .ok()?
            .validate_cel(),
        "EC2NodeClass" => serde_json::from_value::<karpenter_api::ec2::EC2NodeClass>(obj)
            .ok()?
            .validate_cel(),
        "KWOKNodeClass" => serde_json::from_value::<karpenter_api::kwok::KWOKNodeClass>(obj)
            .ok()?
            .validate_cel(),
        "Provisioner" => serde_json::from_value::<karpenter_api::v1alpha5::Provisioner>(obj)
            .ok()?
            .validate_cel(),
        "NodeOverlay" => serde_json::from_value::<karpenter_api::v1alpha1::NodeOverlay>(obj)
            .ok()?
            .validate_cel(),
        "CapacityBuffer" => {
            serde_json::from_value::<karpenter_api::autoscaling::CapacityBuffer>(obj)
                .ok()?
                .validate_cel()
        }
        _ => return None,
    };
    Some(result.map_err(|e| e.to_string()))
}

#[test]
fn every_invalid_manifest_is_rejected_by_cel_and_by_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let files = yaml_files(&dir);
    assert!(
        files.len() >= 30,
        "expected one manifest per rule, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_owned();
        let want_cel = header(path, "cel");
        let want_code = header(path, "code");
        let docs = documents(path);
        assert_eq!(docs.len(), 1, "{name}: one document per file");
        let doc = &docs[0];

        match validate_with_crd_cel(doc) {
            Ok(()) => failures.push(format!("{name}: CEL accepted it")),
            Err(errs) => {
                if !errs.iter().any(|e| e.message.contains(&want_cel)) {
                    failures.push(format!(
                        "{name}: no CEL message contains {want_cel:?}; got {errs}"
                    ));
                }
            }
        }
        if let Some(Ok(())) = typed_validate_cel(doc) {
            failures.push(format!("{name}: typed validate_cel() accepted it"));
        }
        match object_from_value(doc.clone()) {
            Ok(_) => failures.push(format!("{name}: code validation accepted it")),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains(&want_code) {
                    failures.push(format!("{name}: code error {msg:?} lacks {want_code:?}"));
                }
                if !msg.contains("\"bad\"") {
                    failures.push(format!(
                        "{name}: code error {msg:?} does not name the object"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Guards against rules that reject everything: every rule's manifest differs from a valid
/// one by one field, and the valid base passes both checks.
#[test]
fn valid_base_manifests_pass_both_checks() {
    let base = serde_saphyr::from_str::<Value>(
        r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: ok}
spec:
  template:
    metadata: {labels: {team: a, node.kubernetes.io/role: w, topology.kubernetes.io/zone: z}}
    spec:
      nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}
      requirements:
        - {key: kubernetes.io/arch, operator: In, values: ["amd64"]}
        - {key: karpenter.sh/capacity-type, operator: In, values: ["spot", "reserved"], minValues: 2}
        - {key: example.com/cpu, operator: Gte, values: ["4"]}
        - {key: example.com/gpu, operator: DoesNotExist}
      startupTaints: [{key: example.com/init, effect: NoExecute}]
      terminationGracePeriod: 1h30m
  disruption:
    budgets:
      - {nodes: "100%"}
      - {nodes: "3", schedule: "@hourly", duration: 1h30m, reasons: [Drifted, Empty]}
      - {nodes: "1", reasons: [Unhealthy]}
  weight: 100
"#,
    )
    .expect("yaml");
    validate_with_crd_cel(&base).expect("CEL accepts the valid base");
    let obj = object_from_value(base).expect("code accepts the valid base");
    assert!(matches!(obj, Some(KarpenterObject::NodePool(_))));
}
