//! e2e: garbage collection deletes a kwok instance (Node) that no NodeClaim accounts for.

mod common;

use std::collections::BTreeMap;

use anyhow::Result;
use common::{Env, TIMEOUT};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use karpenter_api::v1::{NodeClaim, NodeClaimSpec, NodeClassReference, ResourceRequirements};
use karpenter_providers::CloudProvider;
use karpenter_providers::kwok::KwokProvider;
use karpenter_testkit::unique_name;
use kube::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orphan_instance_is_collected() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &Env) -> Result<()> {
    // Launch an instance for a NodeClaim that never reaches the API: an orphan from birth.
    let name = unique_name("orphan");
    let claim = NodeClaim::new(
        &name,
        NodeClaimSpec {
            taints: vec![],
            startup_taints: vec![],
            requirements: vec![],
            resources: ResourceRequirements {
                requests: BTreeMap::from([("cpu".to_string(), Quantity("1".into()))]),
            },
            node_class_ref: NodeClassReference {
                group: "karpenter.kwok.sh".into(),
                kind: "KWOKNodeClass".into(),
                name: env.class.clone(),
            },
            termination_grace_period: None,
            expire_after: "Never".into(),
        },
    );
    let provider = KwokProvider::new(env.client.clone());
    let launched = provider.create(&claim).await?;
    let pid = launched
        .status
        .and_then(|s| s.provider_id)
        .unwrap_or_default();
    assert_eq!(pid, format!("kwok://{name}"));

    let nodes: Api<Node> = Api::all(env.client.clone());
    assert!(
        nodes.get_opt(&name).await?.is_some(),
        "the instance exists at first"
    );
    env.cluster
        .wait_for(TIMEOUT, "the orphan node to be collected", || async {
            Ok::<_, kube::Error>(nodes.get_opt(&name).await?.is_none().then_some(()))
        })
        .await?;
    Ok(())
}
