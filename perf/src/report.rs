//! The per-size summary and the Markdown table written at the end of a run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::fleet::Orphans;
use crate::simulate::Plan;

/// What the table shows for one size (filled as far as the run got).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SizeSummary {
    pub size: usize,
    pub down_to: usize,
    pub wall_seconds: f64,
    pub error: Option<String>,
    pub sim_up: Option<Plan>,
    pub sim_down: Option<Plan>,
    pub up_seconds: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub up_nodes: usize,
    pub up_price: f64,
    /// Peak RSS over every controller process of the run.
    pub rss_mb: f64,
    /// CPU seconds of the controller until all pods ran, and over the whole run.
    pub cpu_up: f64,
    pub cpu_seconds: f64,
    pub api_up: BTreeMap<String, u64>,
    pub orphans: Option<Orphans>,
    pub duplicates: usize,
    pub settled_price: Option<f64>,
    pub settled_nodes: usize,
    pub down_t125: Option<f64>,
    pub down_t110: Option<f64>,
    pub down_ratio: Option<f64>,
    pub commands: usize,
    pub nodes_per_command: Option<f64>,
    pub evicted_per_node: Option<f64>,
    /// The longest Pending -> Running (s) of the pods recreated during the scale-down (those
    /// replacing evicted ones).
    pub rescheduled_max_wait: Option<f64>,
    /// Their p99 (nearest rank).
    pub rescheduled_p99_wait: Option<f64>,
    /// NodeClaims provisioning (not a disruption command) launched during the scale-down
    /// (`None`: no controller log to read).
    pub provisioning_claims_down: Option<usize>,
    pub budget_exceeded: Option<bool>,
    pub max_disrupting: usize,
    pub allowed_at_max: usize,
}

impl SizeSummary {
    pub fn new(size: usize, down_to: usize) -> Self {
        Self {
            size,
            down_to,
            ..Self::default()
        }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn reached(v: Option<f64>) -> String {
    v.map_or("not reached".into(), |v| format!("{v:.0}"))
}

/// `GET 1.2k, LIST 40, ...` (the verbs with the most requests first).
fn verbs(m: &BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    v.iter()
        .map(|(k, n)| {
            if **n >= 10_000 {
                format!("{k} {:.0}k", **n as f64 / 1000.0)
            } else {
                format!("{k} {n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Markdown table, one row per size.
pub fn table(rows: &[SizeSummary]) -> String {
    let mut out = String::from(
        "| pods | all Running s | p50 / p99 s | nodes | $/h live / simulate / bound | settled $/h | peak RSS MB | CPU s (scale-up / run) | controller API requests (scale-up) | orphans | scale-down to | → 1.25x / 1.10x s | final ratio | commands (nodes/cmd) | evicted/node | rescheduled-pod wait max / p99 s | NodeClaims launched by provisioning (scale-down) | budget kept (max disrupting / allowed) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (sim, bound) = r.sim_up.map_or((None, None), |p| {
            (Some(p.price_per_hour), Some(p.lower_bound_per_hour))
        });
        let orphans = r.orphans.map_or("–".into(), |o| {
            format!(
                "{}+{} (dup {})",
                o.instances_without_claim, o.claims_without_instance, r.duplicates
            )
        });
        let budget = match r.budget_exceeded {
            Some(false) => format!("yes ({} / {})", r.max_disrupting, r.allowed_at_max),
            Some(true) => format!("**no** ({} / {})", r.max_disrupting, r.allowed_at_max),
            None => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} | {} | {:.2} / {} / {} | {} | {:.0} | {:.1} / {:.1} | {} | {} | {} | {} / {} | {} | {} ({}) | {} | {} / {} | {} | {} |{}",
            r.size,
            opt(r.up_seconds, 0),
            opt(r.p50, 0),
            opt(r.p99, 0),
            r.up_nodes,
            r.up_price,
            opt(sim, 2),
            opt(bound, 2),
            opt(r.settled_price, 2),
            r.rss_mb,
            r.cpu_up,
            r.cpu_seconds,
            verbs(&r.api_up),
            orphans,
            r.down_to,
            reached(r.down_t125),
            reached(r.down_t110),
            opt(r.down_ratio, 2),
            r.commands,
            opt(r.nodes_per_command, 1),
            opt(r.evicted_per_node, 1),
            opt(r.rescheduled_max_wait, 0),
            opt(r.rescheduled_p99_wait, 0),
            r.provisioning_claims_down
                .map_or("–".into(), |n| n.to_string()),
            budget,
            r.error
                .as_ref()
                .map_or(String::new(), |e| format!(" error: {e}")),
        );
    }
    out
}
