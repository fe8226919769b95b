//! Disruption planning (pure): which nodes to remove and what to launch instead.
//!
//! [`plan`]`(&DisruptionProblem, &DisruptionOptions) -> Result<DisruptionPlan, DisruptionError>`
//! decides, in upstream Karpenter's order:
//! 1. **Expiration** (forceful: no budget, no do-not-disrupt): nodes older than `expireAfter`.
//! 2. **Repair** (upstream v1.15's first method): the unhealthy node due longest, within the
//!    `Unhealthy` budget and the 20% cap, replaced by whatever its pods need; at most one a
//!    call (see `repair`).
//! 3. **Emptiness**: nodes without reschedulable pods for `consolidateAfter` → one delete.
//! 4. **Drift**: drifted nodes, empty first then oldest drift, one command each, replaced by
//!    whatever the pods need.
//! 5. **Multi-node consolidation** (`WhenEmptyOrUnderutilized`): binary search over the prefix
//!    of the cheapest-to-disrupt candidates for the largest set whose pods fit on the other
//!    nodes plus at most one strictly cheaper new node.
//! 6. **Single-node consolidation**: the first candidate (round-robin across NodePools) that can
//!    be deleted or replaced by one strictly cheaper node.
//!
//! Consolidation acts on `WhenEmptyOrUnderutilized` and `Balanced` NodePools; for `Balanced`
//! ones a move must also pass the balanced score (see `balanced`).
//!
//! "Fits" is always a provisioning [`crate::solve`] on the cluster without the candidates. Each
//! command is applied to a working copy of the cluster before the next is sought, so the
//! commands are consistent with each other and with the budgets (per NodePool and reason,
//! count or rounded-up percentage, cron windows; nodes already disrupting count against every
//! reason), and may all be carried out at once.
//!
//! Within one call a method that found nothing, or a candidate that failed, is not tried again:
//! later commands only move pods onto nodes (less room) and add replacements that cannot take
//! pods yet, so they could only fail again (topology may rarely differ; the next call sees it).

mod balanced;
mod budget;
mod candidates;
mod consolidation;
pub(crate) mod duration;
pub(crate) mod floors;
mod methods;
mod model;
mod repair;
mod state;
mod validation;

use std::collections::{BTreeMap, HashMap, HashSet};

pub use budget::{budget_allows, parse_nodes, window_active};
pub use candidates::eviction_cost;
pub use duration::parse_go_duration;
pub use model::{
    Allowed, BALANCED_K, Blocked, Budget, Command, ConsolidationPolicy, DISRUPTION_COST,
    DO_NOT_DISRUPT, DO_NOT_REPAIR, DisruptionError, DisruptionOptions, DisruptionPlan,
    DisruptionProblem, DoNotDisrupt, Drift, MoveDecision, MoveScore, NodeGroup, NodeState,
    POD_DELETION_COST, Pdb, PodState, PoolPolicy, REPAIR_UNHEALTHY_PERCENT, Reason, RepairBlock,
    RepairBlocked, ScoredMove, Unhealthy,
};

pub use validation::Validation;

use crate::model::{PlannedNodeClaim, PodView, Problem};
use budget::Budgets;
use candidates::Cand;
use state::{Sim, Work};

/// Plans disruption commands for the cluster in `input` at `opts.now`.
pub fn plan(
    input: &DisruptionProblem,
    opts: &DisruptionOptions,
) -> Result<DisruptionPlan, DisruptionError> {
    Ok(plan_with_stats(input, opts)?.0)
}

/// [`plan`] on an input the caller no longer needs: the planner works on the input's cluster
/// itself instead of a copy of it (every pod of the cluster: at 10 000 pods a copy was ~25 MB
/// of the controller's peak heap). Same plan as [`plan`].
pub fn plan_owned(
    mut input: DisruptionProblem,
    opts: &DisruptionOptions,
) -> Result<DisruptionPlan, DisruptionError> {
    validate(&input)?;
    let cluster = std::mem::take(&mut input.problem);
    Ok(run_planner(&input, cluster, opts)?.0)
}

/// [`plan`], plus how many scheduling simulations it ran (for benchmarks).
pub fn plan_with_stats(
    input: &DisruptionProblem,
    opts: &DisruptionOptions,
) -> Result<(DisruptionPlan, usize), DisruptionError> {
    validate(input)?;
    run_planner(input, input.problem.clone(), opts)
}

/// Plans on `cluster` (the input's `problem`, which the planner does not read from `input`).
fn run_planner(
    input: &DisruptionProblem,
    cluster: Problem,
    opts: &DisruptionOptions,
) -> Result<(DisruptionPlan, usize), DisruptionError> {
    let mut planner = Planner::new(input, cluster, opts);
    planner.run()?;
    let allowed = planner.initial_allowed;
    let (commands, notes) = floors::Floors::new(input).limit(planner.commands);
    Ok((
        DisruptionPlan {
            commands,
            allowed,
            blocked: planner.blocked,
            notes,
            repair_blocked: planner.repair_blocked,
            moves: planner.moves,
        },
        planner.work.simulations,
    ))
}

/// Re-checks a command planned earlier (by [`plan`]) on a fresh `input`, as the controller
/// does after its validation pause: candidates that are no longer eligible (gained a
/// do-not-disrupt pod or a blocking PDB, no longer empty for an emptiness command, already
/// disrupting, gone) or no longer within budget are dropped; a consolidation is simulated
/// again with exactly the remaining candidates and must still place every pod with no new
/// node or one strictly cheaper one, else its longest valid prefix is kept. Drift,
/// expiration and repair commands are returned unchanged (they are not validated).
///
/// `input` must not count the command's own nodes as disrupting (they are not yet).
pub fn validate_command(
    input: &DisruptionProblem,
    opts: &DisruptionOptions,
    command: &Command,
) -> Result<Validation, DisruptionError> {
    validate(input)?;
    Planner::new(input, input.problem.clone(), opts).validate(command)
}

/// [`validate_command`] working on the input's cluster itself instead of a copy of it (every
/// pod of the cluster: at 10 000 pods the copy was ~24 MB of the controller's peak heap).
/// `input.problem` is taken (left empty); its nodes, pods, policies and PDBs stay for the
/// caller. Same result as [`validate_command`].
pub fn validate_command_taking(
    input: &mut DisruptionProblem,
    opts: &DisruptionOptions,
    command: &Command,
) -> Result<Validation, DisruptionError> {
    validate(input)?;
    let cluster = std::mem::take(&mut input.problem);
    Planner::new(input, cluster, opts).validate(command)
}

fn validate(input: &DisruptionProblem) -> Result<(), DisruptionError> {
    let mut names = HashSet::new();
    for n in &input.problem.existing_nodes {
        if !names.insert(n.name.as_str()) {
            return Err(DisruptionError::DuplicateNode(n.name.clone()));
        }
    }
    let mut managed = HashSet::new();
    for n in &input.nodes {
        if !names.contains(n.name.as_str()) {
            return Err(DisruptionError::UnknownNode(n.name.clone()));
        }
        if !managed.insert(n.name.as_str()) {
            return Err(DisruptionError::DuplicateNode(n.name.clone()));
        }
    }
    Ok(())
}

/// Makes room for the pods of nodes already being disrupted (commands in flight): they will
/// be evicted and rescheduled, so they are placed first, on the other nodes or on new closed
/// nodes standing for the capacity those commands launch, and no command of this call may
/// count on that room (upstream simulates deleting nodes' pods as pending for the same
/// reason). Without it, two commands in flight at once could both plan to fill the same room.
fn reserve_displaced(input: &DisruptionProblem, work: &mut Work, daemon: &HashSet<String>) {
    let mut ids = Vec::new();
    for n in &input.nodes {
        let Some(id) = work.id(&n.name) else { continue };
        // Destinations are chosen among open nodes only (evaluate sets the same flag later).
        work.meta[id].closed = !n.initialized || n.disrupting;
        let moves = work
            .node(id)
            .is_some_and(|node| node.pods.iter().any(|p| !daemon.contains(&p.key())));
        if n.disrupting && moves {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return;
    }
    let reschedule = |p: &PodView| !daemon.contains(&p.key());
    // A simulation the solver refuses leaves the room unreserved, as before this step existed.
    if let Ok(sim) = work.simulate(&ids, false, &reschedule) {
        work.commit_displaced(&ids, &sim);
    }
}

/// One planning call's state.
pub(crate) struct Planner<'a> {
    pub opts: &'a DisruptionOptions,
    pub work: Work,
    pub budgets: Budgets,
    pub cands: Vec<Cand>,
    /// Keys of DaemonSet pods: they leave with their node instead of moving.
    pub daemon: HashSet<String>,
    pub commands: Vec<Command>,
    pub blocked: Vec<Blocked>,
    pub initial_allowed: Vec<Allowed>,
    /// Candidates (stable ids) that failed a simulation in this call.
    pub failed: HashSet<usize>,
    pub drift_failed: HashSet<usize>,
    pub multi_done: bool,
    /// Per-NodePool cost and disruption cost at the start (the `Balanced` score's denominators).
    pub totals: HashMap<String, balanced::PoolTotals>,
    /// NodePools over the repair cap: (unhealthy, nodes).
    pub repair_tripped: BTreeMap<String, (u32, u32)>,
    pub repair_blocked: Vec<RepairBlocked>,
    /// Consolidation moves scored so far (see [`DisruptionPlan::moves`]).
    pub moves: Vec<ScoredMove>,
}

impl<'a> Planner<'a> {
    /// A planner working on `cluster`: `input.problem`, or what was taken out of it (only
    /// `input`'s other fields are read).
    fn new(input: &'a DisruptionProblem, cluster: Problem, opts: &'a DisruptionOptions) -> Self {
        let mut work = Work::new(input, cluster);
        let daemon: HashSet<String> = input
            .pods
            .iter()
            .filter(|p| p.daemon_set)
            .map(|p| p.key.clone())
            .collect();
        reserve_displaced(input, &mut work, &daemon);
        let pod_state: HashMap<String, &PodState> =
            input.pods.iter().map(|p| (p.key.clone(), p)).collect();
        let (cands, blocked) = candidates::evaluate(input, &mut work, opts, &pod_state);
        let totals = balanced::pool_totals(&cands);
        let repair_tripped = repair::tripped_pools(input);
        let mut counts: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
        for np in &work.problem.node_pools {
            counts.entry(np.name.as_str()).or_default();
        }
        for n in &input.nodes {
            let e = counts.entry(n.node_pool.as_str()).or_default();
            if n.initialized {
                e.0 += 1;
            }
            if n.disrupting {
                e.1 += 1;
            }
        }
        let default_budgets = PoolPolicy::new("").budgets;
        let budgets = Budgets::new(
            counts.iter().map(|(pool, (num, disrupting))| {
                let b = input
                    .policies
                    .iter()
                    .find(|p| p.name == *pool)
                    .map_or(&default_budgets[..], |p| &p.budgets[..]);
                (*pool, b, *num, *disrupting)
            }),
            opts.now,
        );
        let initial_allowed = budgets
            .snapshot()
            .into_iter()
            .map(|(node_pool, reason, nodes)| Allowed {
                node_pool,
                reason,
                nodes,
            })
            .collect();
        Planner {
            opts,
            work,
            budgets,
            cands,
            daemon,
            commands: Vec::new(),
            blocked,
            initial_allowed,
            failed: HashSet::new(),
            drift_failed: HashSet::new(),
            multi_done: false,
            totals,
            repair_tripped,
            repair_blocked: Vec::new(),
            moves: Vec::new(),
        }
    }

    fn run(&mut self) -> Result<(), DisruptionError> {
        self.expiration()?;
        self.repair()?;
        loop {
            if self.emptiness() || self.drift()? {
                continue;
            }
            if !self.multi_done {
                if self.multi_node()? {
                    continue;
                }
                self.multi_done = true;
            }
            if self.single_node()? {
                continue;
            }
            return Ok(());
        }
    }

    /// Still in the cluster and not a destination of an earlier command.
    pub fn available(&self, c: &Cand) -> bool {
        let m = &self.work.meta[c.id];
        !m.removed && !m.nominated
    }

    /// Simulates removing `ids`; DaemonSet pods are not rescheduled.
    pub fn simulate(&mut self, ids: &[usize], consolidation: bool) -> Result<Sim, DisruptionError> {
        let daemon = &self.daemon;
        Ok(self.work.simulate(ids, consolidation, &|p: &PodView| {
            !daemon.contains(&p.key())
        })?)
    }

    /// Names the simulation's claims as replacements and caps their options.
    pub fn replacements(&mut self, claims: &[PlannedNodeClaim]) -> Vec<PlannedNodeClaim> {
        claims
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c.name = self.work.replacement_name(&c.node_pool);
                c.instance_type_options
                    .truncate(self.opts.max_instance_type_options.max(1));
                c
            })
            .collect()
    }

    /// Records and applies a command for candidates `idx` (indices into `self.cands`).
    pub fn decide(
        &mut self,
        reason: Reason,
        idx: &[usize],
        sim: &Sim,
        replacements: Vec<PlannedNodeClaim>,
    ) {
        let ids: Vec<usize> = idx.iter().map(|&i| self.cands[i].id).collect();
        self.work.commit(&ids, sim, &replacements);
        let removed: f64 = idx.iter().filter_map(|&i| self.cands[i].price).sum();
        let added: f64 = replacements.iter().map(|c| c.price).sum();
        for &i in idx {
            self.budgets.take(&self.cands[i].pool);
        }
        self.commands.push(Command {
            reason,
            nodes: idx.iter().map(|&i| self.cands[i].name.clone()).collect(),
            replacements,
            placements: sim.plan.existing_nodes.clone(),
            unschedulable: sim
                .plan
                .unschedulable
                .iter()
                .map(|u| u.pod.clone())
                .collect(),
            savings_per_hour: removed - added,
        });
    }
}
