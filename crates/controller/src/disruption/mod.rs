//! The disruption loop (leader only): every `disruption_poll_period`, snapshot the cluster,
//! build the planner input ([`input`]), plan ([`karpenter_solver::disruption::plan`]) and
//! carry out the commands ([`command`]).
//!
//! - Emptiness and consolidation commands are validated, each by its own task ([`validation`]):
//!   after `disruption_validation_period` (upstream 15 s) the command itself is checked again
//!   on fresh state, invalid candidates are dropped and the rest goes. Drift and expiration act
//!   at once. Rounds never wait for a validation pause.
//! - Commands run as tasks; their nodes count as disrupting in later rounds (against budgets,
//!   never candidates) until they are gone, so budgets hold across commands in flight.
//! - Commands survive restarts: each round resumes commands recorded on NodeClaims that no
//!   task is carrying out ([`command::resume`]), and removes the `karpenter.sh/disrupted`
//!   taint from Nodes that carry it without a command or a deletion (a crash between
//!   tainting and recording).
//! - Node groups' minimum sizes ([`karpenter_providers::CloudProvider::node_group_floors`]):
//!   emptiness and consolidation never take a group below its minimum (the planner's
//!   [`karpenter_solver::disruption::NodeGroup`]s).
//! - Node repair (gate `NodeRepair` without `--legacy-node-repair`, upstream v1.15): Nodes
//!   whose conditions match a repair policy are marked unhealthy in the planner input
//!   ([`input::mark_unhealthy`]); the planner picks at most one a round within the `Unhealthy`
//!   budget and the 20% cap, replacements first; the command (not validated) stamps the
//!   NodeClaim's termination deadline to now before deleting it ([`repair`]).
//! - Drift is read from the NodeClaims' `Drifted` condition, which [`crate::drift`] keeps
//!   (also when disruption is off).

pub mod command;
pub mod input;
mod repair;
mod round;
mod scores;
mod validation;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::context::Context;

/// Commands being carried out by this replica's tasks, by key (a record id, or the nodes of
/// a command not yet recorded): their nodes and NodeClaims.
#[derive(Debug, Default)]
pub struct InFlight {
    entries: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

impl InFlight {
    /// Every node of a command in flight.
    pub fn nodes(&self) -> BTreeSet<String> {
        self.entries.values().flat_map(|e| e.0.clone()).collect()
    }

    /// Every NodeClaim of a command in flight.
    pub fn claims(&self) -> BTreeSet<String> {
        self.entries.values().flat_map(|e| e.1.clone()).collect()
    }
}

/// Shared between the loop and its command tasks.
pub type Shared = Arc<Mutex<InFlight>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, InFlight> {
    // A task that panicked while holding the lock left consistent data (single inserts).
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the disruption loop until the future is dropped (command tasks stop with it).
pub async fn run(ctx: Arc<Context>) {
    if ctx.state.wait_until_synced().await.is_err() {
        return;
    }
    tracing::info!("disruption loop started");
    if ctx.options.repairs_in_disruption() && ctx.provider.repair_policies().is_empty() {
        tracing::info!(
            provider = ctx.provider.name(),
            "node repair is enabled, but the cloud provider defines no repair policies"
        );
    }
    let shared: Shared = Arc::default();
    let mut memory = round::Memory::default();
    // Dropping the set (leadership lost) aborts the commands; their records resume them.
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(ctx.options.disruption_poll_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        while tasks.try_join_next().is_some() {}
        if let Err(e) = round::run(&ctx, &shared, &mut memory, &mut tasks).await {
            tracing::warn!(error = %e, "disruption round failed");
        }
    }
}
