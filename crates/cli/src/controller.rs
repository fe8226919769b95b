//! `karpenter controller`: runs the control loops against the cluster of the current
//! kubeconfig (or the in-cluster service account), with JSON logs, Prometheus metrics and
//! health probes.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use karpenter_controller::leaderelection::{DEFAULT_LEASE_NAME, LeaderElectionConfig, identity};
use karpenter_controller::server::{serve_health, serve_metrics};
use karpenter_controller::{Clients, Metrics, Options};
use karpenter_providers::CloudProvider;
use karpenter_providers::kwok::{KwokProvider, add_reservations, parse_reservations};

use crate::feature_gates::{FeatureGates, parse_feature_gates};

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
    /// Cloud provider: `kwok`, `clusterapi` (Machines of opted-in Cluster API
    /// MachineDeployments), or `aws` (binaries built with `--features aws`).
    #[arg(long, env = "CLOUD_PROVIDER", default_value = "kwok")]
    pub cloud_provider: String,
    /// Cluster API: kubeconfig of the management cluster (where the MachineDeployments and
    /// Machines live); the controller's own cluster when unset.
    #[arg(long, env = "CLUSTERAPI_KUBECONFIG")]
    pub clusterapi_kubeconfig: Option<std::path::PathBuf>,
    /// Cluster API: only use MachineDeployments (and create Machines) in this namespace of the
    /// management cluster; every namespace when unset.
    #[arg(long, env = "CLUSTERAPI_NAMESPACE")]
    pub clusterapi_namespace: Option<String>,
    /// Cluster API: how long a new Machine may wait for its providerID; after that its
    /// MachineDeployment's offering is unavailable for a while and the NodeClaim is replaced
    /// (raise it for slow infrastructure, e.g. bare metal).
    #[arg(long, env = "CLUSTERAPI_LAUNCH_TIMEOUT", default_value = "15m", value_parser = parse_duration)]
    pub clusterapi_launch_timeout: Duration,
    /// AWS: the cluster's name (instances are tagged `kubernetes.io/cluster/<name>`); required
    /// with `--cloud-provider aws`. Region and credentials come from the standard AWS chain
    /// (`AWS_REGION`, profile, IRSA/IMDS); `AWS_ENDPOINT_URL` points it at an emulator.
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// AWS: SQS queue (name or URL) of EventBridge interruption events; no interruption
    /// handling when unset.
    #[arg(long, env = "INTERRUPTION_QUEUE")]
    pub interruption_queue: Option<String>,
    /// AWS: the API server URL new nodes join (`https://...`, written into their user data).
    /// Defaults to the URL of the controller's kubeconfig; required when running in-cluster,
    /// where that URL is the `kubernetes` Service, which a node cannot reach before it joins.
    /// (Upstream asks EKS DescribeCluster; this controller does not.)
    #[arg(long, env = "CLUSTER_ENDPOINT")]
    pub cluster_endpoint: Option<String>,
    /// AWS: base64 of the cluster's PEM CA bundle, written into the nodes' user data. Defaults
    /// to the root CA of the controller's kubeconfig or service account.
    #[arg(long, env = "CLUSTER_CA_BUNDLE")]
    pub cluster_ca_bundle: Option<String>,
    /// AWS: the cluster's Service CIDR (e.g. `10.100.0.0/16`), AL2023's `NodeConfig`
    /// `spec.cluster.cidr`, which nodeadm needs; left out of the NodeConfig when unset.
    #[arg(long, env = "CLUSTER_CIDR")]
    pub cluster_cidr: Option<String>,
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
    /// Feature gates, upstream's format: `Name=true,Name=false`. `SpotToSpotConsolidation`
    /// (default false) lets consolidation replace spot nodes with cheaper spot nodes;
    /// `NodeOverlay` (default false) applies NodeOverlays to the catalog; `NodeRepair` (default
    /// false) replaces unhealthy nodes; `ReservedCapacity` (default true) launches into the
    /// provider's capacity reservations; `StaticCapacity` (default false) keeps static
    /// NodePools (`spec.replicas`) at their size; upstream's other gates are accepted at their defaults
    /// only (they are not implemented).
    #[arg(long, env = "FEATURE_GATES", default_value = "", value_parser = parse_feature_gates)]
    pub feature_gates: FeatureGates,
    /// With the `NodeRepair` gate: run the legacy node repair loop (upstream's first
    /// `node.health` controller: every unhealthy node past its toleration is deleted at once,
    /// no budgets, no `karpenter.sh/do-not-repair`) instead of repair as a disruption method.
    #[arg(long, env = "LEGACY_NODE_REPAIR")]
    pub legacy_node_repair: bool,
    /// Do not run the disruption loop (no emptiness, consolidation, drift, expiration, or node
    /// repair unless `--legacy-node-repair`).
    #[arg(long, env = "DISABLE_DISRUPTION")]
    pub disable_disruption: bool,
    /// Capacity reservations of the kwok provider, `ID=INSTANCE_TYPE/ZONE:COUNT` comma-separated
    /// (e.g. `cr-a=c-2x-amd64-linux/test-zone-a:3`): each adds a `reserved` offering of that
    /// many instances to the generated catalog.
    #[arg(long, env = "KWOK_RESERVATIONS", default_value = "")]
    pub kwok_reservations: String,
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
    // Colour only for a person at a terminal: piped into a file or a log collector, ANSI
    // escapes are noise that breaks grep and log parsers.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
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
        matches!(args.cloud_provider.as_str(), "kwok" | "aws" | "clusterapi"),
        "unknown cloud provider {:?} (available: kwok, clusterapi, aws)",
        args.cloud_provider
    );
    if args.cloud_provider == "aws" {
        // Before touching the cluster, so a misconfigured start fails with the real reason.
        aws::validate(args)?;
    }
    let config = kube::Config::infer()
        .await
        .context("cannot find a cluster (kubeconfig or in-cluster config)")?;
    let clients = Clients::new(&config).context("cannot build an API client")?;
    let (metrics, mut registry) = Metrics::new();
    let pod_name = std::env::var("POD_NAME").ok();
    let (provider, aws_setup): (Arc<dyn CloudProvider>, Option<aws::Setup>) =
        if args.cloud_provider == "aws" {
            let (p, setup) = aws::provider(args, &config, &clients.client, &mut registry).await?;
            (p, Some(setup))
        } else if args.cloud_provider == karpenter_clusterapi::PROVIDER_NAME {
            (clusterapi_provider(args, &clients.client).await?, None)
        } else {
            let mut catalog = karpenter_providers::kwok::catalog();
            parse_reservations(&args.kwok_reservations)
                .and_then(|r| add_reservations(&mut catalog, &r))
                .map_err(|e| anyhow::anyhow!("--kwok-reservations: {e}"))?;
            let kwok = KwokProvider::with_catalog(clients.client.clone(), catalog);
            (Arc::new(kwok), None)
        };
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
        instance: pod_name.clone(),
        leader_election,
        disruption: !args.disable_disruption,
        spot_to_spot_consolidation: args.feature_gates.spot_to_spot_consolidation,
        node_overlay: args.feature_gates.node_overlay,
        node_repair: args.feature_gates.node_repair,
        legacy_node_repair: args.legacy_node_repair,
        reserved_capacity: args.feature_gates.reserved_capacity,
        static_capacity: args.feature_gates.static_capacity,
        capacity_buffer: args.feature_gates.capacity_buffer,
        ..Options::default()
    };
    let client = clients.client.clone();
    let metrics = Arc::new(metrics);
    let running = karpenter_controller::start(clients, provider, metrics.clone(), options);
    let _aws_tasks = aws_setup.map(|s| s.spawn(client, running.context.leader.clone(), pod_name));
    let state = running.context.state.clone();
    let metrics_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.metrics_port));
    let health_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.health_probe_port));
    tracing::info!(%metrics_addr, %health_addr, "karpenter controller starting");
    let metrics_server = tokio::spawn(serve_metrics(
        metrics_addr,
        Arc::new(registry),
        Some(metrics),
    ));
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

/// `--cloud-provider clusterapi`: the provider over the management cluster, which is the
/// controller's own unless `--clusterapi-kubeconfig` names another.
async fn clusterapi_provider(
    args: &ControllerArgs,
    client: &kube::Client,
) -> Result<Arc<dyn CloudProvider>> {
    let management = match &args.clusterapi_kubeconfig {
        None => client.clone(),
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).with_context(|| {
                format!("cannot read the Cluster API kubeconfig {}", path.display())
            })?;
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .with_context(|| format!("unusable Cluster API kubeconfig {}", path.display()))?;
            kube::Client::try_from(config).context("cannot build the Cluster API client")?
        }
    };
    Ok(Arc::new(
        karpenter_clusterapi::ClusterApiProvider::new(
            management,
            args.clusterapi_namespace.clone(),
        )
        .with_launch_timeout(args.clusterapi_launch_timeout),
    ))
}

/// `--cloud-provider aws`: the provider, the EC2NodeClass status controller and the
/// interruption controller.
#[cfg(feature = "aws")]
mod aws {
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::{Context, Result};
    use karpenter_aws::sdk::cluster::ClusterFlags;
    use karpenter_aws::sdk::interruption::{
        InterruptionController, InterruptionMetrics, InterruptionOptions,
    };
    use karpenter_aws::sdk::status::{self, StatusOptions};
    use karpenter_aws::sdk::{AwsClients, AwsCloudProvider};
    use karpenter_providers::CloudProvider;
    use prometheus_client::registry::Registry;
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    use super::ControllerArgs;

    /// What runs next to the core loops.
    pub struct Setup {
        aws: AwsClients,
        cluster: String,
        queue: Option<String>,
        metrics: Arc<InterruptionMetrics>,
    }

    /// Tasks aborted when dropped.
    pub struct Tasks(Vec<JoinHandle<()>>);

    impl Drop for Tasks {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }

    impl Setup {
        /// Starts the EC2NodeClass status controller and, with a queue, the interruption
        /// controller, each while this replica leads.
        pub fn spawn(
            self,
            client: kube::Client,
            leader: watch::Receiver<bool>,
            instance: Option<String>,
        ) -> Tasks {
            let status_options = StatusOptions {
                cluster: self.cluster.clone(),
                resync: Duration::from_secs(5 * 60),
                instance: instance.clone(),
            };
            let (status_client, aws, mut status_leader) =
                (client.clone(), self.aws.clone(), leader.clone());
            // Like every writing loop, only the leader writes status (and creates instance
            // profiles): two replicas would race each other.
            let mut tasks = vec![tokio::spawn(async move {
                loop {
                    if status_leader.wait_for(|l| *l).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        () = status::run(status_client.clone(), aws.clone(), status_options.clone()) => return,
                        lost = status_leader.wait_for(|l| !*l) => if lost.is_err() { return },
                    }
                }
            })];
            if let Some(queue) = self.queue {
                tracing::info!(%queue, "watching the interruption queue");
                let mut options = InterruptionOptions::new(&queue);
                options.instance = instance;
                let c = InterruptionController::new(
                    client,
                    self.aws.sqs.clone(),
                    options,
                    Some(self.metrics),
                );
                tasks.push(tokio::spawn(c.run(Some(leader))));
            }
            Tasks(tasks)
        }
    }

    /// The flags `--cloud-provider aws` needs; an explicit `--cluster-endpoint` or
    /// `--cluster-ca-bundle` must be usable.
    pub fn validate(args: &ControllerArgs) -> Result<String> {
        let cluster = args
            .cluster_name
            .clone()
            .filter(|c| !c.is_empty())
            .context(
                "--cloud-provider aws needs the cluster name (CLUSTER_NAME or --cluster-name)",
            )?;
        cluster_flags(args).validate(&cluster)?;
        Ok(cluster)
    }

    fn cluster_flags(args: &ControllerArgs) -> ClusterFlags<'_> {
        ClusterFlags {
            endpoint: args.cluster_endpoint.as_deref(),
            ca_bundle: args.cluster_ca_bundle.as_deref(),
            service_cidr: args.cluster_cidr.as_deref(),
        }
    }

    /// The AWS provider from the flags and the standard AWS configuration chain.
    pub async fn provider(
        args: &ControllerArgs,
        config: &kube::Config,
        client: &kube::Client,
        registry: &mut Registry,
    ) -> Result<(Arc<dyn CloudProvider>, Setup)> {
        let cluster = validate(args)?;
        let info = cluster_flags(args).resolve(&cluster, config)?;
        if info.service_cidr.is_none() {
            tracing::warn!(
                "no --cluster-cidr: AL2023 nodes get a NodeConfig without spec.cluster.cidr, \
                 which nodeadm needs"
            );
        }
        let conf = karpenter_aws::sdk::aws_config::load_defaults(
            karpenter_aws::sdk::aws_config::BehaviorVersion::latest(),
        )
        .await;
        let region = conf
            .region()
            .map(|r| r.to_string())
            .context("no AWS region: set AWS_REGION (or a profile with a region)")?;
        let aws = AwsClients::new(&conf);
        tracing::info!(%cluster, %region, endpoint = %info.endpoint, "AWS provider");
        let provider = AwsCloudProvider::new(client.clone(), aws.clone(), info, &region)
            .with_reserved_capacity(args.feature_gates.reserved_capacity);
        let metrics = InterruptionMetrics::register(registry);
        Ok((
            Arc::new(provider),
            Setup {
                aws,
                cluster,
                queue: args.interruption_queue.clone().filter(|q| !q.is_empty()),
                metrics,
            },
        ))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use clap::Parser;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ControllerArgs,
        }

        #[test]
        fn cluster_flags_are_read_and_checked_at_start() -> Result<(), String> {
            let parse = |extra: &[&str]| {
                let mut argv = vec!["k", "--cluster-name", "demo"];
                argv.extend_from_slice(extra);
                Cli::try_parse_from(argv)
                    .map(|c| c.args)
                    .map_err(|e| e.to_string())
            };
            let ok = parse(&[
                "--cluster-endpoint",
                "https://api.example",
                "--cluster-ca-bundle",
                "UEVN",
                "--cluster-cidr",
                "10.100.0.0/16",
            ])?;
            assert_eq!(validate(&ok).map_err(|e| e.to_string())?, "demo");
            assert_eq!(cluster_flags(&ok).service_cidr, Some("10.100.0.0/16"));
            let bad = parse(&["--cluster-endpoint", "http://api.example"])?;
            let msg = validate(&bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(msg.contains("--cluster-endpoint"), "{msg}");
            Ok(())
        }
    }
}

/// Without feature `aws`: `--cloud-provider aws` says how to get a binary that has it.
#[cfg(not(feature = "aws"))]
mod aws {
    use std::sync::Arc;

    use anyhow::{Result, bail};
    use karpenter_providers::CloudProvider;
    use prometheus_client::registry::Registry;
    use tokio::sync::watch;

    use super::ControllerArgs;

    /// Never built without the feature.
    pub enum Setup {}

    impl Setup {
        pub fn spawn(
            self,
            _client: kube::Client,
            _leader: watch::Receiver<bool>,
            _instance: Option<String>,
        ) {
            match self {}
        }
    }

    const NO_AWS: &str = "this karpenter binary was built without AWS support; rebuild it \
        with `cargo build -p karpenter --features aws` to use --cloud-provider aws";

    /// Always an error: this binary has no AWS support.
    pub fn validate(_args: &ControllerArgs) -> Result<()> {
        bail!(NO_AWS)
    }

    /// Always an error: this binary has no AWS support.
    pub async fn provider(
        _args: &ControllerArgs,
        _config: &kube::Config,
        _client: &kube::Client,
        _registry: &mut Registry,
    ) -> Result<(Arc<dyn CloudProvider>, Setup)> {
        bail!(NO_AWS)
    }
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

    #[test]
    fn disruption_flags_parse() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ControllerArgs,
        }
        let cli = Cli::try_parse_from(["k"]).map_err(|e| e.to_string());
        let args = cli.map(|c| c.args);
        assert!(
            matches!(&args, Ok(a) if !a.disable_disruption && a.feature_gates == FeatureGates::default())
        );
        let args = Cli::try_parse_from([
            "k",
            "--disable-disruption",
            "--feature-gates",
            "SpotToSpotConsolidation=true",
        ])
        .map(|c| c.args);
        assert!(
            matches!(&args, Ok(a) if a.disable_disruption && a.feature_gates.spot_to_spot_consolidation)
        );
        let bad = Cli::try_parse_from(["k", "--feature-gates", "Bogus=true"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(bad.contains("Bogus"), "{bad}");
    }

    #[test]
    fn legacy_node_repair_is_off_unless_asked() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ControllerArgs,
        }
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.args.legacy_node_repair);
        // The chart sets LEGACY_NODE_REPAIR="false" by default; no test sets it to "true"
        // (tests share the process environment), the flag stands for it.
        assert!(matches!(parse(&["k"]), Ok(false)));
        assert!(matches!(
            parse(&[
                "k",
                "--feature-gates",
                "NodeRepair=true",
                "--legacy-node-repair"
            ]),
            Ok(true)
        ));
    }
}
