//! e2e: a drain evicts placement-constrained pods first. A node runs a zone-spread pod
//! (`DoNotSchedule`) and two unconstrained ones; its NodeClaim is deleted and a watch records
//! the order in which the pods start leaving: the spread pod is first (the drain's
//! placement-constrained tier), though its name sorts last. One test per binary: every test's
//! controller serves the whole cluster.

mod common;

use anyhow::Result;
use common::{Env, TIMEOUT};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use karpenter_api::v1::NodeClaim;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_evicts_placement_constrained_pods_first() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = constrained_first(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

/// Pods `a-plain` (whose node the others join), `b-plain` and `z-spread` (a zone spread,
/// `DoNotSchedule`) on one node: the names put the spread pod last in any name order, so
/// only the drain's tiers make it leave first.
async fn constrained_first(env: &Env) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    pods.create(&PostParams::default(), &env.pod("a-plain", "10m"))
        .await?;
    let node_name = env.running_on("a-plain").await?;
    let on_node = |name: &str| {
        let mut pod = env.pod(name, "10m");
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_selector
                .get_or_insert_with(Default::default)
                .insert("kubernetes.io/hostname".into(), node_name.clone());
        }
        pod
    };
    let mut spread = on_node("z-spread");
    if let Some(spec) = spread.spec.as_mut() {
        spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "topology.kubernetes.io/zone".into(),
            when_unsatisfiable: "DoNotSchedule".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), "z-spread".to_string())].into()),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]);
    }
    for pod in [on_node("b-plain"), spread] {
        pods.create(&PostParams::default(), &pod).await?;
    }
    for name in ["b-plain", "z-spread"] {
        env.running_on(name).await?;
    }
    let claim_name = common::repair::claim_of(env, &node_name).await?.name_any();

    let (order_tx, order) = watch::channel(None::<Vec<String>>);
    let watching = tokio::spawn(watch_leaving_order(pods.clone(), order_tx));
    let mut seen = order.clone();
    tokio::time::timeout(TIMEOUT, seen.wait_for(Option::is_some))
        .await
        .map_err(|_| anyhow::anyhow!("the pod watch never started"))??;
    Api::<NodeClaim>::all(env.client.clone())
        .delete(&claim_name, &DeleteParams::background())
        .await?;
    let mut seen = order.clone();
    let left = tokio::time::timeout(
        TIMEOUT,
        seen.wait_for(|o| o.as_ref().is_some_and(|o| o.len() == 3)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("not every pod left: {:?}", *order.borrow()))??
    .clone();
    watching.abort();
    let left = left.unwrap_or_default();
    assert_eq!(
        left.first().map(String::as_str),
        Some("z-spread"),
        "the spread pod leaves first: {left:?}"
    );
    Ok(())
}

/// The order in which the namespace's pods start leaving (terminating or deleted), once the
/// watch runs (`Some(vec![])` until the first).
async fn watch_leaving_order(pods: Api<Pod>, order: watch::Sender<Option<Vec<String>>>) {
    let mut stream = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
    while let Some(item) = stream.next().await {
        let leaving = match item {
            Ok(watcher::Event::InitDone) => {
                order.send_modify(|o| {
                    o.get_or_insert_with(Vec::new);
                });
                continue;
            }
            Ok(watcher::Event::Apply(p)) if p.metadata.deletion_timestamp.is_some() => p,
            Ok(watcher::Event::Delete(p)) => p,
            _ => continue,
        };
        let name = leaving.name_any();
        order.send_if_modified(|o| {
            let o = o.get_or_insert_with(Vec::new);
            let new = !o.contains(&name);
            if new {
                o.push(name.clone());
            }
            new
        });
    }
}
