//! e2e: a `KWOKNodeClass` without `spec` (upstream accepts one; every field is optional) is
//! stored by the API server under our CRD, reads back through the typed API, and the kwok
//! provider launches an instance for a NodeClaim that references it.

mod common;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Node;
use karpenter_api::kwok::{KWOKNodeClass, KWOKNodeClassSpec};
use karpenter_providers::CloudProvider;
use karpenter_providers::kwok::KwokProvider;
use karpenter_testkit::{TestCluster, unique_name};
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client, Resource as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_class_without_spec_is_accepted_and_used() -> Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    cluster.apply_crds(&karpenter_api::all_crds()).await?;
    let client = cluster.client();
    let class = unique_name("no-spec");
    let claim_name = unique_name("no-spec");
    let result = body(&client, &class, &claim_name).await;
    // Cluster-scoped: nothing removes them with a namespace.
    let _ = Api::<Node>::all(client.clone())
        .delete(&claim_name, &DeleteParams::background())
        .await;
    let _ = Api::<KWOKNodeClass>::all(client.clone())
        .delete(&class, &DeleteParams::background())
        .await;
    result
}

async fn body(client: &Client, class: &str, claim_name: &str) -> Result<()> {
    // Raw JSON, as `kubectl apply` would send a manifest without spec: the typed client would
    // always write `spec: {}`.
    let resource = ApiResource::erase::<KWOKNodeClass>(&());
    let raw: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": KWOKNodeClass::api_version(&()),
        "kind": KWOKNodeClass::kind(&()),
        "metadata": {"name": class},
    }))?;
    Api::<DynamicObject>::all_with(client.clone(), &resource)
        .create(&PostParams::default(), &raw)
        .await
        .context("the API server must accept a KWOKNodeClass without spec")?;

    let read = Api::<KWOKNodeClass>::all(client.clone())
        .get(class)
        .await
        .context("a spec-less KWOKNodeClass must read back through the typed API")?;
    assert_eq!(read.spec, KWOKNodeClassSpec::default());

    let claim = common::one_cpu_claim(claim_name, class);
    let launched = KwokProvider::new(client.clone())
        .create(&claim)
        .await
        .context("the kwok provider must launch with a spec-less KWOKNodeClass")?;
    let provider_id = launched.status.and_then(|s| s.provider_id);
    assert_eq!(provider_id, Some(format!("kwok://{claim_name}")));
    Ok(())
}
