//! CapacityBuffer (feature gate `CapacityBuffer`) on the local control plane: a buffer of one
//! 1-CPU chunk launches a node with no real pod on it, that node survives disruption rounds
//! (it is neither empty nor consolidated away) while the buffer exists, and once the buffer is
//! deleted the node, now empty, is removed.

mod common;

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use common::{Env, TIMEOUT, disruption_options, node_disrupting};
use k8s_openapi::api::core::v1::{PodTemplate, PodTemplateSpec};
use karpenter_api::autoscaling::{CapacityBuffer, CapacityBufferSpec, LocalObjectRef};
use karpenter_controller::Options;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};

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
    let metrics = env.controller.context.metrics.clone();
    let start = metrics.disruption_evaluation_duration.count();
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
                let done = metrics.disruption_evaluation_duration.count() >= start + ROUNDS;
                Ok(done.then_some(None))
            },
        )
        .await?;
    if let Some(v) = violation {
        bail!(v);
    }

    // Without the buffer the node is empty and goes.
    buffers.delete("spare", &DeleteParams::default()).await?;
    env.cluster
        .wait_for(TIMEOUT, "the empty node to be removed", || async {
            Ok::<_, anyhow::Error>(env.nodes().await?.is_empty().then_some(()))
        })
        .await?;
    env.cleanup().await
}
