//! Drift (leader only; runs whether or not disruption does, like upstream's NodeClaim
//! disruption-conditions controller): stamps NodePools with their template hash, re-stamps
//! NodeClaims that carry an older hash version, and keeps each NodeClaim's `Drifted` condition
//! current. The disruption loop reads drift from that condition.
//!
//! The checks that only read the cluster state ([`hash::drifted`]: NodePool hash,
//! requirements) run every round; the cloud provider's check costs cloud calls, so it runs per
//! NodeClaim on its own [`schedule`] (every 5 minutes, or at once when its NodePool changed),
//! for all claims that are due in one batched call ([`CloudProvider::are_drifted`]).
//!
//! [`CloudProvider::are_drifted`]: karpenter_providers::CloudProvider::are_drifted

pub mod hash;
pub mod schedule;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::NODE_POOL_LABEL;
use karpenter_api::v1::nodeclaim::{CONDITION_DRIFTED, CONDITION_LAUNCHED};
use karpenter_api::v1::{NodeClaim, NodePool, find_condition};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::error::is_status;
use crate::nodeclaim::lifecycle::logic::set_condition;
use crate::state::{Snapshot, legacy};
use schedule::Schedule;

/// Runs the drift loop until the future is dropped.
pub async fn run(ctx: Arc<Context>) {
    if ctx.state.wait_until_synced().await.is_err() {
        return;
    }
    let mut schedule = Schedule::default();
    let mut tick = tokio::time::interval(ctx.options.disruption_poll_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        round(&ctx, &mut schedule).await;
    }
}

/// One NodeClaim's drift this round.
struct Found {
    claim: Arc<NodeClaim>,
    /// From the cluster state alone: `(reason, message)`.
    local: Option<(String, String)>,
}

async fn round(ctx: &Context, schedule: &mut Schedule) {
    if !ctx.state.is_synced() {
        return;
    }
    let snapshot = ctx.state.snapshot();
    stamp_pools(ctx, &snapshot).await;
    let now = Timestamp::now();
    let pools: HashMap<&str, &NodePool> = snapshot
        .node_pools
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p.as_ref())))
        .collect();
    let node_labels: HashMap<&str, &BTreeMap<String, String>> = snapshot
        .nodes
        .iter()
        .filter_map(|n| {
            let pid = n.spec.as_ref()?.provider_id.as_deref()?;
            Some((pid, n.metadata.labels.as_ref()?))
        })
        .collect();
    let mut found = Vec::new();
    let mut ask: Vec<(NodeClaim, String)> = Vec::new();
    for claim in &snapshot.node_claims {
        if claim.metadata.deletion_timestamp.is_some() || !launched(claim) {
            continue;
        }
        let Some(pool) = claim
            .labels()
            .get(NODE_POOL_LABEL)
            .and_then(|p| pools.get(p.as_str()))
        else {
            continue;
        };
        if hash::needs_restamp(claim) {
            // Judged next round, from the new stamp: this round's copy carries a hash that
            // cannot be compared, and acting on it could clear a Drifted condition the
            // re-stamp deliberately keeps.
            restamp(ctx, claim, pool).await;
            continue;
        }
        let pid = claim.status.as_ref().and_then(|s| s.provider_id.as_deref());
        let labels = pid
            .and_then(|p| node_labels.get(p).copied())
            .unwrap_or_else(|| claim.labels());
        let local = hash::drifted(claim, pool, labels);
        let depends_on = depends_on(claim, pool);
        if local.is_none() && schedule.due(&claim.name_any(), &depends_on, now.as_second()) {
            ask.push((claim.as_ref().clone(), depends_on));
        }
        found.push(Found {
            claim: claim.clone(),
            local,
        });
    }
    ask_provider(ctx, schedule, ask, now.as_second()).await;
    let live: HashSet<String> = snapshot.node_claims.iter().map(|c| c.name_any()).collect();
    schedule.retain(|c| live.contains(c));
    for f in found {
        let drift = f.local.or_else(|| {
            schedule
                .last(&f.claim.name_any())
                .map(|r| (r.to_string(), "the cloud provider says so".to_string()))
        });
        set_drifted(ctx, &f.claim, drift, now).await;
    }
}

/// What a claim's provider drift depends on besides time: its NodePool's generation and its
/// NodeClass reference.
fn depends_on(claim: &NodeClaim, pool: &NodePool) -> String {
    let r = &claim.spec.node_class_ref;
    format!(
        "{}@{}/{}/{}/{}",
        pool.name_any(),
        pool.metadata.generation.unwrap_or_default(),
        r.group,
        r.kind,
        r.name
    )
}

/// Asks the provider about every due claim in one batch and records the answers; a failed
/// answer keeps the previous one until the claim is due again (a failing cloud is not asked
/// every round).
async fn ask_provider(
    ctx: &Context,
    schedule: &mut Schedule,
    ask: Vec<(NodeClaim, String)>,
    now: i64,
) {
    if ask.is_empty() {
        return;
    }
    let (claims, keys): (Vec<NodeClaim>, Vec<String>) = ask.into_iter().unzip();
    tracing::debug!(
        claims = claims.len(),
        "asking the cloud provider about drift"
    );
    let answers = ctx.provider.are_drifted(&claims).await;
    for ((claim, key), answer) in claims.iter().zip(&keys).zip(answers) {
        let name = claim.name_any();
        let drift = match answer {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(NodeClaim = %name, error = %e, "drift check failed");
                schedule.last(&name).map(str::to_owned)
            }
        };
        schedule.record(&name, key, now, drift);
    }
}

/// Keeps the claim's `Drifted` condition in line with `drift`.
async fn set_drifted(
    ctx: &Context,
    claim: &NodeClaim,
    drift: Option<(String, String)>,
    now: Timestamp,
) {
    let mut conditions = claim
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let changed = match &drift {
        Some((reason, message)) => set_condition(
            &mut conditions,
            CONDITION_DRIFTED,
            "True",
            reason,
            message,
            now,
        ),
        None => {
            let before = conditions.len();
            conditions.retain(|c| c.type_ != CONDITION_DRIFTED);
            conditions.len() != before
        }
    };
    if !changed {
        return;
    }
    let patch = json!({
        "metadata": {"resourceVersion": claim.resource_version()},
        "status": {"conditions": conditions},
    });
    match Api::<NodeClaim>::all(ctx.client.clone())
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => {}
        Err(e) => {
            tracing::debug!(NodeClaim = %claim.name_any(), error = %e, "setting Drifted failed")
        }
    }
}

fn launched(claim: &NodeClaim) -> bool {
    claim
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, CONDITION_LAUNCHED))
        .is_some_and(|c| c.is_true())
}

fn annotation_patch(pool: &NodePool) -> serde_json::Value {
    let annotations: serde_json::Map<String, serde_json::Value> = hash::hash_annotations(pool)
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    json!({"metadata": {"annotations": annotations}})
}

/// Writes the current hash on NodePools that lack it (legacy Provisioners are read-only).
async fn stamp_pools(ctx: &Context, snapshot: &Snapshot) {
    let api: Api<NodePool> = Api::all(ctx.client.clone());
    for pool in &snapshot.node_pools {
        if legacy::is_from_provisioner(pool) || hash::pool_stamped(pool) {
            continue;
        }
        let patch = annotation_patch(pool);
        if let Err(e) = api
            .patch(
                &pool.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(NodePool = %pool.name_any(), error = %e, "stamping the hash failed");
        }
    }
}

/// Gives a NodeClaim stamped with another hash version (an older one of ours, or upstream
/// Karpenter's after a take-over) the current version, and the current hash of its NodePool
/// unless it is already drifted ([`hash::restamp_annotations`], as upstream does on a hash
/// version change): comparing hashes of different versions would drift every node at once.
async fn restamp(ctx: &Context, claim: &NodeClaim, pool: &NodePool) {
    let annotations: serde_json::Map<String, serde_json::Value> =
        hash::restamp_annotations(claim, pool)
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
    let patch = json!({"metadata": {"annotations": annotations}});
    if let Err(e) = Api::<NodeClaim>::all(ctx.client.clone())
        .patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        && !is_status(&e, 404)
    {
        tracing::debug!(NodeClaim = %claim.name_any(), error = %e, "re-stamping the hash failed");
    }
}
