//! One size of the suite, end to end: fresh plane, objects, the controller as a process, then
//! the phases (scale-up with a controller kill, orphans, settle, scale-down). Every phase
//! prints one JSON line; the plane and the controller are torn down by their guards whatever
//! happens.

pub mod floor;
mod scale_down;
mod scale_up;
mod settle;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kube::Client;
use serde_json::{Value, json};

use crate::fleet::Fleet;
use crate::plane::{Plane, PlaneLimits};
use crate::report::SizeSummary;
use crate::simulate::{self, Plan};
use crate::supervisor::Supervisor;
use crate::{audit, promtext, setup, workload};

/// Settings shared by every size.
#[derive(Debug, Clone)]
pub struct Settings {
    pub repo: PathBuf,
    pub karpenter_bin: PathBuf,
    pub out_dir: PathBuf,
    pub limits: PlaneLimits,
    /// Kill the controller once this fraction of the pods runs (0: never).
    pub kill_at: f64,
    /// Price unchanged this long = settled.
    pub quiet: Duration,
    /// Cap of the settle and of the scale-down waits.
    pub cap: Duration,
    /// The NodePool's disruption budget, percent of its nodes.
    pub budget_percent: u64,
    /// Measure the plane's floor ([`floor`]) instead of the controller.
    pub floor: bool,
}

/// One size: scale up to `size` pods, then down to `down_to`.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub size: usize,
    pub down_to: usize,
}

/// What every phase works with.
struct Env {
    client: Client,
    fleet: Fleet,
    sup: Supervisor,
    case: Case,
    settings: Settings,
    plan_up: Plan,
    plan_down: Plan,
    audit_log: PathBuf,
    summary: SizeSummary,
    /// This size's output directory.
    dir: PathBuf,
}

/// Runs one case; the summary is filled as far as the run got, also on error.
pub async fn run(settings: &Settings, case: Case) -> (SizeSummary, Result<()>) {
    let started = Instant::now();
    let mut summary = SizeSummary::new(case.size, case.down_to);
    let result = run_inner(settings, case, &mut summary).await;
    summary.wall_seconds = started.elapsed().as_secs_f64();
    (summary, result)
}

async fn run_inner(settings: &Settings, case: Case, summary: &mut SizeSummary) -> Result<()> {
    let dir = settings.out_dir.join(format!("size-{}", case.size));
    let plan_up = plan(settings, &dir.join("simulate-up"), case.size).await?;
    let plan_down = plan(settings, &dir.join("simulate-down"), case.down_to).await?;
    emit(
        case,
        "simulate",
        json!({"scale_up": plan_up, "scale_down": plan_down}),
    );

    let (plane, client) = start_plane(settings, &dir).await?;
    let mut env = Env {
        fleet: Fleet::start(&client, settings.budget_percent),
        sup: Supervisor::new(&settings.karpenter_bin, &plane.controller_kubeconfig, &dir),
        audit_log: plane.audit_log.clone(),
        client,
        case,
        settings: settings.clone(),
        plan_up,
        plan_down,
        summary: std::mem::replace(summary, SizeSummary::new(case.size, case.down_to)),
        dir: dir.clone(),
    };
    let result = phases(&mut env).await;
    env.sup.kill();
    let usage = env.sup.usage();
    env.summary.rss_mb = usage.peak_rss_mb;
    env.summary.cpu_seconds = usage.cpu_seconds;
    *summary = env.summary;
    // `plane` drops here: `down` runs after the controller is gone.
    drop(plane);
    result
}

async fn phases(env: &mut Env) -> Result<()> {
    env.summary.sim_up = Some(env.plan_up);
    env.summary.sim_down = Some(env.plan_down);
    scale_up::run(env).await?;
    settle::orphans(env).await?;
    settle::run(env).await?;
    scale_down::run(env).await
}

/// A fresh plane in `dir` with the CRDs, the NodeClass and the NodePool, and a client of it.
async fn start_plane(settings: &Settings, dir: &Path) -> Result<(Plane, Client)> {
    let (repo, limits, plane_dir) = (
        settings.repo.clone(),
        settings.limits.clone(),
        dir.to_path_buf(),
    );
    let plane = tokio::task::spawn_blocking(move || Plane::up(&repo, &plane_dir, &limits))
        .await
        .context("the control-plane start panicked")??;
    let client = plane.client().await?;
    setup::install(&client, settings.budget_percent).await?;
    Ok((plane, client))
}

/// Writes the manifests for `pods` pods to `dir` and runs `karpenter simulate` on them.
async fn plan(settings: &Settings, dir: &Path, pods: usize) -> Result<Plan> {
    workload::write_manifests(dir, pods, settings.budget_percent)?;
    let (bin, dir) = (settings.karpenter_bin.clone(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || simulate::plan(&bin, &dir))
        .await
        .context("simulate panicked")?
}

/// Prints one JSON line for a phase of a case to stdout.
fn emit(case: Case, phase: &str, mut body: Value) {
    if let Value::Object(m) = &mut body {
        m.insert("size".into(), json!(case.size));
        m.insert("scale_down_to".into(), json!(case.down_to));
        m.insert("phase".into(), json!(phase));
    }
    println!("{body}");
}

/// Where a phase's API request counts start.
struct ApiMark {
    all_clients: BTreeMap<String, f64>,
    audit_offset: u64,
}

async fn api_mark(env: &Env) -> Result<ApiMark> {
    let text = promtext::apiserver(&env.client).await?;
    Ok(ApiMark {
        all_clients: promtext::sum_by(&text, "apiserver_request_total", "verb"),
        audit_offset: audit::offset(&env.audit_log),
    })
}

/// The requests since `mark`: the controller's (audit log, by verb and by verb + resource)
/// and every client's (`apiserver_request_total`, by verb).
async fn api_since(env: &Env, mark: &ApiMark) -> Result<(audit::Requests, Value)> {
    let controller = audit::requests_since(&env.audit_log, mark.audit_offset)?;
    let text = promtext::apiserver(&env.client).await?;
    let all = promtext::delta(
        &mark.all_clients,
        &promtext::sum_by(&text, "apiserver_request_total", "verb"),
    );
    let body = json!({"controller": controller, "all_clients_by_verb": all});
    Ok((controller, body))
}

/// The controller's `karpenter_voluntary_disruption_decisions_total` by reason (empty if the
/// metrics cannot be read).
async fn decisions(sup: &Supervisor) -> BTreeMap<String, f64> {
    controller_counter(
        sup,
        "karpenter_voluntary_disruption_decisions_total",
        "reason",
    )
    .await
}

/// A counter of the running controller summed by `label` (empty if the metrics cannot be
/// read).
async fn controller_counter(sup: &Supervisor, name: &str, label: &str) -> BTreeMap<String, f64> {
    let Some((port, _)) = sup.current() else {
        return BTreeMap::new();
    };
    match promtext::local_http(port).await {
        Ok(text) => promtext::sum_by(&text, name, label),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the controller's metrics");
            BTreeMap::new()
        }
    }
}

/// Nearest-rank percentile of `v` (sorted in place); `None` when empty.
fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }
}
