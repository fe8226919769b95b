//! Scale-down to 12.5% (or the case's target): how fast the live price comes within 1.25x and
//! 1.10x of what `karpenter simulate` plans for the remaining pods, how many disruption
//! commands it took and how many nodes each removed, how many pods were evicted per node, and
//! whether more nodes were ever disrupting than the budget allows.
//!
//! It also counts the NodeClaims provisioning launched during the scale-down. Pods only go
//! away here, so capacity a command needs comes with the command (its replacements); a
//! provisioning launch means kube-scheduler put the evicted pods' successors elsewhere than the
//! command planned, and some of them found no room. They are read from the controller's own
//! account, not guessed from NodeClaim ages: each provisioning launch logs `created nodeclaim`
//! with the pods it was planned for (replacements do not), and
//! `karpenter_nodeclaims_created_total` counts launches by reason (`provisioning` or the
//! command's reason; in the JSON as a cross-check, it restarts from 0 with the process).

use anyhow::Result;
use serde_json::json;

use super::settle::wait_quiet;
use super::{Env, api_mark, api_since, controller_counter, decisions, emit, percentile};
use crate::{logscan, promtext, setup, snapshot};

pub async fn run(env: &mut Env) -> Result<()> {
    let target = env.plan_down.price_per_hour;
    let api_before = api_mark(env).await?;
    let decisions_before = decisions(&env.sup).await;
    let created_before = claims_created(env).await;
    let log = env
        .sup
        .current()
        .map(|(_, l)| (l.to_path_buf(), logscan::offset(l)));
    let before = env.fleet.snapshot();
    env.fleet.start_phase();
    setup::scale_deployments(&env.client, env.case.down_to).await?;
    let (mut t125, mut t110) = (None, None);
    let mut record = |t: f64, price: f64| {
        if t125.is_none() && price <= 1.25 * target {
            t125 = Some(t);
        }
        if t110.is_none() && price <= 1.10 * target {
            t110 = Some(t);
        }
    };
    let (settled, snap) = wait_quiet(env, true, Some(&mut record)).await?;
    let state = env.dir.join("after-scale-down.yaml");
    if let Err(e) = snapshot::write(&env.client, &state).await {
        tracing::warn!(error = format!("{e:#}"), "writing the cluster snapshot");
    }
    let mut phase = env.fleet.start_phase();
    let commands = match &log {
        Some((path, off)) => logscan::commands_since(path, *off)?,
        None => Vec::new(),
    };
    let cmd_nodes: usize = commands.iter().map(|(_, n)| n).sum();
    let launches = match &log {
        Some((path, off)) => logscan::provisioning_launches_since(path, *off)?,
        None => Vec::new(),
    };
    let disrupted = phase.disrupted_nodes.len();
    let ratio = snap.price / target;
    let s = &mut env.summary;
    s.down_t125 = t125;
    s.down_t110 = t110;
    s.down_ratio = Some(ratio);
    s.commands = commands.len();
    s.nodes_per_command = (!commands.is_empty()).then(|| cmd_nodes as f64 / commands.len() as f64);
    s.evicted_per_node = (disrupted > 0).then(|| phase.evicted as f64 / disrupted as f64);
    let max_wait = phase.latencies.iter().copied().reduce(f64::max);
    let stages = super::scale_up::stage_percentiles(std::mem::take(&mut phase.stages));
    let wait_p50_p99 = [
        percentile(&mut phase.latencies, 50.0),
        percentile(&mut phase.latencies, 99.0),
    ];
    s.rescheduled_max_wait = max_wait;
    s.rescheduled_p99_wait = wait_p50_p99[1];
    s.provisioning_claims_down = log.is_some().then_some(launches.len());
    s.budget_exceeded = Some(phase.over_budget_events > 0);
    s.max_disrupting = phase.max_disrupting;
    s.allowed_at_max = phase.allowed_at_max;
    emit(
        env.case,
        "scale_down",
        json!({
            "nodes_before": before.nodes, "price_before": before.price,
            "nodes_after": snap.nodes, "price_per_hour": snap.price, "pods_running": snap.running,
            "simulate_price_per_hour": target, "simulate_lower_bound_per_hour": env.plan_down.lower_bound_per_hour,
            "simulate_nodes": env.plan_down.node_claims,
            "seconds_to_1_25x": t125, "seconds_to_1_10x": t110, "final_ratio_vs_simulate": ratio,
            "seconds_to_last_change": settled.0, "settled": settled.1,
            "disruption_commands": commands.len(), "nodes_in_commands": cmd_nodes,
            "commands_by_reason": count_by_reason(&commands),
            "decisions_by_reason": promtext::delta(&decisions_before, &decisions(&env.sup).await),
            "nodes_disrupted": disrupted, "pods_evicted": phase.evicted,
            "pods_rescheduled": phase.latencies.len(), "rescheduled_max_wait_s": max_wait,
            "rescheduled_wait_p50_p99_s": wait_p50_p99,
            "rescheduled_stages_p50_p99_max_s": stages, "pod_deletions": phase.pod_deletions,
            "max_disrupting": phase.max_disrupting, "budget_allowed_at_max": phase.allowed_at_max,
            "provisioning_nodeclaims": launches.len(),
            "provisioning_nodeclaims_pods": launches,
            "nodeclaims_created_by_reason": promtext::delta(&created_before, &claims_created(env).await),
            "over_budget_events": phase.over_budget_events, "worst_excess": phase.worst_excess,
            "api_requests": api_since(env, &api_before).await?.1,
        }),
    );
    Ok(())
}

/// `karpenter_nodeclaims_created_total` of the running controller by reason.
async fn claims_created(env: &Env) -> std::collections::BTreeMap<String, f64> {
    controller_counter(&env.sup, "karpenter_nodeclaims_created_total", "reason").await
}

fn count_by_reason(commands: &[(String, usize)]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for (r, _) in commands {
        *m.entry(r.clone()).or_insert(0) += 1;
    }
    m
}
