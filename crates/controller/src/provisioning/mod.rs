//! The provisioner: a singleton loop (not a per-object reconciler). Triggers from the pod
//! watch are batched ([`batcher`]); each batch snapshots the cluster state, builds the solver
//! input ([`problem`]), solves, creates the planned NodeClaims ([`claims`]) and tells every
//! pod that cannot be served why, once per change of reason.

pub mod batcher;
pub mod claims;
pub mod problem;
pub mod verdicts;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use karpenter_api::v1::{NodeClaim, NodePool};
use karpenter_solver::{InstanceType, Options as SolveOptions, PlannedNodeClaim, solve};
use kube::api::PostParams;
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::{PodState, ReasonPool};
use crate::state::{Snapshot, Trigger};
use crate::{capacitybuffer, nodeoverlay, pods};
use batcher::Batcher;
use problem::Nomination;

/// Event reason on pods no NodePool can serve.
pub const FAILED_SCHEDULING: &str = "FailedScheduling";
/// How often pending pods are looked at again without a new trigger (upstream requeues
/// provisionable pods every 10 s): a nomination may have lapsed, or capacity freed up.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(10);
/// Cap on instance-type options written into a NodeClaim.
pub const MAX_INSTANCE_TYPES: usize = 60;

/// How the provisioner runs the solver (public so tests can predict its plans).
pub fn solve_options() -> SolveOptions {
    SolveOptions {
        optimise: true,
        max_instance_type_options: MAX_INSTANCE_TYPES,
        // The bound is for reports; a controller round does not need it.
        lower_bound: false,
        ignore_preferences: false,
    }
}

/// The provisioner's memory between rounds: nominations and what each pod was last told.
/// Losing it on restart is harmless: in-flight NodeClaims still count as capacity, and an
/// event may be repeated once.
pub struct Provisioner {
    ctx: Arc<Context>,
    nominations: HashMap<String, Nomination>,
    reported: HashMap<String, String>,
}

/// How many NodeClaims one round creates at once: a burst of hundreds is not created one by
/// one, nor all at once against the API server's rate limits.
pub const CREATE_CONCURRENCY: usize = 12;

/// Creates one NodeClaim (a named future: the create loop keeps several in flight).
async fn create_one(
    api: Api<NodeClaim>,
    planned: &PlannedNodeClaim,
    claim: NodeClaim,
) -> (&PlannedNodeClaim, kube::Result<NodeClaim>) {
    (planned, api.create(&PostParams::default(), &claim).await)
}

/// Runs the provisioner until the trigger channel closes.
pub async fn run(
    ctx: Arc<Context>,
    rx: UnboundedReceiver<Trigger>,
    resync: UnboundedSender<Trigger>,
) {
    let mut batcher = Batcher::new(rx, ctx.options.batch_idle, ctx.options.batch_max);
    tracing::debug!("provisioner waiting for the cluster state");
    if ctx.state.wait_until_ready().await.is_err() {
        return;
    }
    tracing::info!("provisioner started");
    let resync_ctx = ctx.clone();
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESYNC_INTERVAL);
        loop {
            tick.tick().await;
            // Buffers' virtual pods are always pending: while there are buffers, each resync
            // places them again (a real pod may have taken their room).
            let buffers =
                resync_ctx.options.capacity_buffer && !resync_ctx.state.capacity_buffers.is_empty();
            if (resync_ctx.state.has_pending_pods() || buffers)
                && resync.send(Trigger::Resync).is_err()
            {
                break;
            }
        }
    });
    let mut p = Provisioner {
        ctx,
        nominations: HashMap::new(),
        reported: HashMap::new(),
    };
    while let Some(n) = batcher.next_batch().await {
        // Followers batch too (their triggers must not pile up) but leave acting to the
        // leader; becoming leader sends a resync.
        if !p.ctx.is_leader() {
            tracing::debug!(triggers = n, "not leading; batch skipped");
            continue;
        }
        // A state in the middle of a re-list may lack NodeClaims that exist: solving on it
        // would launch again for pods that already have capacity coming.
        if !p.ctx.state.is_synced() {
            tracing::info!("cluster state re-listing; provisioning waits for it");
            if p.ctx.state.wait_until_synced().await.is_err() {
                break;
            }
        }
        tracing::debug!(triggers = n, "provisioning batch");
        if let Err(e) = p.provision().await {
            tracing::warn!(error = %e, "provisioning round failed");
        }
    }
    ticker.abort();
}

impl Provisioner {
    /// One round: snapshot → solve → create NodeClaims → events.
    pub async fn provision(&mut self) -> Result<()> {
        let ctx = self.ctx.clone();
        let turn = ctx.solver_turns.next().await;
        let mut snapshot = ctx.state.snapshot();
        if ctx.options.capacity_buffer {
            snapshot
                .pods
                .extend(capacitybuffer::pending_virtual_pods(&ctx.state));
        }
        self.record_pod_states();
        let catalogs = self.catalogs(&snapshot).await;
        self.forget_done(&snapshot);

        let now = Instant::now();
        let mut round = problem::build(
            &snapshot,
            &catalogs,
            &self.nominations,
            now,
            ctx.options.nomination_window,
        );
        for w in &round.warnings {
            tracing::debug!(warning = %w, "not modelled by the solver");
        }
        tracing::debug!(
            pending = round.problem.pods.len(),
            node_pools = round.problem.node_pools.len(),
            existing = round.problem.existing_nodes.len(),
            "provisioning round"
        );
        let mut unplaceable: HashSet<String> = round
            .invalid
            .iter()
            .filter(|(p, _)| !capacitybuffer::is_virtual(p))
            .map(|(p, _)| pods::pod_key(p))
            .collect();
        if round.problem.pods.is_empty() {
            drop(turn);
            ctx.state.buffer_placements.set(HashMap::new());
            ctx.state
                .record_buffer_rounds(capacitybuffer::rounds::summarise(
                    &round.pending,
                    &round.invalid,
                    None,
                ));
            ctx.unplaceable.record(unplaceable);
            ctx.metrics.unschedulable_pods.set(0);
            self.report_invalid(&round).await;
            return Ok(());
        }
        // Moved, not copied: the round's input holds every bound pod of the cluster.
        let problem = std::mem::take(&mut round.problem);
        let pods = problem.pods.len();
        let started = Instant::now();
        let plan = tokio::task::spawn_blocking(move || solve(&problem, &solve_options()))
            .await
            .map_err(|e| Error::Invalid(format!("solver task failed: {e}")))??;
        drop(turn);
        self.report_invalid(&round).await;
        ctx.metrics
            .scheduling_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            pods,
            nodeclaims = plan.node_claims.len(),
            unschedulable = plan.unschedulable.len(),
            "computed a provisioning plan"
        );

        let mut placements = HashMap::new();
        for (planned, name) in self.create(&snapshot, &plan.node_claims).await {
            self.nominate(&round, &planned.pods, &name, now, &mut placements);
        }
        for placement in &plan.existing_nodes {
            let target = round
                .in_flight
                .get(&placement.node)
                .cloned()
                .unwrap_or_else(|| placement.node.clone());
            self.nominate(&round, &placement.pods, &target, now, &mut placements);
        }
        ctx.state.buffer_placements.set(placements);
        ctx.state
            .record_buffer_rounds(capacitybuffer::rounds::summarise(
                &round.pending,
                &round.invalid,
                Some(&plan),
            ));
        let real = |key: &String| {
            round
                .pending
                .get(key)
                .is_none_or(|p| !capacitybuffer::is_virtual(p))
        };
        let unschedulable: Vec<_> = plan.unschedulable.iter().filter(|u| real(&u.pod)).collect();
        unplaceable.extend(unschedulable.iter().map(|u| u.pod.clone()));
        ctx.unplaceable.record(unplaceable);
        ctx.metrics
            .unschedulable_pods
            .set(i64::try_from(unschedulable.len()).unwrap_or(i64::MAX));
        let virtual_unplaced = plan.unschedulable.len() - unschedulable.len();
        if virtual_unplaced > 0 {
            tracing::info!(
                pods = virtual_unplaced,
                "capacitybuffer virtual pods fit on no node and no NodePool"
            );
        }
        for u in unschedulable {
            if let Some(pod) = round.pending.get(&u.pod) {
                self.report(pod, format!("Failed to schedule pod, {}", u.reason))
                    .await;
            }
        }
        Ok(())
    }

    /// Each NodePool's instance types (pools whose provider lookup fails sit the round out),
    /// NodeOverlays applied.
    async fn catalogs(&self, snapshot: &Snapshot) -> BTreeMap<String, Vec<InstanceType>> {
        let mut catalogs = BTreeMap::new();
        for pool in &snapshot.node_pools {
            let name = pool.metadata.name.clone().unwrap_or_default();
            match self.ctx.provider.instance_types(pool).await {
                Ok(its) if !its.is_empty() => {
                    catalogs.insert(name, its);
                }
                Ok(_) => tracing::warn!(NodePool = %name, "no instance types"),
                Err(e) => {
                    tracing::warn!(NodePool = %name, error = %e, "listing instance types failed")
                }
            }
        }
        nodeoverlay::apply(&self.ctx, &snapshot.node_pools, &mut catalogs);
        crate::reservations::apply(&self.ctx, snapshot, &mut catalogs);
        catalogs
    }

    /// Nominations and reports of pods that are no longer pending are done with.
    fn forget_done(&mut self, snapshot: &Snapshot) {
        let pending: HashSet<&str> = snapshot
            .pods
            .iter()
            .filter(|p| pods::awaits_capacity(p))
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.nominations
            .retain(|uid, _| pending.contains(uid.as_str()));
        self.reported
            .retain(|uid, _| pending.contains(uid.as_str()));
    }

    /// Creates the planned NodeClaims, [`CREATE_CONCURRENCY`] at a time. Each created claim is
    /// written into the cluster state at once (in flight until the watch delivers it). Returns
    /// the planned claims that were created, with their names.
    async fn create<'p>(
        &self,
        snapshot: &Snapshot,
        planned: &'p [PlannedNodeClaim],
    ) -> Vec<(&'p PlannedNodeClaim, String)> {
        let pools: HashMap<&str, &NodePool> = snapshot
            .node_pools
            .iter()
            .filter_map(|p| Some((p.metadata.name.as_deref()?, p.as_ref())))
            .collect();
        let api: Api<NodeClaim> = Api::all(self.ctx.client.clone());
        let ctx = &self.ctx;
        let reservations = ctx.provider.reservations();
        let reservation_key = reservations.as_ref().map(|r| r.key);
        let jobs: Vec<(&PlannedNodeClaim, NodeClaim)> = planned
            .iter()
            .filter_map(|planned| {
                let pool = pools.get(planned.node_pool.as_str())?;
                Some((
                    planned,
                    claims::launched_node_claim(pool, planned, &ctx.launch_prices, reservation_key),
                ))
            })
            .collect();
        let mut queue = jobs.into_iter();
        let mut running = FuturesUnordered::new();
        let mut out = Vec::new();
        loop {
            while running.len() < CREATE_CONCURRENCY {
                let Some((planned, claim)) = queue.next() else {
                    break;
                };
                running.push(create_one(api.clone(), planned, claim));
            }
            let Some((planned, result)) = running.next().await else {
                break;
            };
            match result {
                Ok(created) => {
                    let name = created.metadata.name.clone().unwrap_or_default();
                    ctx.state.node_claim_created(created);
                    tracing::info!(
                        NodeClaim = %name,
                        NodePool = %planned.node_pool,
                        instance_type = %planned.instance_type,
                        pods = planned.pods.len(),
                        "created nodeclaim"
                    );
                    ctx.metrics
                        .nodeclaims_created
                        .get_or_create(&ReasonPool {
                            reason: "provisioning".into(),
                            nodepool: planned.node_pool.clone(),
                        })
                        .inc();
                    out.push((planned, name));
                }
                Err(e) => {
                    tracing::warn!(NodePool = %planned.node_pool, error = %e, "creating a nodeclaim failed")
                }
            }
        }
        out
    }

    /// Nominates real pods to `target`; buffers' virtual pods are not nominated (they are
    /// placed afresh every round) but their placement is recorded in `placements`.
    fn nominate(
        &mut self,
        round: &problem::Round,
        pods: &[String],
        target: &str,
        now: Instant,
        placements: &mut HashMap<String, String>,
    ) {
        for key in pods {
            let pod = round.pending.get(key);
            if pod.is_some_and(|p| capacitybuffer::is_virtual(p)) {
                placements.insert(key.clone(), target.to_owned());
                continue;
            }
            if let Some(uid) = pod.and_then(|p| p.metadata.uid.clone()) {
                self.nominations.insert(
                    uid,
                    Nomination {
                        target: target.to_string(),
                        at: now,
                    },
                );
            }
        }
    }

    /// Emits a warning on the pod unless it was already told exactly this.
    /// Tells each pod the round could not convert why (after the solver turn: one event per
    /// pod can be many API calls).
    async fn report_invalid(&mut self, round: &problem::Round) {
        for (pod, reason) in &round.invalid {
            if capacitybuffer::is_virtual(pod) {
                // Nothing to tell a pod that does not exist; the buffer's template is wrong.
                tracing::warn!(Pod = %pods::pod_key(pod), %reason, "capacitybuffer virtual pod cannot be provisioned for");
                continue;
            }
            self.report(pod, format!("Failed to schedule pod, {reason}"))
                .await;
        }
    }

    async fn report(&mut self, pod: &crate::state::StoredPod, note: String) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.reported.get(&uid) == Some(&note) {
            return;
        }
        tracing::info!(Pod = %pods::pod_key(pod), reason = %note, "pod cannot be served");
        self.ctx
            .event(
                &pod.object_ref(&()),
                EventType::Warning,
                FAILED_SCHEDULING,
                "Provisioning",
                note.clone(),
            )
            .await;
        self.reported.insert(uid, note);
    }

    /// `karpenter_pods_state`, from the cluster state's running counts (no pass over the pods).
    fn record_pod_states(&self) {
        let pods_state = &self.ctx.metrics.pods_state;
        pods_state.clear();
        for (phase, n) in self.ctx.state.pod_phase_counts() {
            pods_state
                .get_or_create(&PodState {
                    phase: phase.to_string(),
                })
                .set(n);
        }
    }
}
