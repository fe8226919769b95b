//! Scale-up: the Deployments for N pods are created, the controller is SIGKILLed once a share
//! of them runs and started again at once, and the run waits (sampling every second) until
//! every pod is Running.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use super::{Env, api_mark, api_since, emit, percentile};
use crate::setup;

/// Log progress this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub async fn run(env: &mut Env) -> Result<()> {
    let n = env.case.size;
    // Generous: a deadline here only bounds a run that stalls; 10 min + 0.1 s per pod.
    let timeout = Duration::from_secs(600 + n as u64 / 10);
    let kill_at =
        (env.settings.kill_at > 0.0).then(|| ((n as f64) * env.settings.kill_at).ceil() as usize);
    let api_before = api_mark(env).await?;
    env.fleet.start_phase();
    env.sup.start()?;
    setup::create_deployments(&env.client, n).await?;
    let started = Instant::now();
    let mut kill: Option<serde_json::Value> = None;
    let mut last_progress = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let all_running = loop {
        tick.tick().await;
        env.sup.sample()?;
        let snap = env.fleet.snapshot();
        if snap.running >= n && snap.pods == n {
            break Some(started.elapsed().as_secs_f64());
        }
        if kill.is_none() && kill_at.is_some_and(|k| snap.running >= k) {
            let at = started.elapsed().as_secs_f64();
            tracing::info!(running = snap.running, pid = ?env.sup.pid(), "SIGKILL the controller mid-scale-up");
            env.sup.kill();
            env.sup.start()?;
            kill = Some(
                json!({"at_seconds": at, "running": snap.running, "nodes": snap.nodes, "claims": snap.claims}),
            );
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            tracing::info!(
                running = snap.running,
                pods = snap.pods,
                nodes = snap.nodes,
                claims = snap.claims,
                price = snap.price,
                elapsed = started.elapsed().as_secs(),
                "scaling up"
            );
        }
        if started.elapsed() > timeout {
            tracing::warn!(
                running = snap.running,
                "not all pods Running before the deadline"
            );
            break None;
        }
    };
    let (controller_api, api) = api_since(env, &api_before).await?;
    let usage = env.sup.sample()?;
    let snap = env.fleet.snapshot();
    let phase = env.fleet.start_phase();
    let mut lat = phase.latencies;
    let (p50, p99) = (percentile(&mut lat, 50.0), percentile(&mut lat, 99.0));
    let stages = stage_percentiles(phase.stages);
    let s = &mut env.summary;
    s.up_seconds = all_running;
    s.p50 = p50;
    s.p99 = p99;
    s.up_nodes = snap.nodes;
    s.up_price = snap.price;
    s.rss_mb = usage.peak_rss_mb;
    s.cpu_up = usage.cpu_seconds;
    s.api_up = controller_api.by_verb;
    emit(
        env.case,
        "scale_up",
        json!({
            "seconds_to_all_running": all_running,
            "pending_to_running_p50_s": p50, "pending_to_running_p99_s": p99, "pods_measured": lat.len(),
            "pending_stages_p50_p99_max_s": stages,
            "nodes": snap.nodes, "nodeclaims": snap.claims, "nodeclaims_created": env.fleet.claims_seen(),
            "price_per_hour": snap.price, "simulate_price_per_hour": env.plan_up.price_per_hour,
            "simulate_lower_bound_per_hour": env.plan_up.lower_bound_per_hour,
            "simulate_nodes": env.plan_up.node_claims,
            "ratio_vs_simulate": snap.price / env.plan_up.price_per_hour,
            "controller_peak_rss_mb": usage.peak_rss_mb, "controller_cpu_seconds": usage.cpu_seconds,
            "controller_killed": kill,
            "api_requests": api,
        }),
    );
    Ok(())
}

/// p50/p99/max of each stage of the pods' wait, and how many were judged Unschedulable.
pub(super) fn stage_percentiles(mut s: crate::fleet::Stages) -> serde_json::Value {
    let pair = |v: &mut Vec<f64>| {
        let max = v.iter().copied().reduce(f64::max);
        json!([percentile(v, 50.0), percentile(v, 99.0), max])
    };
    json!({
        "judged_unschedulable": s.judged,
        "verdicts": s.verdicts,
        "verdict_samples": s.verdict_samples,
        "created_to_unschedulable": pair(&mut s.to_unschedulable),
        "unschedulable_to_bound": pair(&mut s.to_bound),
        "bound_to_ready": pair(&mut s.to_ready),
    })
}
