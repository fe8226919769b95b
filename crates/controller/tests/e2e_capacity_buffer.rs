//! CapacityBuffer (feature gate `CapacityBuffer`) on the local control plane: a buffer of one
//! 1-CPU chunk launches a node with no real pod on it, that node survives disruption rounds
//! (it is neither empty nor consolidated away) while the buffer exists, and once the buffer is
//! deleted the node, now empty, is removed; a `percentage` of a Deployment follows its
//! replicas.

mod common;

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use common::{Env, TIMEOUT, disruption_options, node_disrupting};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodTemplate, PodTemplateSpec};
use karpenter_api::autoscaling::{CapacityBuffer, CapacityBufferSpec, LocalObjectRef, ScalableRef};
use karpenter_controller::Options;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

/// Each test's controller acts on the whole cluster: side by side, each would provision for the
/// other's buffer and, not knowing where the other placed it, find the other's node empty.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Disruption rounds (full evaluations) the buffer's node must survive.
const ROUNDS: u64 = 5;

fn options() -> Options {
    Options {
        capacity_buffer: true,
        ..disruption_options(Duration::from_secs(1))
    }
}

#[tokio::test]
async fn a_buffer_keeps_an_otherwise_empty_node_until_it_is_deleted() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(env) = Env::start_with(options()).await? else {
        return Ok(());
    };
    let ns = env.ns().to_owned();
    let templates: Api<PodTemplate> = Api::namespaced(env.client.clone(), &ns);
    templates
        .create(
            &PostParams::default(),
            &PodTemplate {
                metadata: ObjectMeta {
                    name: Some("chunk".into()),
                    ..ObjectMeta::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: None,
                    spec: Some(env.pod_spec("1")),
                }),
            },
        )
        .await?;
    let buffers: Api<CapacityBuffer> = Api::namespaced(env.client.clone(), &ns);
    let mut buffer = CapacityBuffer::new(
        "spare",
        CapacityBufferSpec {
            pod_template_ref: Some(LocalObjectRef {
                name: "chunk".into(),
            }),
            replicas: Some(1),
            ..CapacityBufferSpec::default()
        },
    );
    buffer.metadata.namespace = Some(ns.clone());
    buffers.create(&PostParams::default(), &buffer).await?;

    // The status says what the buffer resolved to.
    env.cluster
        .wait_for(TIMEOUT, "the buffer's status", || async {
            let b = buffers.get("spare").await?;
            let s = b.status.unwrap_or_default();
            let ready = s
                .conditions
                .iter()
                .any(|c| c.type_ == "ReadyForProvisioning" && c.status == "True");
            let resolved = s.replicas == Some(1)
                && s.pod_template_ref.as_ref().map(|r| r.name.as_str()) == Some("chunk");
            Ok::<_, anyhow::Error>((ready && resolved).then_some(()))
        })
        .await?;

    // A node is launched for the virtual pod: no real pod exists anywhere in the namespace.
    let node = env
        .cluster
        .wait_for(TIMEOUT, "a node for the buffer", || async {
            let nodes = env.nodes().await?;
            Ok::<_, anyhow::Error>(match nodes.as_slice() {
                [n] if common::node_ready(n) => Some(n.name_any()),
                _ => None,
            })
        })
        .await?;
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(env.client.clone(), &ns)
        .list(&Default::default())
        .await?;
    ensure!(pods.items.is_empty(), "real pods exist: {:?}", pods.items);

    // It survives several full disruption evaluations, and no second node is launched. The
    // first violation ends the wait (a replacement could otherwise hide it).
    let start = env.disruption_rounds();
    let violation = env
        .cluster
        .wait_for(
            TIMEOUT,
            format!("{ROUNDS} disruption evaluations with the buffer's node kept"),
            || async {
                let nodes = env.nodes().await?;
                let claims = env.node_claims().await?;
                let kept = matches!(nodes.as_slice(), [n] if n.name_any() == node && !node_disrupting(n));
                if !kept || claims.len() != 1 {
                    let names: Vec<String> = nodes.iter().map(|n| n.name_any()).collect();
                    return Ok::<_, anyhow::Error>(Some(Some(format!(
                        "the buffer's node {node} was disrupted or joined: nodes {names:?}, {} claims",
                        claims.len()
                    ))));
                }
                let done = env.disruption_rounds() >= start + ROUNDS;
                Ok(done.then_some(None))
            },
        )
        .await?;
    if let Some(v) = violation {
        bail!(v);
    }
    // The provisioner's condition: the virtual pod now fits on existing capacity (the first
    // round, which launched the node, said RequiresNewCapacity; rounds since see the node).
    env.cluster
        .wait_for(
            TIMEOUT,
            "Provisioning=True (FitsExistingCapacity)",
            || async {
                let b = buffers.get("spare").await?;
                let fits = b.status.unwrap_or_default().conditions.iter().any(|c| {
                    c.type_ == "Provisioning"
                        && c.status == "True"
                        && c.reason.as_deref() == Some("FitsExistingCapacity")
                });
                Ok::<_, anyhow::Error>(fits.then_some(()))
            },
        )
        .await?;

    // Without the buffer the node is empty and goes.
    buffers.delete("spare", &DeleteParams::default()).await?;
    env.cluster
        .wait_for(TIMEOUT, "the empty node to be removed", || async {
            Ok::<_, anyhow::Error>(env.nodes().await?.is_empty().then_some(()))
        })
        .await?;
    env.cleanup().await
}

/// A `scalableRef` buffer at 50% of a Deployment: 2 replicas make 1 chunk, 5 make
/// ceil(2.5) = 3; the provisioner places every chunk on a node of the pool.
#[tokio::test]
async fn a_percentage_of_a_deployment_follows_its_replicas() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(env) = Env::start_with(options()).await? else {
        return Ok(());
    };
    let ns = env.ns().to_owned();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &env.deployment("web", 2, "1"))
        .await?;
    let buffers: Api<CapacityBuffer> = Api::namespaced(env.client.clone(), &ns);
    let mut buffer = CapacityBuffer::new(
        "pct",
        CapacityBufferSpec {
            scalable_ref: Some(ScalableRef {
                api_group: "apps".into(),
                kind: "Deployment".into(),
                name: "web".into(),
            }),
            percentage: Some(50),
            ..CapacityBufferSpec::default()
        },
    );
    buffer.metadata.namespace = Some(ns.clone());
    buffers.create(&PostParams::default(), &buffer).await?;
    env.wait_running("web", 2).await?;

    let state = env.controller.context.state.clone();
    for (replicas, chunks) in [(2, 1usize), (5, 3)] {
        if replicas != 2 {
            deployments
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
                )
                .await?;
        }
        env.cluster
            .wait_for(
                TIMEOUT,
                format!(
                    "{chunks} buffer chunks for {replicas} replicas, placed on the pool's nodes"
                ),
                || async {
                    let b = buffers.get("pct").await?;
                    let status = b.status.unwrap_or_default();
                    let nodes: Vec<String> =
                        env.nodes().await?.iter().map(|n| n.name_any()).collect();
                    let claims: Vec<String> = env
                        .node_claims()
                        .await?
                        .iter()
                        .map(|c| c.name_any())
                        .collect();
                    let placed = state
                        .buffer_placements
                        .get()
                        .into_iter()
                        .filter(|(pod, target)| {
                            pod.starts_with(&format!("{ns}/capacity-buffer:pct:"))
                                && (nodes.contains(target) || claims.contains(target))
                        })
                        .count();
                    let done = status.replicas == Some(i32::try_from(chunks)?)
                        && status.pod_template_ref.is_none()
                        && placed == chunks;
                    Ok::<_, anyhow::Error>(done.then_some(()))
                },
            )
            .await?;
    }
    buffers.delete("pct", &DeleteParams::default()).await?;
    env.cleanup().await
}
