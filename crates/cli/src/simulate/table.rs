//! `-o table`: the plan for people. One row per new node, then the totals against the lower
//! bound, the existing nodes that receive pods, the pods that cannot be placed and why, and the
//! disruption commands for existing nodes with their savings per hour.

use std::fmt::Write as _;

use comfy_table::{CellAlignment, Table, presets};
use karpenter_solver::instance_type::find_for_pool;
use karpenter_solver::{InstanceType, Plan, Resources};

use super::output::Report;

const GI: f64 = (1u64 << 30) as f64;

/// Renders the report; `plan` supplies each claim's requests, `catalog` the allocatable of the
/// chosen instance types.
pub fn render(report: &Report, plan: &Plan, catalog: &[InstanceType]) -> String {
    let mut out = String::new();
    if report.node_claims.is_empty() {
        out.push_str("No new nodes needed.\n");
    } else {
        let mut table = Table::new();
        table.load_style(presets::UTF8_FULL_CONDENSED);
        table.set_header([
            "NODECLAIM",
            "NODEPOOL",
            "INSTANCE TYPE",
            "ZONE",
            "CAPACITY",
            "$/HOUR",
            "PODS",
            "CPU USED/ALLOC",
            "MEMORY USED/ALLOC",
        ]);
        for (c, planned) in report.node_claims.iter().zip(&plan.node_claims) {
            let alloc = find_for_pool(catalog, &c.node_pool, &c.instance_type)
                .map(InstanceType::allocatable)
                .unwrap_or_default();
            table.add_row([
                c.name.clone(),
                c.node_pool.clone(),
                c.instance_type.clone(),
                c.zone.clone(),
                c.capacity_type.clone(),
                format!("{:.4}", c.price_per_hour),
                c.pods.len().to_string(),
                usage(&planned.requests, &alloc, "cpu", 1000.0, ""),
                usage(&planned.requests, &alloc, "memory", GI, "Gi"),
            ]);
        }
        let pods: usize = report.node_claims.iter().map(|c| c.pods.len()).sum();
        table.add_row([
            "TOTAL".to_owned(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            format!("{:.4}", report.summary.price_per_hour),
            pods.to_string(),
            String::new(),
            String::new(),
        ]);
        for i in [5, 6, 7, 8] {
            if let Some(col) = table.column_mut(i) {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
        let _ = writeln!(out, "{table}");
    }
    let s = &report.summary;
    let ratio = match s.cost_ratio {
        Some(r) => format!("{r:.3}x the bound"),
        None => "no bound available".to_owned(),
    };
    let _ = writeln!(
        out,
        "\n{} new node(s) at ${:.4}/hour; lower bound ${:.4}/hour ({ratio}).",
        s.node_claims, s.price_per_hour, s.lower_bound_per_hour
    );
    let _ = writeln!(
        out,
        "{} pending pod(s) placed, {} unschedulable.",
        s.pods, s.unschedulable
    );
    if !report.buffer_pods.is_empty() {
        let _ = writeln!(
            out,
            "{} of them CapacityBuffer pod(s) (room kept, never run): {}",
            report.buffer_pods.len(),
            report.buffer_pods.join(", ")
        );
    }
    if !report.existing_nodes.is_empty() {
        let _ = writeln!(out, "\nPods placed on existing nodes:");
        for n in &report.existing_nodes {
            let _ = writeln!(out, "  {}: {}", n.name, n.pods.join(", "));
        }
    }
    if !report.unschedulable.is_empty() {
        let _ = writeln!(out, "\nUnschedulable pods:");
        for u in &report.unschedulable {
            let _ = writeln!(out, "  {}: {}", u.pod, u.reason);
        }
    }
    disruptions(&mut out, report);
    out
}

/// The disruption commands: what goes, what comes instead, and what it saves per hour.
fn disruptions(out: &mut String, report: &Report) {
    if !report.protected.is_empty() {
        let _ = writeln!(out, "\nExisting nodes kept from disruption:");
        for (node, why) in &report.protected {
            let _ = writeln!(out, "  {node}: {why}");
        }
    }
    let declined: Vec<_> = report
        .balanced_scores
        .iter()
        .filter(|b| b.decision == "rejected")
        .collect();
    if !declined.is_empty() {
        let _ = writeln!(
            out,
            "\nConsolidations Balanced NodePools declined (score below {}):",
            declined[0].threshold
        );
        for b in declined {
            let _ = writeln!(
                out,
                "  {} in {}: saves {:.1}% of the pool's cost for {:.1}% of its disruption (score {})",
                b.nodes.join(", "),
                b.node_pool,
                b.savings_fraction * 100.0,
                b.disruption_fraction * 100.0,
                b.score.map_or("∞".to_owned(), |s| format!("{s}")),
            );
        }
    }
    if report.disruptions.is_empty() {
        return;
    }
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    table.set_header(["REASON", "REMOVE NODES", "REPLACE WITH", "$/HOUR SAVED"]);
    for d in &report.disruptions {
        let with = if d.replacements.is_empty() {
            "-".to_owned()
        } else {
            d.replacements
                .iter()
                .map(|r| {
                    format!(
                        "{} ({} {} {}, {} pods)",
                        r.name,
                        r.instance_type,
                        r.zone,
                        r.capacity_type,
                        r.pods.len()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        table.add_row([
            d.reason.clone(),
            d.nodes.join("\n"),
            with,
            format!("{:.4}", d.savings_per_hour),
        ]);
    }
    if let Some(col) = table.column_mut(3) {
        col.set_cell_alignment(CellAlignment::Right);
    }
    let total: f64 = report.disruptions.iter().map(|d| d.savings_per_hour).sum();
    let nodes: usize = report.disruptions.iter().map(|d| d.nodes.len()).sum();
    let _ = writeln!(out, "\nDisruption of existing nodes:\n{table}");
    let _ = writeln!(
        out,
        "{} command(s) remove {nodes} node(s), saving ${total:.4}/hour.",
        report.disruptions.len()
    );
}

/// `used/allocatable (pct%)` of one resource, in `scale` units.
fn usage(used: &Resources, alloc: &Resources, name: &str, scale: f64, unit: &str) -> String {
    let (u, a) = (
        used.get(name) as f64 / scale,
        alloc.get(name) as f64 / scale,
    );
    let pct = if a > 0.0 { 100.0 * u / a } else { 0.0 };
    format!("{u:.2}/{a:.2}{unit} ({pct:.0}%)")
}
