//! The validation pause of emptiness and consolidation commands, one task per command.
//!
//! After `disruption_validation_period` (upstream 15 s) the command itself is checked again on
//! a fresh view of the cluster ([`validate_command`]): candidates that are no longer eligible
//! or within budget are dropped, a consolidation is simulated again with exactly what is left,
//! and what is still valid starts. A fresh plan choosing a different or larger set is no reason
//! to drop a command: while a scale-down settles the planner's choice moves every round, and
//! insisting on the same set let only tiny commands through.
//!
//! Each task runs on its own, so a round never waits for another round's pause. The nodes of
//! the command count as disrupting for every other plan and validation meanwhile (budgets
//! hold across tasks); for its own validation they do not.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use karpenter_solver::disruption::{Command, ConsolidationPolicy, Drift, validate_command};
use tokio::time::Instant;

use super::input::{Input, Skip};
use super::round::{consolidation_type, fresh_input, options, record_decision};
use super::{Shared, command, lock};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::{ConsolidationType, Moves};

/// How often a validation that found pods pending looks again.
const PENDING_RETRY: Duration = Duration::from_secs(1);

/// Waits the validation pause, validates `cmd` (registered in `shared` under `key`) and starts
/// what is still valid.
pub async fn validate_then_start(
    ctx: &Arc<Context>,
    shared: &Shared,
    key: &str,
    cmd: Command,
    drift: &BTreeMap<String, Drift>,
) -> Result<()> {
    tokio::time::sleep(ctx.options.disruption_validation_period).await;
    let Some(input) = settled_input(ctx, shared, &cmd, drift).await? else {
        count_failed(ctx, &cmd);
        return Ok(());
    };
    let opts = options(ctx);
    let problem = input.problem.clone();
    let planned = cmd.clone();
    let validation =
        tokio::task::spawn_blocking(move || validate_command(&problem, &opts, &planned))
            .await
            .map_err(|e| Error::Invalid(format!("validation task failed: {e}")))?
            .map_err(|e| Error::Invalid(format!("disruption validation: {e}")))?;
    for d in &validation.dropped {
        tracing::info!(reason = %cmd.reason, Node = %d.node, why = %d.reason,
            "candidate dropped from a disruption command by validation");
    }
    if !validation.dropped.is_empty() {
        count_failed(ctx, &cmd);
    }
    let Some(valid) = validation.command else {
        tracing::info!(reason = %cmd.reason, nodes = ?cmd.nodes, "disruption command no longer holds; dropped");
        return Ok(());
    };
    if valid.nodes.len() < cmd.nodes.len() {
        // Release the dropped nodes at once: later rounds may use them again.
        let claims = valid
            .nodes
            .iter()
            .filter_map(|n| input.claims.get(n).cloned())
            .collect();
        lock(shared)
            .entries
            .insert(key.to_string(), (valid.nodes.clone(), claims));
    }
    record_decision(ctx, &valid);
    count_moves(ctx, &valid, &input);
    command::start(ctx.clone(), valid, input.claims).await
}

/// A fresh input for validating `cmd`, once no pending pod is waiting for a place (at most one
/// more validation period); `None` when pods stayed pending.
async fn settled_input(
    ctx: &Context,
    shared: &Shared,
    cmd: &Command,
    drift: &BTreeMap<String, Drift>,
) -> Result<Option<Input>> {
    let deadline = Instant::now() + ctx.options.disruption_validation_period;
    let own: BTreeSet<&String> = cmd.nodes.iter().collect();
    loop {
        if !ctx.state.is_synced() {
            if Instant::now() >= deadline {
                tracing::info!(reason = %cmd.reason, nodes = ?cmd.nodes,
                    "disruption command dropped: the cluster state did not sync during its validation");
                return Ok(None);
            }
            tokio::time::sleep(PENDING_RETRY).await;
            continue;
        }
        let others: BTreeSet<String> = lock(shared)
            .nodes()
            .into_iter()
            .filter(|n| !own.contains(n))
            .collect();
        match fresh_input(ctx, drift, &others).await? {
            Ok(input) => return Ok(Some(input)),
            Err(Skip::Pending(n)) if Instant::now() < deadline => {
                tracing::debug!(pending = n, "validation waits for pending pods");
                tokio::time::sleep(PENDING_RETRY).await;
            }
            Err(Skip::Pending(n)) => {
                tracing::info!(reason = %cmd.reason, nodes = ?cmd.nodes, pending = n,
                    "disruption command dropped: pods stayed pending through its validation");
                return Ok(None);
            }
        }
    }
}

fn count_failed(ctx: &Context, cmd: &Command) {
    ctx.metrics
        .disruption_failed_validations
        .get_or_create(&ConsolidationType {
            consolidation_type: consolidation_type(cmd).into(),
        })
        .inc();
}

/// `karpenter_consolidation_moves_total`: the pods a command reschedules (onto existing nodes
/// or its replacements), so pods moved per node removed can be read off the metrics.
fn count_moves(ctx: &Context, cmd: &Command, input: &Input) {
    let moved: usize = cmd.placements.iter().map(|p| p.pods.len()).sum::<usize>()
        + cmd.replacements.iter().map(|r| r.pods.len()).sum::<usize>();
    let Some(first) = cmd.nodes.first() else {
        return;
    };
    let pool = input
        .problem
        .nodes
        .iter()
        .find(|n| &n.name == first)
        .map(|n| n.node_pool.clone())
        .unwrap_or_default();
    let policy = input
        .problem
        .policies
        .iter()
        .find(|p| p.name == pool)
        .map(|p| match p.consolidation_policy {
            ConsolidationPolicy::WhenEmpty => "WhenEmpty",
            ConsolidationPolicy::WhenEmptyOrUnderutilized => "WhenEmptyOrUnderutilized",
        })
        .unwrap_or_default();
    ctx.metrics
        .consolidation_moves
        .get_or_create(&Moves {
            decision: if cmd.replacements.is_empty() {
                "delete".into()
            } else {
                "replace".into()
            },
            nodepool: pool,
            policy: policy.into(),
        })
        .inc_by(moved as u64);
}
