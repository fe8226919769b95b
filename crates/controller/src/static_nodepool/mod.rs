//! Static NodePools (`spec.replicas`, feature gate `StaticCapacity`): one loop keeps each at
//! exactly `replicas` NodeClaims, replaces drifted and expired ones new-first within the pool's
//! `Drifted` budget, and writes `status.nodes` (the scale subresource's replica count).
//!
//! The decision is the solver's pure [`karpenter_solver::static_pool::decide`]; this module
//! gathers its facts from the shared cluster state (no List per round) and carries it out:
//! new NodeClaims from the pool's template alone ([`static_node_claim`]) through the
//! provisioner's NodeClaim builder, deletions through the usual NodeClaim deletion (the
//! termination loop drains the node). Upstream's three controllers (static provisioning,
//! static deprovisioning, `StaticDrift`) act on the same counts; one decision here keeps them
//! from racing each other.
//!
//! The loop looks at the pools every [`crate::Options::static_poll_period`] and whenever a
//! NodeClaim changes. NodeClaims it deleted count as deleting until the watch shows it (its
//! reads lag its writes), so a second look does not delete another one; NodeClaims it created
//! count at once (the cluster state's in-flight claims).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::NODE_POOL_LABEL;
use karpenter_api::solver_input::disruption::{self as shared, secs};
use karpenter_api::solver_input::{self as input, static_node_claim};
use karpenter_api::v1::nodeclaim::{CONDITION_DRIFTED, CONDITION_INITIALIZED};
use karpenter_api::v1::{NodeClaim, NodePool, find_condition, parse_duration};
use karpenter_solver::DaemonSetView;
use karpenter_solver::disruption::eviction_cost;
use karpenter_solver::static_pool::{StaticClaim, StaticPool, decide, drift_budget};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::error::is_status;
use crate::metrics::ReasonPool;
use crate::nodeoverlay;
use crate::pods::{is_daemon_set_pod, is_terminal, pod_key};
use crate::provisioning::{MAX_INSTANCE_TYPES, claims};

/// How long a NodeClaim this loop deleted counts as deleting without the watch saying so.
const DELETED_TTL: Duration = Duration::from_secs(60);

/// Runs the loop (while leading) until its task is aborted.
pub async fn run(ctx: Arc<Context>) {
    if ctx.state.wait_until_ready().await.is_err() {
        return;
    }
    tracing::info!("static NodePools loop started");
    let mut changes = Box::pin(ctx.state.node_claim_changes());
    let mut tick = tokio::time::interval(ctx.options.static_poll_period);
    let mut deleted: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            change = changes.next() => {
                if change.is_none() {
                    return;
                }
                // A burst of changes (a re-list) is one look.
                while let Some(Some(_)) = futures::FutureExt::now_or_never(changes.next()) {}
            }
        }
        if !ctx.state.is_synced() {
            continue;
        }
        reconcile(&ctx, &mut deleted).await;
    }
}

/// One look at every static NodePool.
async fn reconcile(ctx: &Context, deleted: &mut HashMap<String, Instant>) {
    let pools: Vec<Arc<NodePool>> = ctx
        .state
        .node_pools
        .state()
        .into_iter()
        .filter(|p| p.spec.is_static() && p.metadata.deletion_timestamp.is_none())
        .collect();
    if pools.is_empty() {
        deleted.clear();
        return;
    }
    let claims = ctx.state.all_node_claims();
    // The watch has caught up with a deletion once it shows the claim deleting or gone.
    let now = Instant::now();
    let live: HashSet<&str> = claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    deleted
        .retain(|name, at| live.contains(name.as_str()) && now.duration_since(*at) < DELETED_TTL);
    let mut by_pool: BTreeMap<&str, Vec<&NodeClaim>> = BTreeMap::new();
    for c in &claims {
        if let Some(pool) = c.labels().get(NODE_POOL_LABEL) {
            by_pool.entry(pool.as_str()).or_default().push(c);
        }
    }
    let unix_now = Timestamp::now().as_second();
    for pool in &pools {
        let name = pool.name_any();
        let mine = by_pool.get(name.as_str()).map_or(&[][..], Vec::as_slice);
        let facts: Vec<StaticClaim> = mine
            .iter()
            .map(|c| static_claim(ctx, c, deleted, unix_now))
            .collect();
        let active = facts.iter().filter(|c| !c.deleting).count();
        let policy = shared::pool_policy(pool);
        let settings = StaticPool {
            replicas: pool.spec.replicas.unwrap_or(0).max(0).unsigned_abs(),
            node_limit: node_limit(pool),
            drift_budget: drift_budget(
                &policy.budgets,
                u32::try_from(active).unwrap_or(u32::MAX),
                unix_now,
            ),
        };
        let decision = decide(&settings, &facts);
        if decision.create > 0 || !decision.delete.is_empty() {
            tracing::info!(
                NodePool = %name,
                current = active,
                desired = settings.replicas,
                create = decision.create,
                delete = ?decision.delete,
                "keeping a static NodePool at its replicas"
            );
        }
        if decision.create > 0 {
            create(ctx, pool, decision.create).await;
        }
        for claim in decision.delete {
            if delete(ctx, &claim).await {
                deleted.insert(claim, Instant::now());
            }
        }
        write_status(ctx, pool, active).await;
    }
}

/// `spec.limits.nodes`, when set and readable.
fn node_limit(pool: &NodePool) -> Option<u64> {
    let q = pool.spec.limits.get(input::NODES)?;
    let n = karpenter_solver::quantity::parse_for_resource(input::NODES, &q.0).ok()?;
    Some(n.max(0).unsigned_abs())
}

/// The decision's facts about one NodeClaim.
fn static_claim(
    ctx: &Context,
    claim: &NodeClaim,
    deleted: &HashMap<String, Instant>,
    now: i64,
) -> StaticClaim {
    let name = claim.name_any();
    let status = claim.status.as_ref();
    let condition = |type_: &str| {
        status
            .and_then(|s| find_condition(&s.conditions, type_))
            .is_some_and(|c| c.is_true())
    };
    let created = secs(claim.metadata.creation_timestamp.as_ref()).unwrap_or(now);
    let expired = parse_duration(&claim.spec.expire_after).is_some_and(|d| {
        now.saturating_sub(created) >= i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
    });
    let mut facts = StaticClaim {
        deleting: claim.metadata.deletion_timestamp.is_some() || deleted.contains_key(&name),
        launched: status.and_then(|s| s.provider_id.as_ref()).is_some(),
        initialized: condition(CONDITION_INITIALIZED),
        created,
        ..StaticClaim::default()
    };
    let node = status.and_then(|s| s.node_name.as_deref());
    if let Some(node) = node {
        let mut warnings = Vec::new();
        if let Some(n) = ctx.state.node(node) {
            facts.do_not_disrupt =
                shared::do_not_disrupt(&n.metadata, "node", &mut warnings).active(created, now);
        }
        for pod in ctx.state.pods_on_node(node) {
            if is_terminal(&pod) || is_daemon_set_pod(&pod) {
                continue;
            }
            let state = shared::pod_state(pod.as_ref(), pod_key(&pod), now, &mut warnings);
            facts.pods += 1;
            facts.eviction_cost += eviction_cost(Some(&state));
            facts.do_not_disrupt |= state.do_not_disrupt.active(state.created, now);
        }
    }
    // Drift waits for do-not-disrupt unless a terminationGracePeriod bounds the drain, as for
    // any eventual disruption; expiry does not wait.
    let drift_blocked = facts.do_not_disrupt && claim.spec.termination_grace_period.is_none();
    facts.stale = expired || (condition(CONDITION_DRIFTED) && !drift_blocked);
    facts.name = name;
    facts
}

/// Creates `count` NodeClaims from the pool's template.
async fn create(ctx: &Context, pool: &NodePool, count: u64) {
    let name = pool.name_any();
    let planned = match plan(ctx, pool).await {
        Ok(p) => p,
        Err(reason) => {
            tracing::warn!(NodePool = %name, reason = %reason, "cannot launch for a static NodePool");
            return;
        }
    };
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    for _ in 0..count {
        let claim = claims::launched_node_claim(pool, &planned, &ctx.launch_prices, None);
        match api.create(&PostParams::default(), &claim).await {
            Ok(created) => {
                tracing::info!(
                    NodeClaim = %created.name_any(),
                    NodePool = %name,
                    instance_type = %planned.instance_type,
                    "created nodeclaim for a static NodePool"
                );
                ctx.state.node_claim_created(created);
                ctx.metrics
                    .nodeclaims_created
                    .get_or_create(&ReasonPool {
                        reason: "provisioning".into(),
                        nodepool: name.clone(),
                    })
                    .inc();
            }
            Err(e) => {
                tracing::warn!(NodePool = %name, error = %e, "creating a nodeclaim failed");
                return;
            }
        }
    }
}

/// The NodeClaim the pool launches: its catalog (NodeOverlays applied) and the DaemonSets
/// its nodes would run.
async fn plan(
    ctx: &Context,
    pool: &NodePool,
) -> Result<karpenter_solver::PlannedNodeClaim, String> {
    let name = pool.name_any();
    let its = ctx
        .provider
        .instance_types(pool)
        .await
        .map_err(|e| format!("listing instance types failed: {e}"))?;
    let mut catalogs = BTreeMap::from([(name.clone(), its)]);
    nodeoverlay::apply(ctx, &[Arc::new(pool.clone())], &mut catalogs);
    let mut its = catalogs.remove(&name).unwrap_or_default();
    // One plan serves every replica created in a round, so a reservation's capacity would not
    // be counted per claim: static NodePools launch without reservations.
    crate::reservations::drop_reserved(&mut its);
    static_node_claim(pool, its, daemon_sets(ctx), MAX_INSTANCE_TYPES)
}

/// Every DaemonSet, converted (those that cannot be are left out, as in provisioning).
fn daemon_sets(ctx: &Context) -> Vec<DaemonSetView> {
    let all = ctx.state.namespaces.state();
    let namespaces: input::NamespaceIndex = all.iter().map(|n| n.as_ref()).collect();
    let pod_ctx = input::PodContext {
        namespaces: &namespaces,
    };
    ctx.state
        .daemon_sets
        .state()
        .iter()
        .filter_map(|ds| input::daemon_set_view(ds, &pod_ctx, &mut Vec::new()).ok())
        .collect()
}

/// Deletes a NodeClaim (the termination loop drains its node); whether it is gone or going.
async fn delete(ctx: &Context, claim: &str) -> bool {
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    match api.delete(claim, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(NodeClaim = %claim, "deleted nodeclaim of a static NodePool");
            true
        }
        Err(e) if is_status(&e, 404) => true,
        Err(e) => {
            tracing::warn!(NodeClaim = %claim, error = %e, "deleting a nodeclaim failed");
            false
        }
    }
}

/// Writes `status.nodes` (NodeClaims not being deleted) when it changed.
async fn write_status(ctx: &Context, pool: &NodePool, active: usize) {
    let nodes = i64::try_from(active).unwrap_or(i64::MAX);
    if pool.status.as_ref().and_then(|s| s.nodes) == Some(nodes) {
        return;
    }
    let api: Api<NodePool> = Api::all(ctx.client.clone());
    let patch = json!({"status": {"nodes": nodes}});
    if let Err(e) = api
        .patch_status(
            &pool.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(NodePool = %pool.name_any(), error = %e, "writing status.nodes failed");
    }
}
