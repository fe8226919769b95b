//! Carrying out one disruption command, with its state in the API so a restart resumes it.
//!
//! 1. Taint the candidate Nodes `karpenter.sh/disrupted:NoSchedule` (nothing new lands there).
//! 2. Record the command on every candidate NodeClaim (annotation [`COMMAND_ANNOTATION`]: a
//!    [`Record`] as JSON), first without replacements.
//! 3. Create the replacement NodeClaims, then record their names.
//! 4. Wait until every replacement is `Initialized` (deadline: `started` + the replacement
//!    timeout).
//! 5. Delete the candidate NodeClaims; the termination flow drains them (evictions honour
//!    PDBs) and removes their Nodes.
//!
//! On a timeout, or a replacement that disappeared (e.g. no capacity), the command is rolled
//! back: replacements that hold no pods are deleted, the taint and the record removed. A
//! command found on restart ([`resume`]) continues at step 4 when all its replacements were
//! recorded, and is rolled back otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::{CAPACITY_TYPE_LABEL, DISRUPTED_TAINT_KEY, NODE_POOL_LABEL};
use karpenter_api::v1::common::parse_duration;
use karpenter_api::v1::nodeclaim::CONDITION_INITIALIZED;
use karpenter_api::v1::{ConsolidationPolicy, NodeClaim, find_condition};
use karpenter_solver::disruption::{Command, Reason};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::context::Context;
use crate::error::{Error, Result, is_status};
use crate::metrics::{PodsDisrupted, ReasonPool};
use crate::node::termination::logic::disrupted_taint_patch;
use crate::pods::{is_daemon_set_pod, is_terminal};
use crate::provisioning::claims;

/// NodeClaim annotation holding the disruption command it is part of (a [`Record`]).
pub const COMMAND_ANNOTATION: &str = "karpenter.sh/disruption-command";

/// A command as recorded on its candidate NodeClaims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Unique id (first candidate NodeClaim and start time).
    pub id: String,
    /// `empty`, `underutilized`, `drifted`, `expired` or `unhealthy`.
    pub reason: String,
    /// Candidate NodeClaim names.
    pub candidates: Vec<String>,
    /// How many replacements the command launches.
    pub expected_replacements: usize,
    /// Names of the replacement NodeClaims created so far.
    pub replacements: Vec<String>,
    /// When the command started (RFC 3339).
    pub started: String,
}

/// The command recorded on a NodeClaim, if any (an unreadable record counts as none).
pub fn record_of(claim: &NodeClaim) -> Option<Record> {
    let raw = claim
        .metadata
        .annotations
        .as_ref()?
        .get(COMMAND_ANNOTATION)?;
    serde_json::from_str(raw).ok()
}

/// The merge patch that removes the disrupted taint, or `None` when the Node lacks it.
pub fn untaint_patch(node: &Node) -> Option<serde_json::Value> {
    let taints = node.spec.as_ref()?.taints.clone().unwrap_or_default();
    if !taints.iter().any(|t| t.key == DISRUPTED_TAINT_KEY) {
        return None;
    }
    let kept: Vec<_> = taints
        .into_iter()
        .filter(|t| t.key != DISRUPTED_TAINT_KEY)
        .collect();
    Some(json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"taints": kept},
    }))
}

fn claims_api(ctx: &Context) -> Api<NodeClaim> {
    Api::all(ctx.client.clone())
}

fn node_of(ctx: &Context, claim: &str) -> Option<Arc<Node>> {
    let c = ctx.state.node_claim(claim)?;
    let pid = c.status.as_ref()?.provider_id.clone()?;
    ctx.state.nodes_for_provider_id(&pid).into_iter().next()
}

async fn annotate(ctx: &Context, claim: &str, record: Option<&Record>) -> Result<()> {
    let value = match record {
        Some(r) => serde_json::Value::String(serde_json::to_string(r)?),
        None => serde_json::Value::Null,
    };
    let patch = json!({"metadata": {"annotations": {COMMAND_ANNOTATION: value}}});
    match claims_api(ctx)
        .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Taints a Node, retrying once on a conflict (kwok and the kubelet update Nodes often).
async fn set_taint(ctx: &Context, node: &str, present: bool) -> Result<()> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    for attempt in 0..3 {
        let n = match api.get(node).await {
            Ok(n) => n,
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let patch = if present {
            disrupted_taint_patch(&n)
        } else {
            untaint_patch(&n)
        };
        let Some(patch) = patch else { return Ok(()) };
        match api
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 409) && attempt < 2 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Starts a planned command: steps 1-3, then [`finish`]. `claims` maps node → NodeClaim.
pub async fn start(
    ctx: Arc<Context>,
    cmd: Command,
    claims: BTreeMap<String, String>,
) -> Result<()> {
    let candidates: Vec<String> = cmd
        .nodes
        .iter()
        .filter_map(|n| claims.get(n).cloned())
        .collect();
    if candidates.len() != cmd.nodes.len() {
        return Err(Error::Invalid(format!(
            "a node of {:?} has no NodeClaim",
            cmd.nodes
        )));
    }
    let now = Timestamp::now();
    let mut record = Record {
        id: format!("{}-{}", candidates[0], now.as_second()),
        reason: cmd.reason.as_str().to_string(),
        candidates,
        expected_replacements: cmd.replacements.len(),
        replacements: Vec::new(),
        started: now.to_string(),
    };
    tracing::info!(reason = %record.reason, nodes = ?cmd.nodes, replacements = cmd.replacements.len(),
        savings_per_hour = cmd.savings_per_hour, "disrupting");
    for node in &cmd.nodes {
        set_taint(&ctx, node, true).await?;
    }
    for c in &record.candidates {
        annotate(&ctx, c, Some(&record)).await?;
    }
    let snapshot_pools = ctx.state.snapshot().node_pools;
    for planned in &cmd.replacements {
        let Some(pool) = snapshot_pools
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(planned.node_pool.as_str()))
        else {
            rollback(&ctx, &record, "its NodePool is gone").await;
            return Ok(());
        };
        let claim = claims::launched_node_claim(
            pool,
            planned,
            &ctx.launch_prices,
            ctx.provider.reservations().map(|r| r.key),
        );
        match claims_api(&ctx)
            .create(&PostParams::default(), &claim)
            .await
        {
            Ok(created) => {
                record.replacements.push(created.name_any());
                // Capacity in flight at once, before the watch delivers it (no double launch).
                ctx.state.node_claim_created(created);
                ctx.metrics
                    .nodeclaims_created
                    .get_or_create(&ReasonPool {
                        reason: record.reason.clone(),
                        nodepool: planned.node_pool.clone(),
                    })
                    .inc();
            }
            Err(e) => {
                rollback(
                    &ctx,
                    &record,
                    &format!("creating a replacement failed: {e}"),
                )
                .await;
                return Ok(());
            }
        }
    }
    for c in &record.candidates {
        annotate(&ctx, c, Some(&record)).await?;
        if !record.replacements.is_empty() {
            event(
                &ctx,
                c,
                EventType::Normal,
                "DisruptionLaunching",
                format!(
                    "Launching NodeClaims {:?} ({})",
                    record.replacements, record.reason
                ),
            )
            .await;
        }
    }
    finish(ctx, record).await
}

/// Resumes a command found recorded in the API (after a restart or a lost leadership).
pub async fn resume(ctx: Arc<Context>, record: Record) -> Result<()> {
    if record.replacements.len() < record.expected_replacements {
        rollback(&ctx, &record, "the controller restarted while launching").await;
        return Ok(());
    }
    tracing::info!(id = %record.id, reason = %record.reason, "resuming a disruption command");
    for c in &record.candidates {
        if let Some(n) = node_of(&ctx, c) {
            set_taint(&ctx, &n.name_any(), true).await?;
        }
    }
    finish(ctx, record).await
}

fn initialized(c: &NodeClaim) -> bool {
    c.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, CONDITION_INITIALIZED))
        .is_some_and(|c| c.is_true())
}

/// Steps 4-5.
async fn finish(ctx: Arc<Context>, record: Record) -> Result<()> {
    let started: Timestamp = record.started.parse().unwrap_or_else(|_| Timestamp::now());
    let timeout = ctx.options.disruption_replacement_timeout;
    let deadline = started
        .checked_add(k8s_openapi::jiff::SignedDuration::try_from(timeout).unwrap_or_default())
        .unwrap_or(started);
    // Read from the cluster state, not the API: replacements this replica created are written
    // through into it at once, so one missing from it is gone (deleted, or never launched).
    loop {
        let mut ready = 0;
        for name in &record.replacements {
            match ctx.state.node_claim(name) {
                None => {
                    rollback(&ctx, &record, &format!("replacement {name} is gone")).await;
                    return Ok(());
                }
                Some(c) if c.metadata.deletion_timestamp.is_some() => {
                    rollback(
                        &ctx,
                        &record,
                        &format!("replacement {name} is being deleted"),
                    )
                    .await;
                    return Ok(());
                }
                Some(c) if initialized(&c) => ready += 1,
                Some(_) => {}
            }
        }
        if ready == record.replacements.len() {
            break;
        }
        if Timestamp::now() > deadline {
            rollback(&ctx, &record, "replacements did not initialize in time").await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for c in &record.candidates {
        event(
            &ctx,
            c,
            EventType::Normal,
            "DisruptionTerminating",
            format!("Disrupting NodeClaim: {}", record.reason),
        )
        .await;
        if record.reason == Reason::Unhealthy.as_str() {
            super::repair::before_delete(&ctx, c).await?;
        }
        match claims_api(&ctx)
            .delete(c, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                let claim = ctx.state.node_claim(c);
                let pool = claim
                    .as_ref()
                    .and_then(|x| x.labels().get(NODE_POOL_LABEL).cloned())
                    .unwrap_or_default();
                ctx.metrics
                    .nodeclaims_disrupted
                    .get_or_create(&ReasonPool {
                        reason: record.reason.clone(),
                        nodepool: pool,
                    })
                    .inc();
                if let Some(claim) = claim {
                    count_pods(&ctx, &record.reason, &claim);
                }
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(id = %record.id, reason = %record.reason, candidates = ?record.candidates, "disruption command done");
    Ok(())
}

/// Undoes a command: replacements without pods are deleted, the taint and record removed.
pub async fn rollback(ctx: &Context, record: &Record, why: &str) {
    tracing::warn!(id = %record.id, reason = %record.reason, why, "rolling back a disruption command");
    ctx.metrics.disruption_queue_failures.inc();
    for name in &record.replacements {
        let used = node_of(ctx, name).is_some_and(|n| {
            let node = n.name_any();
            ctx.state
                .pods
                .find(|p| {
                    p.bound_node() == Some(node.as_str())
                        && !is_terminal(p)
                        && !is_daemon_set_pod(p)
                })
                .is_some()
        });
        if !used
            && let Err(e) = claims_api(ctx)
                .delete(name, &DeleteParams::background())
                .await
            && !is_status(&e, 404)
        {
            tracing::warn!(NodeClaim = %name, error = %e, "deleting an unused replacement failed");
        }
    }
    for c in &record.candidates {
        if let Some(n) = node_of(ctx, c)
            && let Err(e) = set_taint(ctx, &n.name_any(), false).await
        {
            tracing::warn!(Node = %n.name_any(), error = %e, "removing the disrupted taint failed");
        }
        if let Err(e) = annotate(ctx, c, None).await {
            tracing::warn!(NodeClaim = %c, error = %e, "removing the command record failed");
        }
        event(
            ctx,
            c,
            EventType::Warning,
            "DisruptionBlocked",
            format!("Disruption ({}) abandoned: {why}", record.reason),
        )
        .await;
    }
}

/// `karpenter_pods_disruption_initiated_total`: the pods that must move off the NodeClaim's
/// node (not DaemonSet or mirror pods), as the command removes it.
fn count_pods(ctx: &Context, reason: &str, claim: &NodeClaim) {
    let node = claim.status.as_ref().and_then(|s| s.node_name.as_deref());
    let moving = node.map_or(0, |n| {
        ctx.state
            .pods_on_node(n)
            .iter()
            .filter(|p| crate::pods::reschedulable(&p.metadata))
            .count()
    });
    let label = |key: &str| claim.labels().get(key).cloned().unwrap_or_default();
    let pool = label(NODE_POOL_LABEL);
    let policy = ctx
        .state
        .node_pools
        .get(&kube::runtime::reflector::ObjectRef::new(&pool))
        .map(|np| np.spec.disruption.consolidation_policy);
    ctx.metrics
        .pods_disruption_initiated
        .get_or_create(&PodsDisrupted {
            reason: reason.to_owned(),
            nodepool: pool,
            capacity_type: label(CAPACITY_TYPE_LABEL),
            consolidation_policy: consolidation_policy_label(reason, policy),
            // Repair stamps a deadline of now: forceful whatever the NodeClaim's own.
            termination_mode: if reason == Reason::Unhealthy.as_str() {
                "forceful"
            } else {
                termination_mode(claim)
            }
            .to_owned(),
        })
        .inc_by(moving as u64);
}

/// Upstream's `consolidation_policy` label: the NodePool's policy in snake case for the
/// consolidation reasons, empty for drift and expiry (and for a NodePool that is gone).
fn consolidation_policy_label(reason: &str, policy: Option<ConsolidationPolicy>) -> String {
    let consolidation = matches!(reason, "empty" | "underutilized");
    let label = match policy {
        Some(ConsolidationPolicy::WhenEmpty) if consolidation => "when_empty",
        Some(ConsolidationPolicy::WhenEmptyOrUnderutilized) if consolidation => {
            "when_empty_or_underutilized"
        }
        Some(ConsolidationPolicy::Balanced) if consolidation => "balanced",
        _ => "",
    };
    label.to_owned()
}

/// Upstream's `termination_mode` label: `graceful` without a `terminationGracePeriod`,
/// `forceful` with a zero one, `eventual` otherwise.
fn termination_mode(claim: &NodeClaim) -> &'static str {
    match claim.spec.termination_grace_period.as_deref() {
        None => "graceful",
        Some(tgp) if parse_duration(tgp).is_some_and(|d| d.is_zero()) => "forceful",
        Some(_) => "eventual",
    }
}

async fn event(ctx: &Context, claim: &str, type_: EventType, reason: &str, note: String) {
    if let Some(c) = ctx.state.node_claim(claim) {
        ctx.event(&c.object_ref(&()), type_, reason, "Disrupt", note)
            .await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn termination_mode_follows_the_grace_period() {
        let with = |tgp: Option<&str>| {
            let mut c = NodeClaim::for_instance("c", None);
            c.spec.termination_grace_period = tgp.map(str::to_owned);
            termination_mode(&c)
        };
        assert_eq!(with(None), "graceful");
        assert_eq!(with(Some("0s")), "forceful");
        assert_eq!(with(Some("30s")), "eventual");
        assert_eq!(with(Some("1h")), "eventual");
    }

    #[test]
    fn consolidation_policy_is_labelled_for_consolidation_reasons_only() {
        use ConsolidationPolicy::*;
        let cases = [
            ("underutilized", Some(Balanced), "balanced"),
            ("empty", Some(WhenEmpty), "when_empty"),
            (
                "underutilized",
                Some(WhenEmptyOrUnderutilized),
                "when_empty_or_underutilized",
            ),
            ("drifted", Some(WhenEmptyOrUnderutilized), ""),
            ("expired", Some(Balanced), ""),
            ("empty", None, ""),
        ];
        for (reason, policy, want) in cases {
            assert_eq!(
                consolidation_policy_label(reason, policy),
                want,
                "{reason} {policy:?}"
            );
        }
    }

    #[test]
    fn record_round_trips_through_the_annotation() {
        let r = Record {
            id: "c1-5".into(),
            reason: "underutilized".into(),
            candidates: vec!["c1".into(), "c2".into()],
            expected_replacements: 1,
            replacements: vec!["r1".into()],
            started: Timestamp::UNIX_EPOCH.to_string(),
        };
        let mut claim = NodeClaim::for_instance("c1", None);
        assert_eq!(record_of(&claim), None);
        claim.metadata.annotations = Some(BTreeMap::from([(
            COMMAND_ANNOTATION.to_string(),
            serde_json::to_string(&r).unwrap(),
        )]));
        assert_eq!(record_of(&claim), Some(r));
        claim
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(COMMAND_ANNOTATION.into(), "{not json".into());
        assert_eq!(record_of(&claim), None, "unreadable records are ignored");
    }

    #[test]
    fn untaint_removes_only_the_disrupted_taint() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n", "resourceVersion": "7"},
            "spec": {"taints": [
                {"key": DISRUPTED_TAINT_KEY, "effect": "NoSchedule"},
                {"key": "other", "effect": "NoExecute"}]}
        }))
        .unwrap();
        let p = untaint_patch(&node).unwrap();
        assert_eq!(p["spec"]["taints"].as_array().unwrap().len(), 1);
        assert_eq!(p["spec"]["taints"][0]["key"], "other");
        assert_eq!(p["metadata"]["resourceVersion"], "7");
        let clean: Node = serde_json::from_value(json!({"spec": {"taints": []}})).unwrap();
        assert_eq!(untaint_patch(&clean), None);
    }
}
