//! `karpenter simulate`: plan nodes for pending pods offline (design.md §6).
//!
//! manifests (YAML) → [`convert`] (through `karpenter_api::solver_input`, shared with the
//! controller) → solver `Problem` → `solve` → [`output`] report → JSON, YAML, [`table`] or
//! [`html`]; or `explain` for one pod. NodeOverlays in the input change the catalog first
//! ([`overlays`]). Karpenter-managed Nodes also go through the
//! [`disruption`] planner, and the report's [`utilization`] follows the nodes through both.
//!
//! `--from-cluster` ([`live`]) only changes where the YAML comes from: the cluster is listed
//! into the same named inputs files give, so the rest is the `-f` path, and `--snapshot`
//! writes those inputs for `-f` to replay. `--repack` adds the [`repack`] view.

pub mod buffers;
pub mod catalog;
pub mod clusterapi;
pub mod convert;
#[cfg(test)]
mod convert_tests;
pub mod disruption;
pub mod html;
pub mod live;
pub mod manifests;
#[cfg(test)]
mod manifests_tests;
pub mod output;
pub mod overlays;
pub mod pools;
pub mod repack;
pub mod statics;
pub mod table;
pub mod utilization;
pub mod yaml;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use karpenter_solver::{Options, explain, solve};

use manifests::Input;

/// The bundled example (`examples/simulate/`), used when no `-f` is given so a new user sees a
/// plan at once from any directory.
const BUNDLED: [(&str, &str); 2] = [
    (
        "nodepools.yaml",
        include_str!("../../../../examples/simulate/nodepools.yaml"),
    ),
    (
        "workloads.yaml",
        include_str!("../../../../examples/simulate/workloads.yaml"),
    ),
];

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// For people.
    Table,
    /// The §6 JSON document.
    Json,
    /// The same document as YAML.
    Yaml,
    /// One self-contained HTML page of the same report.
    Html,
}

/// What `simulate` was asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// Manifest files/directories (`-` for stdin); empty = the bundled example.
    pub files: Vec<PathBuf>,
    /// `kwok`, `aws`, `clusterapi` (the input's MachineDeployments) or a catalog JSON path.
    pub catalog: String,
    /// Output format.
    pub format: Format,
    /// `namespace/pod` to explain instead of printing the plan.
    pub explain: Option<String>,
    /// Run the packing improvement pass.
    pub optimise: bool,
    /// Read the cluster instead of `files`.
    pub from_cluster: Option<live::Target>,
    /// With `from_cluster`: also write what was read here (multi-document YAML).
    pub snapshot: Option<PathBuf>,
    /// Plan disruption as if every NodePool's budgets allowed everything.
    pub ignore_budgets: bool,
    /// Add the repack view (every running pod planned from scratch).
    pub repack: bool,
}

/// Runs `simulate`; writes the result to stdout and warnings to stderr.
pub fn run(config: &Config) -> Result<()> {
    let inputs = if let Some(target) = &config.from_cluster {
        let inputs = read_cluster(target)?;
        if let Some(path) = &config.snapshot {
            std::fs::write(path, live::snapshot(&inputs))
                .with_context(|| format!("cannot write the snapshot {}", path.display()))?;
        }
        inputs
    } else if config.files.is_empty() {
        bundled()
    } else {
        manifests::read_paths(&config.files).context("cannot read the manifests")?
    };
    let mut manifests = manifests::parse(&inputs).context("cannot read the manifests")?;
    drop(inputs);
    let mut warnings = manifests.warnings.clone();
    let from_machine_deployments = config.catalog == clusterapi::CATALOG;
    let instance_types = if from_machine_deployments {
        Vec::new() // set below, once the NodePools (and their taints) are read
    } else {
        catalog::load(&config.catalog)
            .with_context(|| format!("cannot load the catalog {:?}", config.catalog))?
    };
    let buffer_pods =
        buffers::expand(&mut manifests, &mut warnings).context("cannot use the manifests")?;
    let mut converted = convert::problem(&manifests, instance_types, &mut warnings)
        .context("cannot use the manifests")?;
    manifests.release_pending_specs();
    if from_machine_deployments {
        clusterapi::apply(
            &mut converted.problem,
            &manifests.machine_deployments,
            &manifests.machines,
            &mut warnings,
        )?;
    } else {
        warnings.extend(manifests.cluster_api_skipped.iter().cloned());
        if !manifests.machine_deployments.is_empty() {
            warnings.push(format!(
                "warning: skipping {} MachineDeployment(s): they are the catalog only with --catalog clusterapi",
                manifests.machine_deployments.len()
            ));
        }
        if !manifests.machines.is_empty() {
            warnings.push(format!(
                "warning: skipping {} Machine(s): read only with --catalog clusterapi (node groups' minimum sizes)",
                manifests.machines.len()
            ));
        }
    }
    overlays::apply(&manifests, &mut converted.problem, &mut warnings)
        .context("cannot use the manifests")?;
    print_warnings(&warnings);
    let options = Options {
        optimise: config.optimise,
        ..Options::default()
    };
    let problem = &converted.problem;

    if let Some(pod) = &config.explain {
        let key = if pod.contains('/') {
            pod.clone()
        } else {
            format!("default/{pod}")
        };
        if let Some(node) = converted.bound.get(&key) {
            return emit(&format!(
                "{key} is already running on node {node} (spec.nodeName); simulate only plans pending pods.\n"
            ));
        }
        if !problem.pods.iter().any(|p| p.key() == key) {
            bail!(
                "pod {key} is not a pending pod of the input (pods are keyed NAMESPACE/NAME; workloads make <workload>-<i>)"
            );
        }
        let lines = explain(problem, &key, &options).context("the solver refused the input")?;
        let mut out = format!("Why {key} goes where it goes:\n");
        for line in lines {
            out.push_str("  ");
            out.push_str(&line);
            out.push('\n');
        }
        return emit(&out);
    }

    let mut plan = solve(problem, &options).context("the solver refused the input")?;
    let mut notes = Vec::new();
    statics::complete(&converted.static_pools, problem, &mut plan, &mut notes);
    let mut report = output::report(&plan);
    report.buffer_pods = buffer_pods;
    let now = disruption::reference_now(&manifests);
    let mut disruption_plan = None;
    if let Some(mut dp) = disruption::problem(&manifests, &converted, &plan, now, &mut notes) {
        if from_machine_deployments {
            dp.node_groups =
                clusterapi::node_groups(&manifests.machine_deployments, &manifests.machines);
        }
        if config.ignore_budgets {
            // An empty budget list limits nothing (the planner's contract).
            dp.policies.iter_mut().for_each(|p| p.budgets.clear());
        }
        let planned =
            disruption::plan(&dp, now).context("the disruption planner refused the input")?;
        notes.extend(planned.notes.iter().map(|n| format!("note: {n}")));
        report.disruptions = output::disruptions(&planned);
        report.balanced_scores = output::balanced_scores(&planned);
        report.protected = planned
            .blocked
            .iter()
            .map(|b| (b.node.clone(), b.reason.clone()))
            .collect();
        disruption_plan = Some(planned);
    }
    report.utilization = utilization::utilization(problem, &plan, disruption_plan.as_ref());
    if config.repack {
        report.repack = Some(
            repack::repack(&manifests, &converted, &options)
                .context("the solver refused the repack")?,
        );
    }
    print_warnings(&notes);
    let text = match config.format {
        Format::Json => output::to_json(&report).context("cannot render JSON")?,
        Format::Yaml => output::to_yaml(&report).context("cannot render YAML")?,
        Format::Html => html::render(&report),
        Format::Table => {
            let mut text = table::render(&report, &plan, &problem.instance_types);
            if let Some(r) = &report.repack {
                text.push_str(&repack::render(r));
            }
            text
        }
    };
    let emitted = emit(&text);
    // The process ends here: freeing the input object by object would take ~4% of the run at
    // 20 000 pods, for memory the exit gives back at once.
    std::mem::forget((manifests, converted, plan, report, disruption_plan));
    emitted
}

/// Lists the cluster (blocking: simulate is otherwise synchronous) and prints what was not
/// found.
fn read_cluster(target: &live::Target) -> Result<Vec<Input>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let read = runtime
        .block_on(async {
            let client = live::client(target).await?;
            live::read(&client, target).await
        })
        .context("cannot read the cluster")?;
    print_warnings(&read.notes);
    Ok(read.inputs)
}

fn bundled() -> Vec<Input> {
    BUNDLED
        .iter()
        .map(|(name, text)| Input {
            name: format!("<bundled>/{name}"),
            text: (*text).to_owned(),
        })
        .collect()
}

/// Each distinct warning once, in order (a workload's replicas would repeat its warnings).
fn print_warnings(warnings: &[String]) {
    let mut seen = std::collections::BTreeSet::new();
    for w in warnings {
        if seen.insert(w.as_str()) {
            eprintln!("{w}");
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}
