//! Garbage collection, both ways round: provider instances no NodeClaim accounts for (after a
//! grace period that covers a launch in flight) are deleted, and launched NodeClaims whose
//! instance vanished are deleted (their pods are then provisioned again).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::NODE_POOL_LABEL;
use karpenter_api::v1::NodeClaim;
use karpenter_api::v1::find_condition;
use karpenter_api::v1::nodeclaim::CONDITION_LAUNCHED;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::error::{Result, is_status};
use crate::metrics::ReasonPool;

/// What one pass decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Instances (by providerID) to delete.
    pub orphan_instances: Vec<String>,
    /// NodeClaims (by name) to delete.
    pub lost_claims: Vec<String>,
}

fn age(
    ts: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: Timestamp,
) -> Duration {
    ts.map(|t| now.duration_since(t.0))
        .filter(|d| !d.is_negative())
        .map(|d| d.unsigned_abs())
        .unwrap_or_default()
}

/// Decides one pass, pure: `instances` from the provider, `claims` from the cluster state.
pub fn decide(
    instances: &[NodeClaim],
    claims: &[Arc<NodeClaim>],
    now: Timestamp,
    grace: Duration,
) -> Decisions {
    let claimed: HashSet<&str> = claims
        .iter()
        .filter_map(|c| c.status.as_ref().and_then(|s| s.provider_id.as_deref()))
        .collect();
    let claim_names: HashSet<&str> = claims
        .iter()
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    let live: HashSet<&str> = instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter_map(|i| i.status.as_ref().and_then(|s| s.provider_id.as_deref()))
        .collect();
    let mut out = Decisions::default();
    for i in instances {
        let Some(pid) = i.status.as_ref().and_then(|s| s.provider_id.as_deref()) else {
            continue;
        };
        let name = i.metadata.name.as_deref().unwrap_or_default();
        // An instance named after a live NodeClaim is that claim's launch in flight.
        if claimed.contains(pid)
            || claim_names.contains(name)
            || i.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if age(i.metadata.creation_timestamp.as_ref(), now) >= grace {
            out.orphan_instances.push(pid.to_string());
        }
    }
    for c in claims {
        if c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(pid) = c.status.as_ref().and_then(|s| s.provider_id.as_deref()) else {
            continue;
        };
        let launched_at = c
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, CONDITION_LAUNCHED))
            .and_then(|cond| cond.last_transition_time.as_ref());
        if !live.contains(pid) && age(launched_at, now) >= grace {
            out.lost_claims.push(c.name_any());
        }
    }
    out
}

/// Runs garbage collection every `gc_interval` until dropped.
pub async fn run(ctx: Arc<Context>) {
    if ctx.state.wait_until_ready().await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(ctx.options.gc_interval);
    loop {
        tick.tick().await;
        // Deciding "no claim" from a partial list would kill a launch: wait out a re-list.
        if ctx.state.wait_until_synced().await.is_err() {
            return;
        }
        if let Err(e) = collect(&ctx).await {
            tracing::warn!(error = %e, "garbage collection failed");
        }
    }
}

/// One pass.
pub async fn collect(ctx: &Context) -> Result<Decisions> {
    // Claims before instances: an instance launched in between is then younger than its claim
    // in our view, never an orphan (and the grace period covers the launch itself). The state
    // includes the claims we created that its watch has not delivered yet.
    let mut claims = ctx.state.all_node_claims();
    let instances = ctx.provider.list().await?;
    let mut d = decide(&instances, &claims, Timestamp::now(), ctx.options.gc_grace);
    if !d.orphan_instances.is_empty() {
        // Deleting an instance cannot be undone: confirm against the API that no claim
        // accounts for it (a watch lagging by more than the grace period would look the same).
        claims = Api::<NodeClaim>::all(ctx.client.clone())
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .map(Arc::new)
            .collect();
        d = decide(&instances, &claims, Timestamp::now(), ctx.options.gc_grace);
    }
    for pid in &d.orphan_instances {
        let Some(instance) = instances.iter().find(|i| {
            i.status.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(pid.as_str())
        }) else {
            continue;
        };
        tracing::info!(provider_id = %pid, "deleting instance without a nodeclaim");
        match ctx.provider.delete(instance).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(provider_id = %pid, error = %e, "deleting an orphan instance failed")
            }
        }
    }
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    for name in &d.lost_claims {
        tracing::info!(NodeClaim = %name, "deleting nodeclaim whose instance is gone");
        let pool = claims
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|c| c.labels().get(NODE_POOL_LABEL).cloned())
            .unwrap_or_default();
        ctx.metrics
            .nodeclaims_disrupted
            .get_or_create(&ReasonPool {
                reason: "garbage_collected".into(),
                nodepool: pool,
            })
            .inc();
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use karpenter_api::v1::{NodeClaimSpec, NodeClaimStatus};

    fn claim(name: &str, pid: Option<&str>, launched: Option<Timestamp>) -> NodeClaim {
        let mut c = NodeClaim::new(
            name,
            NodeClaimSpec {
                taints: vec![],
                startup_taints: vec![],
                requirements: vec![],
                resources: Default::default(),
                node_class_ref: Default::default(),
                termination_grace_period: None,
                expire_after: "Never".into(),
            },
        );
        let mut st = NodeClaimStatus {
            provider_id: pid.map(String::from),
            ..Default::default()
        };
        if let Some(t) = launched {
            crate::nodeclaim::lifecycle::logic::set_condition(
                &mut st.conditions,
                CONDITION_LAUNCHED,
                "True",
                "Launched",
                "",
                t,
            );
        }
        c.status = Some(st);
        c
    }

    fn instance(name: &str, created: Timestamp) -> NodeClaim {
        let mut i = claim(name, Some(&format!("kwok://{name}")), None);
        i.metadata.creation_timestamp = Some(Time(created));
        i
    }

    #[test]
    fn orphans_after_grace_and_lost_claims() {
        let t0 = Timestamp::UNIX_EPOCH;
        let grace = Duration::from_secs(30);
        let now = t0 + Duration::from_secs(60);
        let instances = vec![
            instance("owned", t0),
            instance("orphan", t0),
            instance("young", now),
            instance("inflight", t0),
        ];
        let claims = vec![
            Arc::new(claim("a", Some("kwok://owned"), Some(t0))),
            Arc::new(claim("b", Some("kwok://gone"), Some(t0))),
            Arc::new(claim("c", Some("kwok://gone-recently"), Some(now))),
            Arc::new(claim("inflight", None, None)),
        ];
        let d = decide(&instances, &claims, now, grace);
        assert_eq!(d.orphan_instances, vec!["kwok://orphan"]);
        assert_eq!(d.lost_claims, vec!["b"]);
    }
}
