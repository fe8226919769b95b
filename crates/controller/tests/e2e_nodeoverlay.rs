//! e2e (feature gate `NodeOverlay` on): a NodeOverlay that makes the otherwise-cheapest
//! instance type expensive changes the type chosen for the next pending pod, and overlays get
//! their status conditions (`Ready`, `ValidationSucceeded`; `False`/`Conflict` naming the other
//! overlay when two of equal weight change the same offering).
//!
//! Expected types by hand from the kwok catalog (crates/providers/src/kwok/catalog.rs: on-demand
//! price = 0.025·vCPU + 0.001·GB of memory), the test's pool allowing on-demand amd64 only, and
//! a 500m pod (a 1-vCPU type has 900m allocatable, so each such pod needs a node of its own):
//! - c-1x-amd64-linux (1 vCPU, 2 GiB): 0.025 + 0.001·2.147 = 0.02715, the cheapest;
//! - s-1x-amd64-linux (1 vCPU, 4 GiB): 0.025 + 0.001·4.295 = 0.02929, next;
//! - m-1x (8 GiB) 0.03359 and every 2-vCPU type (≥ 0.0543) cost more.
//!
//! Overlays are cluster-scoped: their names are unique to the run and they are deleted at the
//! end whatever the outcome. Only controllers with the gate on read them (other tests' do not).

mod common;

use anyhow::Result;
use common::overlay::{wait_condition, wait_types};
use common::{Env, test_options};
use k8s_openapi::api::core::v1::Pod;
use karpenter_api::labels::INSTANCE_TYPE_LABEL;
use karpenter_api::v1::Operator;
use karpenter_api::v1alpha1::{
    NodeOverlay, NodeOverlaySpec, OverlayRequirement, PRICE_OVERLAY_APPLIED_ANNOTATION,
};
use karpenter_controller::Options;
use karpenter_testkit::unique_name;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

const CHEAPEST: &str = "c-1x-amd64-linux";
const NEXT_CHEAPEST: &str = "s-1x-amd64-linux";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overlay_changes_the_chosen_instance_type() -> Result<()> {
    let Some(env) = Env::start_with(Options {
        node_overlay: true,
        ..test_options()
    })
    .await?
    else {
        return Ok(());
    };
    let prefix = unique_name("e2e-overlay");
    let result = body(&env, &prefix).await;
    let overlays: Api<NodeOverlay> = Api::all(env.client.clone());
    for suffix in ["b", "a"] {
        let _ = overlays
            .delete(&format!("{prefix}-{suffix}"), &DeleteParams::background())
            .await;
    }
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

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

async fn body(env: &Env, prefix: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    let overlays: Api<NodeOverlay> = Api::all(env.client.clone());

    // Without overlays: the cheapest type.
    pods.create(&PostParams::default(), &env.pod("before", "500m"))
        .await?;
    wait_types(env, &[(CHEAPEST, 1)]).await?;

    // The cheapest type now costs 10/h: the next pod goes to the next cheapest.
    let b = format!("{prefix}-b");
    overlays
        .create(&PostParams::default(), &price_overlay(&b, CHEAPEST, "10"))
        .await?;
    let (reason, _) = wait_condition(env, &b, "True").await?;
    assert_eq!(reason, "ValidationSucceeded");
    pods.create(&PostParams::default(), &env.pod("after", "500m"))
        .await?;
    wait_types(env, &[(CHEAPEST, 1), (NEXT_CHEAPEST, 1)]).await?;
    // Upstream's mark: the second claim was planned with an overlaid price among its options,
    // the first without.
    let marked = env
        .node_claims()
        .await?
        .iter()
        .filter(|c| {
            c.annotations()
                .get(PRICE_OVERLAY_APPLIED_ANNOTATION)
                .map(String::as_str)
                == Some("true")
        })
        .count();
    assert_eq!(
        marked, 1,
        "claims marked {PRICE_OVERLAY_APPLIED_ANNOTATION}"
    );

    // A second overlay of the same (unset) weight on the same offerings conflicts: overlays of
    // equal weight go in reverse name order, so "-b" is taken and "-a" is left out, its
    // condition naming "-b"; "-b" stays valid.
    let a = format!("{prefix}-a");
    overlays
        .create(&PostParams::default(), &price_overlay(&a, CHEAPEST, "0"))
        .await?;
    let (reason, message) = wait_condition(env, &a, "False").await?;
    assert_eq!(reason, "Conflict");
    assert!(message.contains(&b), "{message}");
    wait_condition(env, &b, "True").await?;
    // "-a" (price 0) is not applied: a third pod still avoids the cheapest type.
    pods.create(&PostParams::default(), &env.pod("third", "500m"))
        .await?;
    wait_types(env, &[(CHEAPEST, 1), (NEXT_CHEAPEST, 2)]).await?;
    Ok(())
}
