//! The CapacityBuffer CRD on a real API server: upstream's example manifests
//! (`examples/capacitybuffers/`) apply unchanged except for their namespace, and the server
//! defaults `provisioningStrategy` as upstream's CRD does.

use std::path::Path;

use anyhow::{Context, ensure};
use karpenter_testkit::TestCluster;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

#[tokio::test]
async fn upstream_examples_apply_and_the_strategy_is_defaulted() -> anyhow::Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    cluster.apply_crds(&karpenter_api::all_crds()).await?;
    let ns = cluster.namespace().await?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/capacitybuffers/upstream-examples.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)?;
    let buffers_gvk = GroupVersionKind::gvk("autoscaling.x-k8s.io", "v1beta1", "CapacityBuffer");
    let buffers = ApiResource::from_gvk_with_plural(&buffers_gvk, "capacitybuffers");
    let templates = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("", "v1", "PodTemplate"),
        "podtemplates",
    );
    let mut created = 0;
    for mut doc in docs.into_iter().filter(|d| !d.is_null()) {
        // The examples name their own namespaces; one test namespace holds them all here.
        doc["metadata"]["namespace"] = json!(ns.name());
        let resource = if doc["kind"] == "CapacityBuffer" {
            &buffers
        } else {
            &templates
        };
        let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), ns.name(), resource);
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let object: DynamicObject = serde_json::from_value(doc)?;
        api.create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating {name}"))?;
        created += 1;
    }
    ensure!(
        created == 6,
        "created {created} objects, want 4 buffers + 2 templates"
    );

    // A buffer created without a strategy gets upstream's default from the server.
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), ns.name(), &buffers);
    let bare: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "autoscaling.x-k8s.io/v1beta1",
        "kind": "CapacityBuffer",
        "metadata": {"name": "bare"},
        "spec": {"podTemplateRef": {"name": "worker-template"}, "replicas": 1}
    }))?;
    let stored = api.create(&PostParams::default(), &bare).await?;
    ensure!(
        stored.data["spec"]["provisioningStrategy"] == "buffer.x-k8s.io/active-capacity",
        "strategy not defaulted: {}",
        stored.data["spec"]
    );
    ns.cleanup().await?;
    Ok(())
}
