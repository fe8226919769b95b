//! One round of the disruption loop: resume recorded commands, read drift, plan, and start
//! commands (emptiness and consolidation through the round's validation task).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::{DISRUPTED_TAINT_KEY, NODE_POOL_LABEL};
use karpenter_api::v1::nodeclaim::CONDITION_DRIFTED;
use karpenter_api::v1::{NodePool, find_condition};
use karpenter_solver::disruption::{
    Command, DisruptionOptions, DisruptionPlan, Drift, Reason, plan_owned,
};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tokio::task::JoinSet;

use super::command::{self, record_of};
use super::input::{self, Skip};
use super::{Shared, lock, scores, validation};
use crate::context::Context;
use crate::drift::hash;
use crate::error::{Error, Result};
use crate::metrics::{Decision, ReasonPool};
use crate::state::Snapshot;

/// What the loop remembers between rounds.
#[derive(Debug, Default)]
pub struct Memory {
    /// Node → the last `DisruptionBlocked` note published on it (events only on change).
    blocked: BTreeMap<String, String>,
    /// The last reason a round was skipped (logged only on change).
    skipped: Option<String>,
    /// Node → the last note of a repair it was blocked from (events only on change).
    repair_blocked: BTreeMap<String, String>,
    /// The consolidation moves the last round reported.
    moves: scores::Reported,
}

/// One round: every command of the plan is started (drift, expiration) or handed to the
/// round's validation task (emptiness, consolidation), so rounds never wait on each other's
/// validation pause; the nodes of commands being validated count as disrupting in later rounds.
pub async fn run(
    ctx: &Arc<Context>,
    shared: &Shared,
    memory: &mut Memory,
    tasks: &mut JoinSet<()>,
) -> Result<()> {
    if !ctx.state.is_synced() {
        // A watch is re-listing: acting on a partial view could disrupt what it cannot see.
        tracing::debug!("disruption waits for the cluster state to sync");
        return Ok(());
    }
    let snapshot = ctx.state.snapshot();
    resume(ctx, shared, &snapshot, tasks).await;
    let drift = Arc::new(drift_of(&snapshot));
    let in_flight = lock(shared).nodes();
    let turn = ctx.solver_turns.next().await;
    let input = match fresh_input(ctx, &drift, &in_flight).await? {
        Ok(input) => input,
        Err(Skip::Pending(n)) => {
            let why = format!("{n} pods pending");
            if memory.skipped.as_deref() != Some(why.as_str()) {
                tracing::debug!(pending = n, "disruption waits for pending pods");
                memory.skipped = Some(why);
            }
            return Ok(());
        }
    };
    memory.skipped = None;
    for w in &input.warnings {
        tracing::debug!(warning = %w, "disruption input");
    }
    let claims = input.claims;
    let opts = options(ctx);
    let problem = input.problem;
    let started = std::time::Instant::now();
    let planned = tokio::task::spawn_blocking(move || plan_owned(problem, &opts))
        .await
        .map_err(|e| Error::Invalid(format!("planner task failed: {e}")))?
        .map_err(|e| Error::Invalid(format!("disruption planner: {e}")))?;
    drop(turn);
    ctx.metrics
        .disruption_evaluation_duration
        .observe(started.elapsed().as_secs_f64());
    report(ctx, &planned, memory).await;
    super::repair::report_blocked(ctx, &planned.repair_blocked, &mut memory.repair_blocked).await;
    scores::report(ctx, &planned.moves, &claims, &mut memory.moves).await;
    for n in &planned.notes {
        tracing::info!(note = %n, "disruption keeps a node group at its minimum size");
    }
    let mut graceful = Vec::new();
    for c in planned.commands {
        // Repair is not validated either (upstream: only graceful methods are).
        if matches!(
            c.reason,
            Reason::Drifted | Reason::Expired | Reason::Unhealthy
        ) {
            start_now(ctx, shared, tasks, c, &claims);
        } else if let Some(key) = register(shared, &c, &claims) {
            graceful.push((key, c));
        }
    }
    if !graceful.is_empty() {
        let (ctx, shared) = (ctx.clone(), shared.clone());
        tasks.spawn(async move {
            if let Err(e) = validation::validate_then_start(&ctx, &shared, graceful, &drift).await {
                tracing::warn!(error = %e, "validating disruption commands failed");
            }
        });
    }
    Ok(())
}

/// The planner's knobs for this controller.
pub(super) fn options(ctx: &Context) -> DisruptionOptions {
    DisruptionOptions {
        now: Timestamp::now().as_second(),
        spot_to_spot: ctx.options.spot_to_spot_consolidation,
        ..DisruptionOptions::default()
    }
}

/// Builds the planner input from a fresh snapshot; `in_flight` names the nodes of commands
/// being validated or carried out (they count as disrupting).
pub(super) async fn fresh_input(
    ctx: &Context,
    drift: &BTreeMap<String, Drift>,
    in_flight: &BTreeSet<String>,
) -> Result<std::result::Result<input::Input, Skip>> {
    // Pending pods the provisioner has not found unplaceable: it may still place them, so
    // this round waits, without building (and solving) the whole cluster to learn as much.
    let placeable = ctx.state.count_pending(|pod| ctx.unplaceable.contains(pod));
    if placeable > 0 {
        return Ok(Err(Skip::Pending(placeable)));
    }
    let mut snapshot = ctx.state.snapshot();
    if ctx.options.capacity_buffer {
        // Buffers' virtual pods sit on the nodes the provisioner last put them on: those
        // nodes are not empty, and the planner must find the pods room before removing one.
        let placed = crate::capacitybuffer::placed_virtual_pods(&ctx.state, &snapshot);
        snapshot.pods.extend(placed);
    }
    let mut catalogs = BTreeMap::new();
    for pool in &snapshot.node_pools {
        let name = pool.metadata.name.clone().unwrap_or_default();
        match ctx.provider.instance_types(pool).await {
            Ok(its) => {
                catalogs.insert(name, its);
            }
            Err(e) => tracing::warn!(NodePool = %name, error = %e, "listing instance types failed"),
        }
    }
    crate::nodeoverlay::apply(ctx, &snapshot.node_pools, &mut catalogs);
    crate::reservations::apply(ctx, &snapshot, &mut catalogs);
    let pdbs: Vec<PodDisruptionBudget> = snapshot
        .pod_disruption_budgets
        .iter()
        .map(|b| b.as_ref().clone())
        .collect();
    let floors = ctx
        .provider
        .node_group_floors()
        .await
        .map_err(|e| Error::Invalid(format!("node group minimum sizes: {e}")))?;
    let built = input::build(
        &snapshot,
        &catalogs,
        &pdbs,
        drift,
        in_flight,
        &floors,
        Timestamp::now().as_second(),
        ctx.options.nomination_window,
    );
    Ok(built.map(|mut i| {
        if ctx.options.repairs_in_disruption() {
            input::mark_unhealthy(&mut i, &snapshot, &ctx.provider.repair_policies());
        }
        i
    }))
}

/// Registers a command as in flight (its nodes count as disrupting from now on) under a key;
/// `None` when one of its nodes is already part of another command.
fn register(shared: &Shared, cmd: &Command, claims: &BTreeMap<String, String>) -> Option<String> {
    let key = cmd.nodes.join(",");
    let mut guard = lock(shared);
    let busy = guard.nodes();
    if cmd.nodes.iter().any(|n| busy.contains(n)) {
        return None;
    }
    let claim_names = cmd
        .nodes
        .iter()
        .filter_map(|n| claims.get(n).cloned())
        .collect();
    guard
        .entries
        .insert(key.clone(), (cmd.nodes.clone(), claim_names));
    Some(key)
}

/// Starts a command that is not validated (drift, expiration) as a task.
fn start_now(
    ctx: &Arc<Context>,
    shared: &Shared,
    tasks: &mut JoinSet<()>,
    cmd: Command,
    claims: &BTreeMap<String, String>,
) {
    let Some(key) = register(shared, &cmd, claims) else {
        return;
    };
    let (ctx, shared) = (ctx.clone(), shared.clone());
    let claims = claims.clone();
    tasks.spawn(async move {
        record_decision(&ctx, &cmd);
        if let Err(e) = command::start(ctx.clone(), cmd, claims).await {
            tracing::warn!(error = %e, "disruption command failed");
        }
        lock(&shared).entries.remove(&key);
    });
}

/// Counts a command that starts (`karpenter_voluntary_disruption_decisions_total`).
pub(super) fn record_decision(ctx: &Context, cmd: &Command) {
    let decision = if cmd.replacements.is_empty() {
        "delete"
    } else {
        "replace"
    };
    ctx.metrics
        .disruption_decisions
        .get_or_create(&Decision {
            decision: decision.into(),
            reason: cmd.reason.as_str().into(),
            consolidation_type: consolidation_type(cmd).into(),
        })
        .inc();
}

/// `single` or `multi` for consolidation, empty otherwise (upstream's label values).
pub(super) fn consolidation_type(cmd: &Command) -> &'static str {
    match (cmd.reason, cmd.nodes.len()) {
        (Reason::Underutilized, 1) => "single",
        (Reason::Underutilized, _) => "multi",
        _ => "",
    }
}

/// Resumes commands recorded in the API that no task carries out, and removes disrupted
/// taints that belong to no command.
async fn resume(ctx: &Arc<Context>, shared: &Shared, snapshot: &Snapshot, tasks: &mut JoinSet<()>) {
    let (busy_claims, busy_nodes) = {
        let g = lock(shared);
        (g.claims(), g.nodes())
    };
    let mut records = BTreeMap::new();
    for c in &snapshot.node_claims {
        // A deleting candidate is done with; the others of its command still need deleting.
        if c.metadata.deletion_timestamp.is_none()
            && let Some(r) = record_of(c)
            && !r.candidates.iter().any(|x| busy_claims.contains(x))
        {
            records.insert(r.id.clone(), r);
        }
    }
    for (id, r) in records {
        let nodes: Vec<String> = r
            .candidates
            .iter()
            .filter_map(|c| node_name_of(snapshot, c))
            .collect();
        lock(shared)
            .entries
            .insert(id.clone(), (nodes, r.candidates.clone()));
        let (ctx, shared) = (ctx.clone(), shared.clone());
        tasks.spawn(async move {
            if let Err(e) = command::resume(ctx, r).await {
                tracing::warn!(error = %e, "resuming a disruption command failed");
            }
            lock(&shared).entries.remove(&id);
        });
    }
    // Stale taints: tainted by a command that never recorded itself (crash in between).
    let busy_nodes: BTreeSet<String> = busy_nodes.union(&lock(shared).nodes()).cloned().collect();
    for node in &snapshot.nodes {
        let name = node.name_any();
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == DISRUPTED_TAINT_KEY));
        if !tainted
            || node.metadata.deletion_timestamp.is_some()
            || busy_nodes.contains(&name)
            || !node.labels().contains_key(NODE_POOL_LABEL)
        {
            continue;
        }
        let pid = node.spec.as_ref().and_then(|s| s.provider_id.clone());
        let claim = pid.and_then(|p| ctx.state.node_claim_for_provider_id(&p));
        let owned = claim
            .as_ref()
            .is_some_and(|c| c.metadata.deletion_timestamp.is_some() || record_of(c).is_some());
        if owned || claim.is_none() {
            continue;
        }
        if let Some(patch) = command::untaint_patch(node) {
            tracing::info!(Node = %name, "removing a disrupted taint that belongs to no command");
            if let Err(e) = Api::<k8s_openapi::api::core::v1::Node>::all(ctx.client.clone())
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(Node = %name, error = %e, "untainting failed; next round retries");
            }
        }
    }
}

fn node_name_of(snapshot: &Snapshot, claim: &str) -> Option<String> {
    let c = snapshot
        .node_claims
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(claim))?;
    let pid = c.status.as_ref()?.provider_id.as_deref()?;
    snapshot
        .nodes
        .iter()
        .find(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(pid))
        .map(|n| n.name_any())
}

/// Drift facts from the NodeClaims' `Drifted` conditions (kept by [`crate::drift`]): claim
/// name -> reason and since when. A condition from the cluster-state checks (NodePool hash,
/// requirements) is checked again here, so a NodePool change undone a moment ago is not acted on
/// before the drift loop clears the condition.
fn drift_of(snapshot: &Snapshot) -> BTreeMap<String, Drift> {
    let now = Timestamp::now().as_second();
    let pools: HashMap<&str, &NodePool> = snapshot
        .node_pools
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p.as_ref())))
        .collect();
    snapshot
        .node_claims
        .iter()
        .filter_map(|c| {
            let cond = c
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, CONDITION_DRIFTED))
                .filter(|cond| cond.is_true())?;
            let reason = cond.reason.clone().unwrap_or_default();
            if reason == hash::NODE_POOL_DRIFTED || reason == hash::REQUIREMENTS_DRIFTED {
                let pool = c
                    .labels()
                    .get(NODE_POOL_LABEL)
                    .and_then(|p| pools.get(p.as_str()))?;
                hash::drifted(c, pool, c.labels())?;
            }
            let since = cond
                .last_transition_time
                .as_ref()
                .map_or(now, |t| t.0.as_second());
            Some((c.name_any(), Drift { reason, since }))
        })
        .collect()
}

/// Budgets as a gauge, and a `DisruptionBlocked` event on a node whenever why it is blocked
/// changes.
async fn report(ctx: &Context, plan: &DisruptionPlan, memory: &mut Memory) {
    for a in &plan.allowed {
        ctx.metrics
            .allowed_disruptions
            .get_or_create(&ReasonPool {
                reason: a.reason.as_str().into(),
                nodepool: a.node_pool.clone(),
            })
            .set(i64::from(a.nodes.min(i32::MAX as u32)));
    }
    let mut seen = BTreeMap::new();
    for b in &plan.blocked {
        seen.insert(b.node.clone(), b.reason.clone());
        if memory.blocked.get(&b.node) == Some(&b.reason) {
            continue;
        }
        if let Some(n) = ctx.state.nodes.get(&ObjectRef::new(&b.node)) {
            ctx.event(
                &n.object_ref(&()),
                EventType::Normal,
                "DisruptionBlocked",
                "Disrupt",
                b.reason.clone(),
            )
            .await;
        }
    }
    memory.blocked = seen;
}
