//! Expected verdicts worked out by hand from the 20% rule (rounded up) and the tolerations.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::NodeStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

const T0: &str = "2026-12-01T00:00:00Z";

/// Kwok's policies: Ready False or Unknown for 10 minutes.
fn policies() -> Vec<RepairPolicy> {
    ["False", "Unknown"]
        .map(|status| RepairPolicy {
            condition_type: "Ready".into(),
            condition_status: status.into(),
            toleration: Duration::from_secs(600),
        })
        .to_vec()
}

fn node(name: &str, pool: Option<&str>, conditions: &[(&str, &str, Option<&str>)]) -> Arc<Node> {
    let labels: BTreeMap<String, String> = pool
        .map(|p| (NODE_POOL_LABEL.to_string(), p.to_string()))
        .into_iter()
        .collect();
    Arc::new(Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(
                conditions
                    .iter()
                    .map(|(type_, status, since)| NodeCondition {
                        type_: (*type_).into(),
                        status: (*status).into(),
                        last_transition_time: since.map(|s| Time(t(s))),
                        ..NodeCondition::default()
                    })
                    .collect(),
            ),
            ..NodeStatus::default()
        }),
    })
}

fn ready(name: &str, pool: &str) -> Arc<Node> {
    node(name, Some(pool), &[("Ready", "True", Some(T0))])
}

fn not_ready(name: &str, pool: &str) -> Arc<Node> {
    node(name, Some(pool), &[("Ready", "False", Some(T0))])
}

fn verdict(n: &Node, pool: Option<&str>, all: &[Arc<Node>], now: &str) -> Verdict {
    decide(n, pool, &Census::new(all, &policies()), &policies(), t(now))
}

#[test]
fn twenty_percent_rounded_up() {
    for (total, allowed) in [(0, 0), (1, 1), (3, 1), (5, 1), (6, 2), (10, 2), (11, 3)] {
        assert_eq!(allowed_unhealthy(total), allowed, "{total} nodes");
    }
}

#[test]
fn a_ready_node_is_healthy() {
    let n = ready("a", "p");
    assert_eq!(
        verdict(&n, Some("p"), std::slice::from_ref(&n), T0),
        Verdict::Healthy
    );
    // Ready=True matches no policy even long after its transition.
    assert_eq!(
        verdict(
            &n,
            Some("p"),
            std::slice::from_ref(&n),
            "2027-01-01T00:00:00Z"
        ),
        Verdict::Healthy
    );
}

#[test]
fn repaired_only_after_the_toleration() {
    let n = not_ready("a", "p");
    let all = [n.clone()];
    let u = Unhealthy {
        condition: "Ready".into(),
        status: "False".into(),
        repair_at: Some(t("2026-12-01T00:10:00Z")),
    };
    assert_eq!(
        verdict(&n, Some("p"), &all, "2026-12-01T00:09:59Z"),
        Verdict::Tolerated(u.clone())
    );
    // One node of one: 1 unhealthy ≤ ceil(20% × 1) = 1.
    assert_eq!(
        verdict(&n, Some("p"), &all, "2026-12-01T00:10:00Z"),
        Verdict::Repair(u)
    );
}

#[test]
fn unknown_is_unhealthy_too_and_no_transition_time_is_never_due() {
    let n = node("a", Some("p"), &[("Ready", "Unknown", Some(T0))]);
    assert!(matches!(
        verdict(
            &n,
            Some("p"),
            std::slice::from_ref(&n),
            "2026-12-01T00:10:00Z"
        ),
        Verdict::Repair(_)
    ));
    let n = node("a", Some("p"), &[("Ready", "False", None)]);
    assert!(matches!(
        verdict(
            &n,
            Some("p"),
            std::slice::from_ref(&n),
            "2027-01-01T00:00:00Z"
        ),
        Verdict::Tolerated(_)
    ));
}

#[test]
fn more_than_twenty_percent_unhealthy_blocks() {
    let later = "2026-12-01T01:00:00Z";
    // 2 of 5 unhealthy: ceil(1.0) = 1 allowed → blocked.
    let mut all: Vec<Arc<Node>> = vec![not_ready("a", "p"), not_ready("b", "p")];
    all.extend((0..3).map(|i| ready(&format!("r{i}"), "p")));
    assert_eq!(
        verdict(&all[0], Some("p"), &all, later),
        Verdict::Blocked {
            unhealthy: Unhealthy {
                condition: "Ready".into(),
                status: "False".into(),
                repair_at: Some(t("2026-12-01T00:10:00Z")),
            },
            scope: Scope::NodePool("p".into()),
            unhealthy_nodes: 2,
            nodes: 5,
        }
    );
    // 2 of 10: ceil(2.0) = 2 allowed → repaired.
    all.extend((3..8).map(|i| ready(&format!("r{i}"), "p")));
    assert!(matches!(
        verdict(&all[0], Some("p"), &all, later),
        Verdict::Repair(_)
    ));
    // 1 of 3: ceil(0.6) = 1 allowed → repaired (33% is not "more than 20%" after rounding).
    let three = [not_ready("a", "p"), ready("b", "p"), ready("c", "p")];
    assert!(matches!(
        verdict(&three[0], Some("p"), &three, later),
        Verdict::Repair(_)
    ));
}

#[test]
fn a_node_within_its_toleration_still_counts_as_unhealthy() {
    // b turned NotReady a minute before `now`: not due itself, but it is unhealthy, so a (due)
    // is one of 2 unhealthy of 5 → blocked.
    let now = "2026-12-01T00:20:00Z";
    let mut all = vec![
        not_ready("a", "p"),
        node(
            "b",
            Some("p"),
            &[("Ready", "False", Some("2026-12-01T00:19:00Z"))],
        ),
    ];
    all.extend((0..3).map(|i| ready(&format!("r{i}"), "p")));
    assert!(matches!(
        verdict(&all[0], Some("p"), &all, now),
        Verdict::Blocked { .. }
    ));
}

#[test]
fn only_the_nodepools_own_nodes_count() {
    // Pool q is all unhealthy; pool p has 1 unhealthy of 1.
    let mut all = vec![not_ready("a", "p")];
    all.extend((0..4).map(|i| not_ready(&format!("q{i}"), "q")));
    assert!(matches!(
        verdict(&all[0], Some("p"), &all, "2026-12-01T01:00:00Z"),
        Verdict::Repair(_)
    ));
}

#[test]
fn a_nodeclaim_without_nodepool_counts_the_whole_cluster() {
    // 2 unhealthy of 5 Nodes in the cluster (in two pools and none): blocked cluster-wide;
    // the same Node counted in pool p alone (1 of 1) would be repaired.
    let all = vec![
        node("x", None, &[("Ready", "False", Some(T0))]),
        not_ready("a", "p"),
        ready("b", "q"),
        ready("c", "q"),
        ready("d", "q"),
    ];
    let later = "2026-12-01T01:00:00Z";
    assert!(matches!(
        verdict(&all[0], None, &all, later),
        Verdict::Blocked {
            scope: Scope::Cluster,
            unhealthy_nodes: 2,
            nodes: 5,
            ..
        }
    ));
    assert!(matches!(
        verdict(&all[1], Some("p"), &all, later),
        Verdict::Repair(_)
    ));
}

#[test]
fn the_condition_due_first_wins() {
    let mut ps = policies();
    ps.push(RepairPolicy {
        condition_type: "KernelReady".into(),
        condition_status: "False".into(),
        toleration: Duration::from_secs(1800),
    });
    // Ready=Unknown since T0 is due at 00:10; KernelReady=False since 23:35 the day before is
    // due at 00:05: that one is reported.
    let n = node(
        "a",
        Some("p"),
        &[
            ("Ready", "Unknown", Some(T0)),
            ("KernelReady", "False", Some("2026-11-30T23:35:00Z")),
        ],
    );
    let u = unhealthy(&n, &ps);
    assert_eq!(
        u.map(|u| (u.condition, u.repair_at)),
        Some(("KernelReady".to_string(), Some(t("2026-12-01T00:05:00Z"))))
    );
    // Ten minutes later KernelReady recovered: Ready (due at 00:10) is reported.
    let n = node(
        "a",
        Some("p"),
        &[
            ("Ready", "Unknown", Some(T0)),
            ("KernelReady", "True", Some("2026-12-01T00:04:00Z")),
        ],
    );
    assert_eq!(
        unhealthy(&n, &ps).map(|u| u.condition),
        Some("Ready".to_string())
    );
}

#[test]
fn condition_labels_are_snake_case() {
    assert_eq!(snake_case("Ready"), "ready");
    assert_eq!(snake_case("KWOKUnhealthy"), "kwok_unhealthy");
    assert_eq!(
        snake_case("AcceleratedHardwareReady"),
        "accelerated_hardware_ready"
    );
}
