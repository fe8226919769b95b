//! The plane's floor: the same Deployments on nodes that exist before the pods do, and no
//! controller. What it measures (seconds to all Running, p50/p99 Pending -> Running) is what
//! this machine's kube-scheduler, kwok and API server need for N pods by themselves, the part
//! of a scale-up no autoscaler can remove.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use karpenter_providers::kwok::catalog::ZONES;
use karpenter_providers::kwok::launch::{KWOK_NODE_ANNOTATION, KWOK_NODE_VALUE};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;

use super::{Case, Settings, emit, percentile};
use crate::fleet::Fleet;
use crate::setup;
use crate::workload::{POOL, POOL_LABEL};

/// vCPUs of each node (the perf NodePool's largest type).
const NODE_CPUS: u64 = 32;
/// Room left on top of the pods' requests, so packing and the zone spread never run short.
const HEADROOM: f64 = 1.3;

/// Runs the floor for one size.
pub async fn run(settings: &Settings, case: Case) -> Result<()> {
    let dir = settings.out_dir.join(format!("floor-{}", case.size));
    let (plane, client) = super::start_plane(settings, &dir).await?;
    let fleet = Fleet::start(&client, settings.budget_percent);
    let nodes = node_count(case.size);
    let api: Api<Node> = Api::all(client.clone());
    for i in 0..nodes {
        api.create(&PostParams::default(), &node(i))
            .await
            .with_context(|| format!("creating floor node {i}"))?;
    }
    let n = case.size;
    let timeout = Duration::from_secs(600 + n as u64 / 10);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    fleet.start_phase();
    setup::create_deployments(&client, n).await?;
    let started = Instant::now();
    let all_running = loop {
        tick.tick().await;
        let snap = fleet.snapshot();
        if snap.running >= n && snap.pods == n {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > timeout {
            bail!("{} of {n} pods Running after {timeout:?}", snap.running);
        }
        if last.elapsed() >= Duration::from_secs(10) {
            last = Instant::now();
            tracing::info!(
                running = snap.running,
                pods = snap.pods,
                "floor: scaling up"
            );
        }
    };
    let mut lat = fleet.start_phase().latencies;
    emit(
        case,
        "floor",
        json!({
            "seconds_to_all_running": all_running,
            "pending_to_running_p50_s": percentile(&mut lat, 50.0),
            "pending_to_running_p99_s": percentile(&mut lat, 99.0),
            "pods_measured": lat.len(),
            "nodes": nodes,
            "node_cpus": NODE_CPUS,
        }),
    );
    drop(fleet);
    drop(plane);
    Ok(())
}

/// Nodes of [`NODE_CPUS`] for the pods' total CPU request, with [`HEADROOM`].
fn node_count(pods: usize) -> usize {
    let millicpu: u64 = crate::workload::replicas(pods)
        .iter()
        .map(|(shape, n)| millicpu(shape.cpu) * u64::try_from(*n).unwrap_or(0))
        .sum();
    let need = millicpu as f64 * HEADROOM / (NODE_CPUS * 1000) as f64;
    (need.ceil() as usize).max(ZONES.len())
}

/// `250m` or `2` as millicpu (the perf shapes only use these forms).
fn millicpu(cpu: &str) -> u64 {
    match cpu.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => cpu.parse::<u64>().map(|c| c * 1000).unwrap_or(0),
    }
}

/// A kwok Node in zone `i mod 4`, labelled like the perf NodePool's nodes.
fn node(i: usize) -> Node {
    let name = format!("floor-{i}");
    let labels = BTreeMap::from([
        (POOL_LABEL.to_string(), POOL.to_string()),
        ("kubernetes.io/hostname".to_string(), name.clone()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "topology.kubernetes.io/zone".to_string(),
            ZONES[i % ZONES.len()].to_string(),
        ),
        (
            KWOK_NODE_ANNOTATION.to_string(),
            KWOK_NODE_VALUE.to_string(),
        ),
    ]);
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(NODE_CPUS.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Gi", NODE_CPUS * 4)),
        ),
        ("pods".to_string(), Quantity("250".to_string())),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                KWOK_NODE_ANNOTATION.to_string(),
                KWOK_NODE_VALUE.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            ..NodeStatus::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enough_nodes_for_the_mix() {
        // 1 000 pods: 400 x 250m + 300 x 500m + 300 x 2 = 850 cpu; x1.3 / 32 = 34.5.
        assert_eq!(node_count(1000), 35);
        assert_eq!(millicpu("250m"), 250);
        assert_eq!(millicpu("2"), 2000);
    }
}
