//! `karpenter-perf`: the controller at production scale on the local control plane with kwok.
//!
//! For each size N: a fresh plane, a NodePool and Deployments of mixed shapes summing to N
//! pods, `karpenter controller` as a separate process (SIGKILLed and restarted mid-scale-up),
//! then orphans, settling and a scale-down to 12.5% of N. One JSON line per size and phase on
//! stdout, a Markdown table in `<out>/table.md`. A benchmark: nothing here passes or fails on
//! timing. Run it through `hack/perf/run` (which builds the binaries).

mod audit;
mod controller;
mod fleet;
mod logscan;
mod plane;
mod price;
mod procstat;
mod promtext;
mod report;
mod scenario;
mod setup;
mod simulate;
mod snapshot;
mod supervisor;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;

use crate::plane::PlaneLimits;
use crate::scenario::{Case, Settings};

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Measure the karpenter controller at scale on the local control plane (kwok)")]
struct Args {
    /// Sizes: `N` (scale down to 12.5% of N) or `N:M` (scale down to M), comma-separated.
    #[arg(long, default_value = "1000,5000,10000", value_delimiter = ',')]
    sizes: Vec<String>,
    /// The `karpenter` binary to measure (controller and simulate).
    #[arg(long)]
    karpenter_bin: PathBuf,
    /// Where logs, manifests and the table go (default: a new /tmp/karpenter-perf.* dir).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// The repository (for hack/control-plane).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Client QPS of kube-controller-manager and kube-scheduler.
    #[arg(long, default_value_t = 500)]
    cp_qps: u32,
    /// Client burst of the same.
    #[arg(long, default_value_t = 1000)]
    cp_burst: u32,
    /// API server --max-requests-inflight / --max-mutating-requests-inflight.
    #[arg(long, default_value_t = 1600)]
    cp_inflight: u32,
    /// kwok's pod and node stage parallelism.
    #[arg(long, default_value_t = 32)]
    cp_kwok_parallelism: u32,
    /// SIGKILL the controller once this fraction of the pods runs (0: never).
    #[arg(long, default_value_t = 0.5)]
    kill_at: f64,
    /// Seconds without a price change (and no node disrupting) that count as settled.
    #[arg(long, default_value_t = 60)]
    quiet_seconds: u64,
    /// The NodePool's disruption budget (`nodes: "P%"`), in percent.
    #[arg(long, default_value_t = workload::DEFAULT_BUDGET_PERCENT, value_parser = clap::value_parser!(u64).range(0..=100))]
    budget_percent: u64,
    /// Measure the plane's floor instead: the same Deployments on nodes created up front,
    /// no controller (what kube-scheduler, kwok and the API server need by themselves).
    #[arg(long)]
    floor: bool,
    /// Cap of the settle and scale-down waits, in seconds.
    #[arg(long, default_value_t = 600)]
    cap_seconds: u64,
}

fn parse_case(s: &str) -> Result<Case> {
    let (n, m) = match s.split_once(':') {
        Some((n, m)) => (n.trim().parse::<usize>()?, Some(m.trim().parse::<usize>()?)),
        None => (s.trim().parse::<usize>()?, None),
    };
    if n == 0 {
        bail!("size 0 in {s:?}");
    }
    // 12.5% of N, at least one pod so the scale-down target has a plan.
    let down_to = m.unwrap_or_else(|| (n / 8).max(1));
    Ok(Case { size: n, down_to })
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let args = Args::parse();
    let cases = args
        .sizes
        .iter()
        .map(|s| parse_case(s).with_context(|| format!("invalid size {s:?}")))
        .collect::<Result<Vec<_>>>()?;
    let out_dir = match &args.out_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("karpenter-perf.{}", std::process::id())),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let settings = Settings {
        repo: std::fs::canonicalize(&args.repo).context("resolving --repo")?,
        karpenter_bin: std::fs::canonicalize(&args.karpenter_bin)
            .with_context(|| format!("--karpenter-bin {}", args.karpenter_bin.display()))?,
        out_dir: out_dir.clone(),
        limits: PlaneLimits {
            qps: args.cp_qps,
            burst: args.cp_burst,
            inflight: args.cp_inflight,
            mutating_inflight: args.cp_inflight / 2,
            kwok_parallelism: args.cp_kwok_parallelism,
        },
        kill_at: args.kill_at,
        quiet: Duration::from_secs(args.quiet_seconds),
        cap: Duration::from_secs(args.cap_seconds),
        budget_percent: args.budget_percent,
        floor: args.floor,
    };
    tracing::info!(out_dir = %out_dir.display(), ?cases, "perf suite starting");
    // On SIGINT/SIGTERM the run is dropped, and with it the guards: the controller is killed
    // and the plane taken down before exiting.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = run_cases(&settings, cases, &out_dir) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = sigterm.recv() => bail!("terminated"),
    }
}

async fn run_cases(settings: &Settings, cases: Vec<Case>, out_dir: &std::path::Path) -> Result<()> {
    let mut rows = Vec::new();
    let mut failed = 0;
    for case in cases {
        if settings.floor {
            scenario::floor::run(settings, case)
                .await
                .with_context(|| format!("floor of {} pods", case.size))?;
            continue;
        }
        let (mut summary, result) = scenario::run(settings, case).await;
        if let Err(e) = result {
            tracing::error!(size = case.size, error = format!("{e:#}"), "case failed");
            summary.error = Some(format!("{e:#}"));
            failed += 1;
        }
        tracing::info!(
            size = case.size,
            seconds = summary.wall_seconds,
            "case done"
        );
        println!(
            "{}",
            serde_json::json!({"size": case.size, "phase": "summary", "summary": summary})
        );
        rows.push(summary);
        // Written after every case, so an interrupted run keeps what it measured.
        let table = report::table(&rows);
        std::fs::write(out_dir.join("table.md"), &table).context("writing table.md")?;
    }
    eprintln!("\n{}", report::table(&rows));
    eprintln!("table: {}", out_dir.join("table.md").display());
    if failed > 0 {
        bail!(
            "{failed} case(s) failed; see the JSON lines and {}",
            out_dir.display()
        );
    }
    Ok(())
}
