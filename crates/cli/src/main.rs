//! The `karpenter` binary: one entry point for the controller, the offline simulator, CRD
//! generation and Provisioner conversion.

mod controller;
mod convert;
mod crds;
mod feature_gates;
mod simulate;

use std::path::PathBuf;

/// jemalloc rather than glibc malloc: at 10 000 pods the controller's heap churns through
/// large short-lived solver inputs on several threads, which glibc's per-thread arenas turn
/// into resident memory that is not given back.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

/// `0.1.0 (revision <git sha>)`: the crate version and the commit it was built from (build.rs;
/// "unknown" outside a git checkout), for `karpenter version` and `--version` alike.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("KARPENTER_GIT_REVISION"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "karpenter",
    version = VERSION,
    about = "Just-in-time node autoscaler for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control loops against the cluster in the current kubeconfig.
    Controller(Box<controller::ControllerArgs>),
    /// Plan nodes for pending pods offline: what would be launched, why, and at what cost.
    Simulate(SimulateArgs),
    /// Print the CustomResourceDefinitions as multi-document YAML.
    Crds(crds::CrdsArgs),
    /// Convert legacy karpenter.sh/v1alpha5 Provisioners into v1 NodePools (+ NodeClasses).
    Convert {
        /// Manifest files or directories ("-" for standard input).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the version and the git revision it was built from.
    Version,
}

#[derive(clap::Args, Debug)]
struct SimulateArgs {
    /// Manifest files or directories ("-" for standard input); the bundled example when omitted.
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// Instance-type catalog: `kwok`, `aws`, `clusterapi` (the Cluster API MachineDeployments of
    /// the input, shaped as the `clusterapi` provider shapes them), or a path to a catalog JSON
    /// file.
    #[arg(long, default_value = "kwok")]
    catalog: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// Print the full why-not for one pod (NAMESPACE/POD).
    #[arg(long)]
    explain: Option<String>,
    /// Skip the packing improvement pass after the greedy pass.
    #[arg(long)]
    no_optimise: bool,
    /// Read the cluster of the kubeconfig instead of files: NodePools, Provisioners,
    /// NodeClasses, Nodes, their pods and pending pods, DaemonSets, PDBs, volumes. Read-only
    /// (list only; see --print-rbac).
    #[arg(long, conflicts_with = "files")]
    from_cluster: bool,
    /// Kubeconfig for --from-cluster (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, requires = "from_cluster")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context for --from-cluster (default: the current one).
    #[arg(long, requires = "from_cluster")]
    context: Option<String>,
    /// With --from-cluster: also write what was read to FILE, which `simulate -f FILE`
    /// replays to the same result.
    #[arg(long, value_name = "FILE", requires = "from_cluster")]
    snapshot: Option<PathBuf>,
    /// Objects per list request of --from-cluster (tests use a small page to exercise
    /// pagination).
    #[arg(long, hide = true, default_value_t = simulate::live::PAGE, requires = "from_cluster")]
    page_size: u32,
    /// Print the read-only ClusterRole (get/list) that --from-cluster needs, and exit.
    #[arg(long, exclusive = true)]
    print_rbac: bool,
    /// Plan disruption as if every NodePool's disruption budgets allowed everything.
    #[arg(long)]
    ignore_budgets: bool,
    /// Also plan every running pod from scratch: the cheapest fleet found vs what today's
    /// nodes cost (from the catalog) vs the lower bound.
    #[arg(long)]
    repack: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum OutputFormat {
    Table,
    Json,
    Yaml,
    /// One self-contained HTML page (`-o html > report.html`).
    Html,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("karpenter {VERSION}");
            Ok(())
        }
        Command::Controller(args) => controller::run(&args),
        Command::Simulate(args) if args.print_rbac => {
            print!("{}", simulate::live::rbac());
            Ok(())
        }
        Command::Simulate(args) => simulate::run(&simulate::Config {
            from_cluster: args.from_cluster.then(|| simulate::live::Target {
                kubeconfig: args.kubeconfig,
                context: args.context,
                cluster_api: args.catalog == simulate::clusterapi::CATALOG,
                page_size: args.page_size,
            }),
            files: args.files,
            catalog: args.catalog,
            format: match args.output {
                OutputFormat::Table => simulate::Format::Table,
                OutputFormat::Json => simulate::Format::Json,
                OutputFormat::Yaml => simulate::Format::Yaml,
                OutputFormat::Html => simulate::Format::Html,
            },
            explain: args.explain,
            optimise: !args.no_optimise,
            snapshot: args.snapshot,
            ignore_budgets: args.ignore_budgets,
            repack: args.repack,
        }),
        Command::Crds(args) => crds::run(&args),
        Command::Convert { files } => convert::run(&files),
    }
}
