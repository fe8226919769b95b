//! e2e: two controller replicas with leader election on one Lease. Only the leader acts (the
//! follower, its cluster state warm, creates no NodeClaim); killing the leader (its tasks
//! aborted, the Lease left to expire) hands over to the follower, which then provisions. A
//! replica shut down cleanly releases the Lease at once.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{Env, TIMEOUT, start_controller, test_options};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use karpenter_controller::leaderelection::LeaderElectionConfig;
use karpenter_controller::metrics::ReasonPool;
use karpenter_controller::{Options, Running};
use karpenter_testkit::unique_name;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Where the test's Lease lives (it is deleted at the end).
const LEASE_NAMESPACE: &str = "default";
const LEASE_DURATION: Duration = Duration::from_secs(3);

fn options(lease: &str, identity: &str) -> Options {
    Options {
        leader_election: Some(LeaderElectionConfig {
            // Short, so a hand-over takes seconds; the ratios are client-go's.
            lease_duration: LEASE_DURATION,
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(250),
            ..LeaderElectionConfig::new(lease, LEASE_NAMESPACE, identity)
        }),
        ..test_options()
    }
}

fn created(replica: &Running, pool: &str) -> u64 {
    replica
        .context
        .metrics
        .nodeclaims_created
        .get_or_create(&ReasonPool {
            reason: "provisioning".into(),
            nodepool: pool.into(),
        })
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_acts_and_killing_it_hands_over() -> Result<()> {
    let lease = unique_name("e2e-lease");
    let Some(mut env) = Env::start_with(options(&lease, "replica-a")).await? else {
        return Ok(());
    };
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), LEASE_NAMESPACE);
    let result = body(&mut env, &lease).await;
    // `env.controller` is the replica that leads by now; it removes the finalizers.
    let cleaned = env.cleanup().await;
    let _ = leases.delete(&lease, &DeleteParams::background()).await;
    result.and(cleaned)
}

async fn holder(leases: &Api<Lease>, name: &str) -> Result<Option<String>> {
    Ok(leases
        .get_opt(name)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

async fn body(env: &mut Env, lease: &str) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), LEASE_NAMESPACE);
    env.cluster
        .wait_for(TIMEOUT, "replica a leading", || async {
            Ok::<_, anyhow::Error>(env.controller.is_leader().then_some(()))
        })
        .await?;
    let b = start_controller(&env.cluster, options(lease, "replica-b")).await?;
    env.cluster
        .wait_for(TIMEOUT, "replica b's cluster state synced", || async {
            Ok::<_, anyhow::Error>(b.synced().then_some(()))
        })
        .await?;
    assert!(!b.is_leader(), "b follows while a renews");
    assert_eq!(holder(&leases, lease).await?.as_deref(), Some("replica-a"));

    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    deployments
        .create(&PostParams::default(), &env.deployment("led", 2, "1"))
        .await?;
    env.wait_running("led", 2).await?;
    assert!(
        created(&env.controller, &env.pool) > 0,
        "the leader provisioned"
    );
    assert_eq!(created(&b, &env.pool), 0, "the follower did not");

    // Kill a: no release, the Lease must expire before b may act.
    env.controller.stop();
    let killed = Instant::now();
    deployments
        .patch(
            "led",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 4}})),
        )
        .await?;
    env.cluster
        .wait_for(TIMEOUT, "replica b leading", || async {
            Ok::<_, anyhow::Error>(b.is_leader().then_some(()))
        })
        .await?;
    let handover = killed.elapsed();
    println!("hand-over after {:.1} s", handover.as_secs_f64());
    assert!(
        handover >= LEASE_DURATION - Duration::from_millis(500),
        "b took over before a's Lease could have expired ({handover:?})"
    );
    assert_eq!(holder(&leases, lease).await?.as_deref(), Some("replica-b"));
    env.wait_running("led", 4).await?;
    assert!(created(&b, &env.pool) > 0, "the new leader provisioned");

    // A clean shutdown releases the Lease; a new replica leads without waiting for expiry.
    b.shutdown().await;
    assert_eq!(
        holder(&leases, lease).await?,
        None,
        "the Lease was released"
    );
    env.controller = start_controller(&env.cluster, options(lease, "replica-c")).await?;
    env.cluster
        .wait_for(TIMEOUT, "replica c leading", || async {
            Ok::<_, anyhow::Error>(env.controller.is_leader().then_some(()))
        })
        .await?;
    Ok(())
}
