//! `karpenter controller`: runs the control loops against the cluster of the current
//! kubeconfig (or the in-cluster service account), with JSON logs, Prometheus metrics and
//! health probes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use karpenter_controller::leaderelection::{DEFAULT_LEASE_NAME, LeaderElectionConfig, identity};
use karpenter_controller::server::{serve_health, serve_metrics};
use karpenter_controller::{Clients, Metrics, Options};
use karpenter_providers::kwok::KwokProvider;

/// Flags of `karpenter controller` (each also read from the environment, like upstream).
#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Close a provisioning batch after this long without a new pending pod.
    #[arg(long, env = "BATCH_IDLE_DURATION", default_value = "1s", value_parser = parse_duration)]
    pub batch_idle_duration: Duration,
    /// Close a provisioning batch after this long regardless.
    #[arg(long, env = "BATCH_MAX_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub batch_max_duration: Duration,
    /// Port of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,
    /// Port of the `/healthz` and `/readyz` probes.
    #[arg(long, env = "HEALTH_PROBE_PORT", default_value_t = 8081)]
    pub health_probe_port: u16,
    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
    /// Cloud provider; only `kwok` exists so far.
    #[arg(long, env = "CLOUD_PROVIDER", default_value = "kwok")]
    pub cloud_provider: String,
    /// Act without electing a leader (a single replica, or tests). With it, two replicas
    /// would both act.
    #[arg(long, env = "DISABLE_LEADER_ELECTION")]
    pub disable_leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LEADER_ELECTION_NAME", default_value = DEFAULT_LEASE_NAME)]
    pub leader_election_name: String,
    /// Namespace of the leader-election Lease; defaults to the controller's own (the service
    /// account's namespace in a pod, the kubeconfig context's namespace elsewhere).
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
}

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Human-readable.
    Text,
}

/// Parses `500ms`, `1s`, `1m30s`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("invalid duration {s:?}"));
    }
    karpenter_api::v1::parse_duration(s)
        .ok_or_else(|| format!("invalid duration {s:?} (e.g. 500ms, 1s, 1m30s)"))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Runs the controller until SIGINT/SIGTERM.
pub fn run(args: &ControllerArgs) -> Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: &ControllerArgs) -> Result<()> {
    anyhow::ensure!(
        args.cloud_provider == "kwok",
        "unknown cloud provider {:?} (available: kwok)",
        args.cloud_provider
    );
    let config = kube::Config::infer()
        .await
        .context("cannot find a cluster (kubeconfig or in-cluster config)")?;
    let clients = Clients::new(&config).context("cannot build an API client")?;
    let provider = Arc::new(KwokProvider::new(clients.client.clone()));
    let (metrics, registry) = Metrics::new();
    let pod_name = std::env::var("POD_NAME").ok();
    let leader_election = (!args.disable_leader_election).then(|| {
        let namespace = args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let base = pod_name.clone().unwrap_or_else(|| "karpenter".into());
        LeaderElectionConfig::new(&args.leader_election_name, &namespace, &identity(&base))
    });
    let options = Options {
        batch_idle: args.batch_idle_duration,
        batch_max: args.batch_max_duration,
        instance: pod_name,
        leader_election,
        ..Options::default()
    };
    let running = karpenter_controller::start(clients, provider, Arc::new(metrics), options);
    let state = running.context.state.clone();
    let metrics_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.metrics_port));
    let health_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.health_probe_port));
    tracing::info!(%metrics_addr, %health_addr, "karpenter controller starting");
    let metrics_server = tokio::spawn(serve_metrics(metrics_addr, Arc::new(registry)));
    let health_server = tokio::spawn(serve_health(
        health_addr,
        Arc::new(move || state.is_ready()),
    ));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = sigterm.recv() => {}
    }
    tracing::info!("shutting down");
    // Release the Lease before the probes go, so a standby replica takes over at once.
    running.shutdown().await;
    metrics_server.abort();
    health_server.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("ten").is_err());
    }
}
