//! e2e: a NodePool with the disruption budget `nodes: "1"` and four empty nodes: the nodes
//! go one at a time. The test watches the pool's Nodes until all are gone and records the
//! most that were ever disrupting (tainted `karpenter.sh/disrupted` or being deleted) at once.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use common::{Env, disruption_options, node_disrupting};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::core::v1::{Affinity, PodAffinityTerm, PodAntiAffinity};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use karpenter_api::labels::NODE_POOL_LABEL;
use karpenter_api::v1::NodePool;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

const NODES: usize = 4;
const DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_of_one_disrupts_one_node_at_a_time() -> Result<()> {
    let Some(env) = Env::start_with(disruption_options(Duration::from_secs(1))).await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &Env) -> Result<()> {
    Api::<NodePool>::all(env.client.clone())
        .patch(
            &env.pool,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"disruption": {"budgets": [{"nodes": "1"}]}}})),
        )
        .await?;
    // One pod per node (required hostname anti-affinity), so there are NODES nodes.
    let mut d = env.deployment("apart", NODES as i32, "500m");
    let spec = d
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .ok_or_else(|| anyhow::anyhow!("deployment without a pod spec"))?;
    spec.affinity = Some(Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "apart".to_string())].into()),
                    ..LabelSelector::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    });
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    deployments.create(&PostParams::default(), &d).await?;
    env.wait_running("apart", NODES).await?;
    assert_eq!(env.nodes().await?.len(), NODES);

    deployments
        .patch(
            "apart",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 0}})),
        )
        .await?;
    // Every change of the pool's Nodes, from a watch: empty nodes go in milliseconds, faster
    // than polling could see.
    let most = Arc::new(AtomicUsize::new(0));
    let watch = {
        let most = most.clone();
        let nodes: Api<Node> = Api::all(env.client.clone());
        let config = watcher::Config::default().labels(&format!("{NODE_POOL_LABEL}={}", env.pool));
        tokio::spawn(async move {
            let mut disrupting: BTreeSet<String> = BTreeSet::new();
            let mut stream = std::pin::pin!(watcher(nodes, config));
            while let Some(Ok(event)) = stream.next().await {
                match event {
                    watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                        if node_disrupting(&n) {
                            disrupting.insert(n.name_any());
                        } else {
                            disrupting.remove(&n.name_any());
                        }
                    }
                    watcher::Event::Delete(n) => {
                        disrupting.remove(&n.name_any());
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
                most.fetch_max(disrupting.len(), Ordering::SeqCst);
            }
        })
    };
    let waited = env
        .cluster
        .wait_for(DEADLINE, "every empty node of the pool gone", || async {
            let left = env.nodes().await?.len() + env.node_claims().await?.len();
            Ok::<_, anyhow::Error>((left == 0).then_some(()))
        })
        .await;
    watch.abort();
    waited?;
    let most = most.load(Ordering::SeqCst);
    println!("at most {most} node(s) disrupting at once");
    assert_eq!(most, 1, "the budget allows exactly one node at a time");
    Ok(())
}
