//! The MachineDeployments of `examples/clusterapi` (what the README tells users to write) read
//! as the shapes they say they are, and each becomes a Machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use karpenter_clusterapi::Shape;
use karpenter_clusterapi::machine::build_machine;
use kube::api::DynamicObject;
use serde_json::Value;

fn machine_deployments() -> Vec<(String, DynamicObject)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/clusterapi");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/clusterapi")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in docs {
            if doc["kind"] == "MachineDeployment" {
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                out.push((
                    name,
                    serde_json::from_value(doc).expect("a MachineDeployment"),
                ));
            }
        }
    }
    out
}

#[test]
fn example_machine_deployments_read_as_documented() {
    let mds = machine_deployments();
    let shape = |file: &str| {
        let (_, md) = mds.iter().find(|(f, _)| f == file).expect(file);
        Shape::from_machine_deployment(md).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    let aws = shape("aws.yaml");
    assert_eq!(aws.instance_type, "m6i.large");
    assert_eq!(
        (aws.zone.as_str(), aws.capacity_type.as_str()),
        ("us-east-1a", "on-demand")
    );
    assert_eq!((aws.price, aws.max_size), (0.096, Some(50)));
    assert_eq!(aws.capacity.get("pods"), 29);
    let azure = shape("azure.yaml");
    assert_eq!(
        (azure.zone.as_str(), azure.capacity_type.as_str()),
        ("eastus-1", "spot")
    );
    assert_eq!(azure.taints.len(), 1);
    let vsphere = shape("vsphere.yaml");
    assert_eq!(
        (vsphere.instance_type.as_str(), vsphere.zone.as_str()),
        ("8c32g", "dc1")
    );
    assert!(!vsphere.price_estimated);
    for (file, md) in &mds {
        let m =
            build_machine(md, "default-abcde", "default").unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            m.data["spec"]["bootstrap"]["configRef"]["kind"] == "KubeadmConfig",
            "{file}: {}",
            m.data
        );
    }
}
