//! The validation pause of a round's emptiness and consolidation commands.
//!
//! After `disruption_validation_period` (upstream 15 s) each command itself is checked again on
//! a fresh view of the cluster ([`validate_command`]): candidates that are no longer eligible
//! or within budget are dropped, a consolidation is simulated again with exactly what is left,
//! and what is still valid starts. A fresh plan choosing a different or larger set is no reason
//! to drop a command: while a scale-down settles the planner's choice moves every round, and
//! insisting on the same set let only tiny commands through.
//!
//! One task per round validates that round's commands in plan order on one fresh input, each
//! with the ones before it counted as disrupting (as the planner decided them), and then
//! carries the valid ones out concurrently. Rounds never wait for it: the nodes of its
//! commands count as disrupting for every other plan and validation meanwhile (budgets hold
//! across tasks); for its own validation they do not.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use karpenter_solver::disruption::{
    Command, DisruptionError, DisruptionOptions, DisruptionProblem, Drift, Validation,
    validate_command, validate_command_taking,
};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::input::{Input, Skip};
use super::round::{consolidation_type, fresh_input, options, record_decision};
use super::{Shared, command, lock};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::ConsolidationType;
use crate::turns::SolverTurn;

/// How often a validation that found pods pending (or the state re-listing) looks again.
const RETRY: Duration = Duration::from_secs(1);

/// Waits the validation pause, validates `commands` (each registered in `shared` under its
/// key) and carries out what is still valid; returns when they are all done.
pub async fn validate_then_start(
    ctx: &Arc<Context>,
    shared: &Shared,
    commands: Vec<(String, Command)>,
    drift: &BTreeMap<String, Drift>,
) -> Result<()> {
    tokio::time::sleep(ctx.options.disruption_validation_period).await;
    let own: BTreeSet<String> = commands
        .iter()
        .flat_map(|(_, c)| c.nodes.iter().cloned())
        .collect();
    let release = |key: &str| {
        lock(shared).entries.remove(key);
    };
    let (input, turn) = match settled_input(ctx, shared, &own, drift).await {
        Ok(Some(settled)) => settled,
        other => {
            for (key, cmd) in &commands {
                count_failed(ctx, cmd);
                release(key);
            }
            return other.map(|_| ());
        }
    };
    let Input {
        problem, claims, ..
    } = input;
    let opts = options(ctx);
    let planned: Vec<Command> = commands.iter().map(|(_, c)| c.clone()).collect();
    let mut problem = problem;
    let validated = tokio::task::spawn_blocking(move || {
        let results = validate_in_order(&mut problem, &opts, &planned);
        (problem, results)
    })
    .await;
    drop(turn);
    let (problem, results) = match validated {
        Ok(v) => v,
        Err(e) => {
            for (key, _) in &commands {
                release(key);
            }
            return Err(Error::Invalid(format!("validation task failed: {e}")));
        }
    };
    let mut running = JoinSet::new();
    for ((key, cmd), result) in commands.into_iter().zip(results) {
        let valid = match result {
            Ok(v) => accepted(ctx, &cmd, v),
            Err(e) => {
                tracing::warn!(error = %e, reason = %cmd.reason, "disruption validation failed");
                None
            }
        };
        let Some(valid) = valid else {
            release(&key);
            continue;
        };
        if valid.nodes.len() < cmd.nodes.len() {
            // Release the dropped nodes at once: later rounds may use them again.
            let names = valid
                .nodes
                .iter()
                .filter_map(|n| claims.get(n).cloned())
                .collect();
            lock(shared)
                .entries
                .insert(key.clone(), (valid.nodes.clone(), names));
        }
        record_decision(ctx, &valid);
        let (ctx, shared, claims) = (ctx.clone(), shared.clone(), claims.clone());
        running.spawn(async move {
            if let Err(e) = command::start(ctx, valid, claims).await {
                tracing::warn!(error = %e, "disruption command failed");
            }
            lock(&shared).entries.remove(&key);
        });
    }
    // The input holds every pod of the cluster: not for as long as the commands run.
    drop(problem);
    // Dropping the set (leadership lost) aborts the commands; their records resume them.
    while running.join_next().await.is_some() {}
    Ok(())
}

/// Validates `commands` in order on `problem`, each with the valid ones before it counted as
/// disrupting, as the planner had them when it decided. The last one works on the cluster
/// itself (`problem.problem` is left empty): one copy of every pod fewer at the peak, and
/// none in the usual case of one command.
fn validate_in_order(
    problem: &mut DisruptionProblem,
    opts: &DisruptionOptions,
    commands: &[Command],
) -> Vec<std::result::Result<Validation, DisruptionError>> {
    let mut out = Vec::with_capacity(commands.len());
    for (i, cmd) in commands.iter().enumerate() {
        let result = if i + 1 == commands.len() {
            validate_command_taking(problem, opts, cmd)
        } else {
            validate_command(problem, opts, cmd)
        };
        if let Ok(Validation {
            command: Some(valid),
            ..
        }) = &result
        {
            let going: HashSet<&str> = valid.nodes.iter().map(String::as_str).collect();
            for n in &mut problem.nodes {
                if going.contains(n.name.as_str()) {
                    n.disrupting = true;
                }
            }
        }
        out.push(result);
    }
    out
}

/// Logs and counts what validation dropped; the command that may still go.
fn accepted(ctx: &Context, cmd: &Command, v: Validation) -> Option<Command> {
    for d in &v.dropped {
        tracing::info!(reason = %cmd.reason, Node = %d.node, why = %d.reason,
            "candidate dropped from a disruption command by validation");
    }
    if !v.dropped.is_empty() {
        count_failed(ctx, cmd);
    }
    if v.command.is_none() {
        tracing::info!(reason = %cmd.reason, nodes = ?cmd.nodes, "disruption command no longer holds; dropped");
    }
    v.command
}

/// A fresh, synced input for validating commands over the nodes `own`, once no pending pod is
/// waiting for a place (at most one more validation period), with the solver turn it was built
/// in; `None` when pods stayed pending. The turn is not held while waiting: placing those pods
/// takes the provisioner's turn.
async fn settled_input<'c>(
    ctx: &'c Context,
    shared: &Shared,
    own: &BTreeSet<String>,
    drift: &BTreeMap<String, Drift>,
) -> Result<Option<(Input, SolverTurn<'c>)>> {
    let deadline = Instant::now() + ctx.options.disruption_validation_period;
    loop {
        let why = if ctx.state.is_synced() {
            let others: BTreeSet<String> = lock(shared)
                .nodes()
                .into_iter()
                .filter(|n| !own.contains(n))
                .collect();
            let turn = ctx.solver_turns.next().await;
            match fresh_input(ctx, drift, &others).await? {
                Ok(input) => return Ok(Some((input, turn))),
                Err(Skip::Pending(n)) => format!("{n} pods stayed pending"),
            }
        } else {
            "the cluster state did not sync".to_string()
        };
        if Instant::now() >= deadline {
            tracing::info!(nodes = ?own, why = %why, "disruption commands dropped in validation");
            return Ok(None);
        }
        tracing::debug!(why = %why, "validation waits");
        tokio::time::sleep(RETRY).await;
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
