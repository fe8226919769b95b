//! e2e: a few hundred pods scaled down to a tenth, with a 50% budget: consolidation removes
//! the emptied and underused nodes in bulk (several nodes per command, not one at a time),
//! the budget is never exceeded, and the Deployment keeps its pods.
//!
//! Commands are read from the record every command writes on its candidate NodeClaims
//! (`karpenter.sh/disruption-command`: id and candidates), nodes in disruption from a Node
//! watch. The number of commands and nodes per command are printed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{Env, disruption_options, fleet, node_disrupting, pod_running};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use karpenter_api::labels::NODE_POOL_LABEL;
use karpenter_api::v1::{NodeClaim, NodePool};
use karpenter_controller::Options;
use karpenter_controller::disruption::command::record_of;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

const BEFORE: i32 = 240;
const AFTER: i32 = 24;
/// The 24 pods left need a tenth of the 240 pods' cpu; kwok prices grow linearly with cpu, so a
/// packed fleet costs about a tenth of the one before. Allow 2.5 times that for the granularity of
/// node sizes (several fleets of equal price exist, e.g. two 4-cpu or four 2-cpu nodes).
const PACKED_PRICE_SHARE: f64 = 0.25;
const DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_big_scale_down_is_consolidated_in_bulk_within_budget() -> Result<()> {
    // Planning every 5 s rather than every second: closer to the controller's default ratio
    // of poll period to validation pause (10 s / 15 s), so commands gather what a round sees.
    let options = Options {
        disruption_poll_period: Duration::from_secs(5),
        ..disruption_options(Duration::from_secs(5))
    };
    let Some(env) = Env::start_with(options).await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

/// What the watches saw.
#[derive(Default)]
struct Seen {
    /// Nodes of the pool now, and the disrupting ones among them.
    nodes: BTreeSet<String>,
    disrupting: BTreeSet<String>,
    /// The most nodes disrupting at once.
    most_disrupting: usize,
    /// Command id → its candidate NodeClaims.
    commands: BTreeMap<String, BTreeSet<String>>,
}

fn watch_nodes(env: &Env, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    let nodes: Api<Node> = Api::all(env.client.clone());
    let config = watcher::Config::default().labels(&format!("{NODE_POOL_LABEL}={}", env.pool));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(nodes, config));
        while let Some(Ok(event)) = stream.next().await {
            let mut s = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match event {
                watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                    s.nodes.insert(n.name_any());
                    if node_disrupting(&n) {
                        s.disrupting.insert(n.name_any());
                    } else {
                        s.disrupting.remove(&n.name_any());
                    }
                }
                watcher::Event::Delete(n) => {
                    s.nodes.remove(&n.name_any());
                    s.disrupting.remove(&n.name_any());
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
            s.most_disrupting = s.most_disrupting.max(s.disrupting.len());
        }
    })
}

fn watch_commands(env: &Env, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let config = watcher::Config::default().labels(&format!("{NODE_POOL_LABEL}={}", env.pool));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(claims, config));
        while let Some(Ok(event)) = stream.next().await {
            if let watcher::Event::Apply(c) | watcher::Event::InitApply(c) = event
                && let Some(r) = record_of(&c)
            {
                let mut s = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                s.commands.entry(r.id).or_default().extend(r.candidates);
            }
        }
    })
}

async fn body(env: &Env) -> Result<()> {
    // Nodes of at most 4 cpu, so 240 pods of 300m need about twenty of them; a 50% budget.
    env.limit_instance_cpu(5).await?;
    Api::<NodePool>::all(env.client.clone())
        .patch(
            &env.pool,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"disruption": {"budgets": [{"nodes": "50%"}]}}})),
        )
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    deployments
        .create(
            &PostParams::default(),
            &env.deployment("bulk", BEFORE, "300m"),
        )
        .await?;
    env.wait_running("bulk", BEFORE as usize).await?;
    let (nodes_before, price_before) = fleet(env).await?;
    assert!(
        nodes_before >= 10,
        "240 pods of 300m need many 4-cpu nodes, got {nodes_before}"
    );
    println!("before: {nodes_before} nodes, {price_before:.4}/h");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let watches = [
        watch_nodes(env, seen.clone()),
        watch_commands(env, seen.clone()),
    ];
    let started = Instant::now();
    deployments
        .patch(
            "bulk",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": AFTER}})),
        )
        .await?;
    let waited = env
        .cluster
        .wait_for(
            DEADLINE,
            "a packed fleet with every pod running and nothing in flight",
            || async {
                let (n, price) = fleet(env).await?;
                let nodes = env.nodes().await?;
                let settled =
                    !nodes.iter().any(node_disrupting) && env.node_claims().await?.len() == n;
                let pods = env.app_pods("bulk").await?;
                let running = pods.iter().filter(|p| pod_running(p)).count();
                let packed = price <= PACKED_PRICE_SHARE * price_before;
                let done =
                    packed && settled && pods.len() == AFTER as usize && running == pods.len();
                if done {
                    Ok(Some((n, price)))
                } else {
                    // Not an error: what the last look saw, for the timeout's message.
                    Err(anyhow::anyhow!(
                        "{n} nodes at {price:.4}/h, settled {settled}, {} pods, {running} running",
                        pods.len()
                    ))
                }
            },
        )
        .await;
    for w in &watches {
        w.abort();
    }
    let (nodes_after, price_after) = waited?;
    let s = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let sizes: Vec<usize> = s.commands.values().map(BTreeSet::len).collect();
    let removed: usize = sizes.iter().sum();
    println!(
        "after {:.1} s: {nodes_after} nodes, {price_after:.4}/h; {} commands removing {removed} nodes (sizes {sizes:?}); at most {} nodes disrupting at once",
        started.elapsed().as_secs_f64(),
        s.commands.len(),
        s.most_disrupting,
    );
    assert!(price_after <= PACKED_PRICE_SHARE * price_before);
    // The budget: 50% of the pool's nodes, which never exceeded the count before.
    let budget = nodes_before.div_ceil(2);
    assert!(
        s.most_disrupting <= budget,
        "{} nodes disrupting at once, budget {budget}",
        s.most_disrupting
    );
    // In bulk: the nodes went in commands of several nodes each, far fewer commands than
    // nodes (one node per command is what a plan-must-repeat validation let through).
    assert!(
        removed >= nodes_before - nodes_after,
        "every removed node belongs to a command"
    );
    assert!(
        s.commands.len() * 2 <= removed,
        "{} commands for {removed} nodes: not in bulk",
        s.commands.len()
    );
    assert!(s.most_disrupting >= 2, "commands ran one node at a time");
    Ok(())
}
