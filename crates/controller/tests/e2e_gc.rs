//! e2e: garbage collection deletes a kwok instance (Node) that no NodeClaim accounts for.

mod common;

use anyhow::Result;
use common::{Env, TIMEOUT};
use k8s_openapi::api::core::v1::Node;
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
    let claim = common::one_cpu_claim(&name, &env.class);
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
