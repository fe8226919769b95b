//! e2e (feature gate `NodeOverlay` on): NodeOverlays scoped to a NodePool
//! (`karpenter.sh/nodepool In [...]`) change that NodePool's catalog only. With m-1x made
//! cheapest in this test's NodePool and s-1x cheaper still in another NodePool, this
//! NodePool's pod goes to m-1x. Its own binary: two gated controllers on one cluster (two
//! tests of a binary run in parallel) would both launch for the same pod.
//!
//! Expected types by hand from the kwok catalog (crates/providers/src/kwok/catalog.rs:
//! on-demand price = 0.025·vCPU + 0.001·GB of memory), the pool allowing on-demand amd64 only,
//! and a 500m pod: c-1x (2 GiB) 0.02715 is the cheapest, s-1x (4 GiB) 0.02929, m-1x (8 GiB)
//! 0.03359. Overlays are cluster-scoped: names unique to the run, deleted at the end.

mod common;

use anyhow::Result;
use common::overlay::{wait_condition, wait_types};
use common::{Env, test_options};
use k8s_openapi::api::core::v1::Pod;
use karpenter_api::labels::{INSTANCE_TYPE_LABEL, NODE_POOL_LABEL};
use karpenter_api::v1::Operator;
use karpenter_api::v1alpha1::{NodeOverlay, NodeOverlaySpec, OverlayRequirement};
use karpenter_controller::Options;
use karpenter_testkit::unique_name;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

const NEXT_CHEAPEST: &str = "s-1x-amd64-linux";
const OVERLAID_HERE: &str = "m-1x-amd64-linux";

fn price_overlay(name: &str, instance_type: &str, price: &str) -> NodeOverlay {
    NodeOverlay::new(
        name,
        NodeOverlaySpec {
            requirements: vec![OverlayRequirement {
                key: INSTANCE_TYPE_LABEL.into(),
                operator: Operator::In,
                values: vec![instance_type.into()],
            }],
            price: Some(price.into()),
            ..NodeOverlaySpec::default()
        },
    )
}

/// `price_overlay` of weight 50 limited to NodePool `pool` (the weight keeps it clear of the
/// other test's unweighted overlays, which would otherwise conflict with it).
fn pool_price_overlay(name: &str, pool: &str, instance_type: &str, price: &str) -> NodeOverlay {
    let mut o = price_overlay(name, instance_type, price);
    o.spec.weight = Some(50);
    o.spec.requirements.push(OverlayRequirement {
        key: NODE_POOL_LABEL.into(),
        operator: Operator::In,
        values: vec![pool.into()],
    });
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overlay_scoped_to_a_nodepool_changes_only_its_choice() -> Result<()> {
    let Some(env) = Env::start_with(Options {
        node_overlay: true,
        ..test_options()
    })
    .await?
    else {
        return Ok(());
    };
    let prefix = unique_name("e2e-overlay-pool");
    let result = scoped_body(&env, &prefix).await;
    let overlays: Api<NodeOverlay> = Api::all(env.client.clone());
    for suffix in ["elsewhere", "here"] {
        let _ = overlays
            .delete(&format!("{prefix}-{suffix}"), &DeleteParams::background())
            .await;
    }
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

/// m-1x (0.03359 unoverlaid) costs 0.001 in this NodePool, s-1x 0.0001 in another one only:
/// this NodePool's pod goes to m-1x. Were the other overlay applied here, s-1x would win;
/// were this one not, c-1x (0.02715, or s-1x if the other test's overlay makes c-1x dear).
async fn scoped_body(env: &Env, prefix: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    let overlays: Api<NodeOverlay> = Api::all(env.client.clone());
    let elsewhere = format!("{prefix}-elsewhere");
    let other_pool = format!("{prefix}-other-pool");
    let o = pool_price_overlay(&elsewhere, &other_pool, NEXT_CHEAPEST, "0.0001");
    overlays.create(&PostParams::default(), &o).await?;
    let here = format!("{prefix}-here");
    let o = pool_price_overlay(&here, &env.pool, OVERLAID_HERE, "0.001");
    overlays.create(&PostParams::default(), &o).await?;
    wait_condition(env, &elsewhere, "True").await?;
    wait_condition(env, &here, "True").await?;
    pods.create(&PostParams::default(), &env.pod("scoped", "500m"))
        .await?;
    wait_types(env, &[(OVERLAID_HERE, 1)]).await?;
    Ok(())
}
