//! The metrics names test: the names, types and label names we expose for the metrics
//! upstream's dashboards and users' alerts use match upstream's. The expected table is written
//! from upstream's metrics reference (website `reference/metrics.md` and `pkg/**/metrics.go` of
//! kubernetes-sigs/karpenter v1.x), not from our output.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// Upstream's per-node gauge labels: node name, phase, managed, one per core well-known label
/// (`karpenter.sh/nodepool` → `nodepool`, `topology.kubernetes.io/zone` → `zone`…), resource.
const NODE: &[&str] = &[
    "node_name",
    "phase",
    "managed",
    "nodepool",
    "zone",
    "region",
    "instance_type",
    "arch",
    "os",
    "capacity_type",
    "windows_build",
    "resource_type",
];

/// (sample name as queried, type, label names).
const EXPECTED: &[(&str, &str, &[&str])] = &[
    ("karpenter_nodes_allocatable", "gauge", NODE),
    ("karpenter_nodes_total_pod_requests", "gauge", NODE),
    ("karpenter_nodes_total_daemon_requests", "gauge", NODE),
    ("karpenter_nodes_system_overhead", "gauge", NODE),
    (
        "karpenter_nodepools_usage",
        "gauge",
        &["resource_type", "nodepool"],
    ),
    (
        "karpenter_nodepools_limit",
        "gauge",
        &["resource_type", "nodepool"],
    ),
    (
        "karpenter_nodepools_allowed_disruptions",
        "gauge",
        &["nodepool", "reason"],
    ),
    (
        "karpenter_nodeclaims_created_total",
        "counter",
        &["reason", "nodepool"],
    ),
    (
        "karpenter_nodeclaims_terminated_total",
        "counter",
        &["nodepool"],
    ),
    (
        "karpenter_nodeclaims_disrupted_total",
        "counter",
        &["reason", "nodepool"],
    ),
    (
        "karpenter_nodeclaims_unhealthy_disrupted_total",
        "counter",
        &["condition", "nodepool", "capacity_type", "image_id"],
    ),
    (
        "karpenter_nodeclaims_termination_duration_seconds",
        "histogram",
        &["nodepool"],
    ),
    (
        "karpenter_nodeclaims_instance_termination_duration_seconds",
        "histogram",
        &["nodepool"],
    ),
    ("karpenter_nodes_created_total", "counter", &["nodepool"]),
    ("karpenter_nodes_terminated_total", "counter", &["nodepool"]),
    ("karpenter_pods_startup_duration_seconds", "summary", &[]),
    (
        "karpenter_pods_eviction_requests_total",
        "counter",
        &["code"],
    ),
    (
        "karpenter_cloudprovider_duration_seconds",
        "histogram",
        &["controller", "method", "provider"],
    ),
    (
        "karpenter_cloudprovider_errors_total",
        "counter",
        &["controller", "method", "provider", "error"],
    ),
    ("karpenter_cluster_state_node_count", "gauge", &[]),
    ("karpenter_cluster_state_synced", "gauge", &[]),
    (
        "karpenter_cluster_utilization_percent",
        "gauge",
        &["resource_type"],
    ),
    (
        "karpenter_voluntary_disruption_decisions_total",
        "counter",
        &["decision", "reason", "consolidation_type"],
    ),
    (
        "karpenter_voluntary_disruption_failed_validations_total",
        "counter",
        &["consolidation_type"],
    ),
    (
        "karpenter_consolidation_moves_total",
        "counter",
        &["decision", "nodepool", "policy"],
    ),
    (
        "karpenter_consolidation_score",
        "histogram",
        &["decision", "nodepool", "policy"],
    ),
    (
        "karpenter_pods_disruption_initiated_total",
        "counter",
        &[
            "reason",
            "nodepool",
            "capacity_type",
            "consolidation_policy",
            "termination_mode",
        ],
    ),
];

/// One family of an exposition: its type and the label names of its samples (`le` and
/// `quantile` left out).
#[derive(Debug, Default)]
pub struct Family {
    /// `counter`, `gauge`, `histogram`, `summary`.
    pub kind: String,
    /// Label names seen on its samples.
    pub labels: BTreeSet<String>,
}

/// Reads a text exposition into families keyed by the name a query uses (counters with
/// `_total`: OpenMetrics declares them without it).
pub fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_string(), kind.to_string());
            }
        }
    }
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let sample = &line[..name_end];
        let (family, kind) = ["", "_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = sample.strip_suffix(suffix)?;
                let kind = types.get(base)?;
                let queried = if kind == "counter" { sample } else { base };
                Some((queried.to_string(), kind.clone()))
            })
            .unwrap_or_else(|| (sample.to_string(), "untyped".into()));
        let entry = out.entry(family).or_default();
        entry.kind = kind;
        if let Some(labels) = line[name_end..]
            .strip_prefix('{')
            .and_then(|l| l.split_once('}'))
            .map(|(l, _)| l)
        {
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                if let Some((k, _)) = pair.split_once('=')
                    && k != "le"
                    && k != "quantile"
                {
                    entry.labels.insert(k.trim().to_string());
                }
            }
        }
    }
    out
}

/// Whether `families` has every expected metric with upstream's type and label names; the
/// differences otherwise.
pub fn differences(families: &BTreeMap<String, Family>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, kind, labels) in EXPECTED {
        let want: BTreeSet<String> = labels.iter().map(|l| l.to_string()).collect();
        match families.get(*name) {
            None => out.push(format!("{name}: missing")),
            Some(f) if f.kind != *kind => out.push(format!("{name}: {} not {kind}", f.kind)),
            Some(f) if f.labels != want => {
                out.push(format!("{name}: labels {:?} not {want:?}", f.labels))
            }
            Some(_) => {}
        }
    }
    out
}

#[test]
fn names_types_and_labels_match_upstream() {
    let (m, r) = Metrics::new();
    // One series in each labelled family, so its labels show (values do not matter here).
    let pool = || Pool {
        nodepool: "p".into(),
    };
    let rp = || ReasonPool {
        reason: "r".into(),
        nodepool: "p".into(),
    };
    let res = || ResourcePool {
        resource_type: "cpu".into(),
        nodepool: "p".into(),
    };
    m.nodes_allocatable
        .get_or_create(&NodeLabels::default())
        .set(1.0);
    m.nodes_total_pod_requests
        .get_or_create(&NodeLabels::default())
        .set(1.0);
    m.nodes_total_daemon_requests
        .get_or_create(&NodeLabels::default())
        .set(1.0);
    m.nodes_system_overhead
        .get_or_create(&NodeLabels::default())
        .set(1.0);
    m.nodepools_usage.get_or_create(&res()).set(1.0);
    m.nodepools_limit.get_or_create(&res()).set(1.0);
    m.allowed_disruptions.get_or_create(&rp()).set(1);
    m.nodeclaims_created.get_or_create(&rp()).inc();
    m.nodeclaims_terminated.get_or_create(&pool()).inc();
    m.nodeclaims_disrupted.get_or_create(&rp()).inc();
    m.nodeclaims_unhealthy_disrupted
        .get_or_create(&UnhealthyDisrupted {
            condition: "ready".into(),
            nodepool: "p".into(),
            capacity_type: "spot".into(),
            image_id: "i".into(),
        })
        .inc();
    m.nodeclaims_termination_duration
        .get_or_create(&pool())
        .observe(1.0);
    m.nodeclaims_instance_termination_duration
        .get_or_create(&pool())
        .observe(1.0);
    m.nodes_created.get_or_create(&pool()).inc();
    m.nodes_terminated.get_or_create(&pool()).inc();
    m.pods_startup_duration.observe(1.0);
    m.eviction_requests
        .get_or_create(&Code { code: "200".into() })
        .inc();
    let call = MethodLabels {
        controller: "c".into(),
        method: "Create".into(),
        provider: "kwok".into(),
    };
    m.cloudprovider_duration.get_or_create(&call).observe(0.1);
    m.cloudprovider_errors
        .get_or_create(&ProviderError {
            controller: "c".into(),
            method: "Create".into(),
            provider: "kwok".into(),
            error: "transient".into(),
        })
        .inc();
    m.cluster_utilization
        .get_or_create(&ResourceType {
            resource_type: "cpu".into(),
        })
        .set(1.0);
    m.disruption_decisions
        .get_or_create(&Decision {
            decision: "delete".into(),
            reason: "empty".into(),
            consolidation_type: String::new(),
        })
        .inc();
    m.disruption_failed_validations
        .get_or_create(&ConsolidationType {
            consolidation_type: "single".into(),
        })
        .inc();
    let rejected = Move {
        decision: "rejected".into(),
        nodepool: "p".into(),
        policy: "Balanced".into(),
    };
    m.consolidation_moves.get_or_create(&rejected).inc();
    m.consolidation_score
        .get_or_create(&rejected)
        .observe(0.375);
    m.pods_disruption_initiated
        .get_or_create(&PodsDisrupted {
            reason: "underutilized".into(),
            nodepool: "p".into(),
            capacity_type: "spot".into(),
            consolidation_policy: "when_empty_or_underutilized".into(),
            termination_mode: "graceful".into(),
        })
        .inc_by(3);
    let families = parse(&encode(&r, Some(&m)).unwrap());
    let diff = differences(&families);
    assert!(diff.is_empty(), "{diff:#?}");
}

#[test]
fn a_wrong_label_or_type_is_caught() {
    let text = "# TYPE karpenter_nodepools_usage gauge\nkarpenter_nodepools_usage{nodepool=\"p\"} 1\n\
                # TYPE karpenter_cluster_state_synced counter\nkarpenter_cluster_state_synced_total 1\n";
    let diff = differences(&parse(text));
    assert!(
        diff.iter()
            .any(|d| d.starts_with("karpenter_nodepools_usage: labels")),
        "{diff:?}"
    );
    assert!(
        diff.iter()
            .any(|d| d == "karpenter_cluster_state_synced: missing"),
        "{diff:?}"
    );
}
