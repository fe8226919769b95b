//! After the scale-up: orphan accounting (the restart must leave no instance without a
//! NodeClaim and no NodeClaim without an instance), then settling: the fleet is watched until
//! its price has not changed for the quiet period (consolidation of the scale-out).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde_json::json;

use super::{Env, api_mark, api_since, decisions, emit};
use crate::fleet::Orphans;
use crate::{logscan, promtext};

/// How long orphans get to be collected: the controller's garbage collection runs every 60 s
/// and leaves instances younger than 30 s alone.
const ORPHAN_WAIT: Duration = Duration::from_secs(180);
/// A NodeClaim younger than this may not have its Node yet.
const CLAIM_GRACE_MS: i64 = 30_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub async fn orphans(env: &mut Env) -> Result<()> {
    let first = env.fleet.orphans(now_ms(), CLAIM_GRACE_MS);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (cleared, last) = loop {
        tick.tick().await;
        env.sup.sample()?;
        let last = env.fleet.orphans(now_ms(), CLAIM_GRACE_MS);
        if total(&last) == 0 {
            break (Some(started.elapsed().as_secs_f64()), last);
        }
        if started.elapsed() > ORPHAN_WAIT {
            break (None, last);
        }
    };
    let duplicates = env.fleet.duplicate_provider_ids();
    env.summary.orphans = Some(last);
    env.summary.duplicates = duplicates;
    emit(
        env.case,
        "orphans",
        json!({
            "after_all_running": first, "final": last, "seconds_to_zero": cleared,
            "duplicate_provider_ids": duplicates,
        }),
    );
    Ok(())
}

fn total(o: &Orphans) -> usize {
    o.instances_without_claim + o.claims_without_instance
}

pub async fn run(env: &mut Env) -> Result<()> {
    let api_before = api_mark(env).await?;
    let decisions_before = decisions(&env.sup).await;
    let log = env
        .sup
        .current()
        .map(|(_, l)| (l.to_path_buf(), logscan::offset(l)));
    env.fleet.start_phase();
    let (seconds, snap) = wait_quiet(env, false, None).await?;
    let phase = env.fleet.start_phase();
    let commands = match &log {
        Some((path, off)) => logscan::commands_since(path, *off)?,
        None => Vec::new(),
    };
    env.summary.settled_price = Some(snap.price);
    env.summary.settled_nodes = snap.nodes;
    emit(
        env.case,
        "settle",
        json!({
            "seconds_to_last_change": seconds.0, "settled": seconds.1, "nodes": snap.nodes, "price_per_hour": snap.price,
            "ratio_vs_simulate": snap.price / env.plan_up.price_per_hour,
            "ratio_vs_lower_bound": snap.price / env.plan_up.lower_bound_per_hour,
            "disruption_commands": commands.len(), "nodes_disrupted": phase.disrupted_nodes.len(),
            "decisions_by_reason": promtext::delta(&decisions_before, &decisions(&env.sup).await),
            "max_disrupting": phase.max_disrupting, "budget_allowed_at_max": phase.allowed_at_max,
            "over_budget_events": phase.over_budget_events,
            "api_requests": api_since(env, &api_before).await?.1,
        }),
    );
    Ok(())
}

/// Samples every second (handing (seconds, price) to `on_sample`) until the price has not
/// changed and no node has been disrupting for the quiet period (with `require_change`, only
/// after a first change), or the cap. Returns
/// ((seconds until the last change, settled?), the last snapshot).
pub(super) async fn wait_quiet(
    env: &mut Env,
    require_change: bool,
    mut on_sample: Option<&mut dyn FnMut(f64, f64)>,
) -> Result<((f64, bool), crate::fleet::Snapshot)> {
    let started = Instant::now();
    let mut last_change = Instant::now();
    let mut last_price = env.fleet.snapshot().price;
    let mut last_progress = Instant::now();
    // After a scale-down the first command comes only after consolidateAfter, a disruption
    // poll and the validation pause: a quiet start there is not a settled fleet.
    let mut changed = !require_change;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        env.sup.sample()?;
        let snap = env.fleet.snapshot();
        if (snap.price - last_price).abs() > 1e-9 || snap.disrupting > 0 {
            last_change = Instant::now();
            last_price = snap.price;
            changed = true;
        }
        if let Some(f) = on_sample.as_mut() {
            f(started.elapsed().as_secs_f64(), snap.price);
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            tracing::info!(
                nodes = snap.nodes,
                price = snap.price,
                disrupting = snap.disrupting,
                running = snap.running,
                pods = snap.pods,
                elapsed = started.elapsed().as_secs(),
                "settling"
            );
        }
        let quiet = changed && last_change.elapsed() >= env.settings.quiet;
        if quiet || started.elapsed() >= env.settings.cap {
            // Settled at the last change, not at the end of the quiet window.
            let at = last_change.saturating_duration_since(started).as_secs_f64();
            return Ok(((at, quiet), snap));
        }
    }
}
