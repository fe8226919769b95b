//! The round builder on hand-made snapshots (no API server).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    Container, Namespace, NodeSelector, NodeSelectorRequirement as K8sNodeSelectorRequirement,
    NodeSelectorTerm, NodeSpec, NodeStatus, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec,
    PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec, ResourceRequirements,
    Taint as K8sTaint, TopologySpreadConstraint, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::ZONE_LABEL;
use karpenter_api::v1::{
    Condition, NodeClaimSpec, NodeClaimStatus, NodeClaimTemplate, NodeClaimTemplateSpec, NodePool,
    NodePoolSpec, NodeSelectorRequirementWithMinValues, Operator, Taint, TaintEffect,
};
use karpenter_solver::WhenUnsatisfiable;
use kube::api::ObjectMeta;

use super::*;
use crate::pods::tests::unschedulable;

type KubePod = k8s_openapi::api::core::v1::Pod;

/// A pod as the state stores it.
fn stored(pod: KubePod) -> Arc<Pod> {
    Arc::new(pod.into())
}

pub(crate) const WINDOW: Duration = Duration::from_secs(20);

pub(crate) fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

fn with_cpu(mut pod: KubePod, cpu: &str) -> KubePod {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    spec.containers = vec![Container {
        name: "c".into(),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", cpu)])),
            ..Default::default()
        }),
        ..Default::default()
    }];
    pod
}

fn pending(name: &str) -> Arc<Pod> {
    stored(with_cpu(unschedulable(name), "1"))
}

fn bound(name: &str, node: &str) -> Arc<Pod> {
    let mut p = with_cpu(unschedulable(name), "1");
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    p.status.as_mut().unwrap().phase = Some("Running".into());
    stored(p)
}

pub(crate) fn node(name: &str, provider_id: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(ZONE_LABEL.to_string(), "z1".to_string())])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(provider_id.into()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(quantities(&[
                ("cpu", "4"),
                ("memory", "8Gi"),
                ("pods", "110"),
            ])),
            ..Default::default()
        }),
    }
}

pub(crate) fn claim(name: &str, provider_id: Option<&str>, initialized: bool) -> NodeClaim {
    let mut c = NodeClaim::new(
        name,
        NodeClaimSpec {
            taints: Vec::new(),
            startup_taints: vec![Taint {
                key: "example.com/starting".into(),
                value: None,
                effect: TaintEffect::NoSchedule,
            }],
            requirements: vec![
                NodeSelectorRequirementWithMinValues {
                    key: INSTANCE_TYPE_LABEL.into(),
                    operator: Operator::In,
                    values: vec!["c-2x-amd64-linux".into(), "c-4x-amd64-linux".into()],
                    min_values: None,
                },
                NodeSelectorRequirementWithMinValues {
                    key: ZONE_LABEL.into(),
                    operator: Operator::In,
                    values: vec!["test-zone-b".into()],
                    min_values: None,
                },
            ],
            resources: Default::default(),
            node_class_ref: Default::default(),
            termination_grace_period: None,
            expire_after: "Never".into(),
        },
    );
    c.metadata.labels = Some(BTreeMap::from([(
        NODE_POOL_LABEL.to_string(),
        "np".to_string(),
    )]));
    let mut status = NodeClaimStatus {
        provider_id: provider_id.map(str::to_string),
        ..Default::default()
    };
    if initialized {
        status.conditions.push(Condition {
            type_: CONDITION_INITIALIZED.into(),
            status: "True".into(),
            reason: Some("Initialized".into()),
            message: None,
            last_transition_time: None,
            observed_generation: None,
        });
    }
    c.status = Some(status);
    c
}

pub(crate) fn pool() -> NodePool {
    NodePool::new(
        "np",
        NodePoolSpec {
            template: NodeClaimTemplate {
                metadata: Default::default(),
                spec: NodeClaimTemplateSpec::default(),
            },
            disruption: Default::default(),
            limits: quantities(&[("cpu", "100")]),
            weight: None,
            replicas: None,
        },
    )
}

pub(crate) fn catalogs() -> BTreeMap<String, Vec<InstanceType>> {
    BTreeMap::from([("np".to_string(), karpenter_providers::kwok::catalog())])
}

fn build_now(s: &Snapshot, nominations: &HashMap<String, Nomination>, now: Instant) -> Round {
    build(s, &catalogs(), nominations, now, WINDOW)
}

fn existing<'a>(round: &'a Round, name: &str) -> &'a ExistingNode {
    round
        .problem
        .existing_nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap()
}

fn pod_names(node: &ExistingNode) -> Vec<&str> {
    node.pods.iter().map(|p| p.name.as_str()).collect()
}

#[test]
fn pending_pods_carry_topology_spread_and_anti_affinity() {
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
        ..Default::default()
    };
    let mut p = with_cpu(unschedulable("web-0"), "1");
    p.metadata.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
    let spec = p.spec.as_mut().unwrap();
    spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: ZONE_LABEL.into(),
        when_unsatisfiable: "DoNotSchedule".into(),
        label_selector: Some(selector.clone()),
        ..Default::default()
    }]);
    spec.affinity = Some(k8s_openapi::api::core::v1::Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(selector),
                topology_key: HOSTNAME_LABEL.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let s = Snapshot {
        pods: vec![stored(p)],
        node_pools: vec![Arc::new(pool())],
        ..Default::default()
    };
    let round = build_now(&s, &HashMap::new(), Instant::now());
    assert_eq!(round.pending.len(), 1);
    let view = &round.problem.pods[0];
    assert_eq!(view.topology_spread.len(), 1);
    assert_eq!(view.topology_spread[0].topology_key, ZONE_LABEL);
    assert_eq!(
        view.topology_spread[0].when_unsatisfiable,
        WhenUnsatisfiable::DoNotSchedule
    );
    assert_eq!(view.pod_anti_affinity.len(), 1);
    assert_eq!(round.problem.node_pools.len(), 1);
    let names = round.problem.node_pools[0].instance_types.as_ref().unwrap();
    assert_eq!(names.len(), karpenter_providers::kwok::catalog().len());
}

#[test]
fn pods_kube_scheduler_has_not_judged_are_solved_gated_ones_are_not() {
    let mut fresh = with_cpu(unschedulable("fresh"), "1");
    fresh.status.as_mut().unwrap().conditions = None;
    let mut gated = fresh.clone();
    gated.metadata.name = Some("gated".into());
    gated.spec.as_mut().unwrap().scheduling_gates =
        Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
            name: "example.com/hold".into(),
        }]);
    let mut elsewhere = fresh.clone();
    elsewhere.metadata.name = Some("elsewhere".into());
    elsewhere.spec.as_mut().unwrap().scheduler_name = Some("other-scheduler".into());
    let s = Snapshot {
        pods: vec![
            stored(fresh),
            stored(gated),
            stored(elsewhere),
            pending("judged"),
        ],
        ..Default::default()
    };
    let round = build_now(&s, &HashMap::new(), Instant::now());
    assert_eq!(
        round.pending.keys().collect::<Vec<_>>(),
        vec!["ns/fresh", "ns/judged"]
    );
    assert_eq!(round.problem.pods.len(), 2);
}

#[test]
fn invalid_pods_are_reported_not_solved() {
    let p = with_cpu(unschedulable("bad"), "lots");
    let s = Snapshot {
        pods: vec![stored(p), pending("good")],
        ..Default::default()
    };
    let round = build_now(&s, &HashMap::new(), Instant::now());
    assert_eq!(round.invalid.len(), 1);
    assert!(
        round.invalid[0].1.contains("Pod ns/bad"),
        "{}",
        round.invalid[0].1
    );
    assert_eq!(round.pending.keys().collect::<Vec<_>>(), vec!["ns/good"]);
}

#[test]
fn in_flight_claims_are_capacity_with_their_nominated_pods() {
    let s = Snapshot {
        pods: vec![pending("a"), pending("b")],
        node_claims: vec![Arc::new(claim("np-x", None, false))],
        node_pools: vec![Arc::new(pool())],
        ..Default::default()
    };
    let now = Instant::now();
    let nominations = HashMap::from([(
        "uid-a".to_string(),
        Nomination {
            target: "np-x".into(),
            at: now,
        },
    )]);
    let round = build_now(&s, &nominations, now);
    assert_eq!(round.pending.keys().collect::<Vec<_>>(), vec!["ns/b"]);
    let n = existing(&round, "np-x");
    assert_eq!(pod_names(n), vec!["a"], "nominated pod rides on the claim");
    assert_eq!(n.labels[HOSTNAME_LABEL], "np-x");
    assert_eq!(
        n.labels[ZONE_LABEL], "test-zone-b",
        "pinned by a requirement"
    );
    assert_eq!(n.labels[NODE_POOL_LABEL], "np");
    // The smaller of the two allowed types.
    let small = karpenter_providers::kwok::catalog()
        .into_iter()
        .find(|i| i.name == "c-2x-amd64-linux")
        .unwrap();
    assert_eq!(n.allocatable, small.allocatable());
    assert_eq!(round.in_flight["np-x"], "np-x");
    assert_eq!(
        round.problem.node_pools[0].usage.get(NODES),
        1,
        "claims count against limits"
    );
}

#[test]
fn nominations_lapse_once_the_target_is_up_or_gone() {
    let claims = vec![
        Arc::new(claim("up", Some("kwok://up"), true)),
        Arc::new(claim("starting", Some("kwok://starting"), false)),
    ];
    let s = Snapshot {
        pods: vec![pending("a"), pending("b"), pending("c")],
        node_claims: claims,
        nodes: vec![
            Arc::new(node("up", "kwok://up")),
            Arc::new(node("starting", "kwok://starting")),
        ],
        node_pools: vec![Arc::new(pool())],
        ..Default::default()
    };
    let t0 = Instant::now();
    let nom = |target: &str| Nomination {
        target: target.into(),
        at: t0,
    };
    let nominations = HashMap::from([
        ("uid-a".to_string(), nom("up")),
        ("uid-b".to_string(), nom("starting")),
        ("uid-c".to_string(), nom("vanished")),
    ]);
    let later = t0 + WINDOW + Duration::from_secs(1);
    let round = build_now(&s, &nominations, later);
    // a: its node is initialized and the window passed; c: its target is gone.
    assert_eq!(
        round.pending.keys().collect::<Vec<_>>(),
        vec!["ns/a", "ns/c"]
    );
    assert_eq!(pod_names(existing(&round, "starting")), vec!["b"]);
    // Within the window everything holds except the vanished target.
    let round = build_now(&s, &nominations, t0);
    assert_eq!(round.pending.keys().collect::<Vec<_>>(), vec!["ns/c"]);
    assert_eq!(pod_names(existing(&round, "up")), vec!["a"]);
}

#[test]
fn leaving_nodes_offer_no_room_and_starting_nodes_lose_startup_taints() {
    let mut deleting = node("deleting", "kwok://deleting");
    deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    let mut disrupted = node("disrupted", "kwok://disrupted");
    disrupted.spec.as_mut().unwrap().taints = Some(vec![K8sTaint {
        key: DISRUPTED_TAINT_KEY.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    }]);
    let mut starting = node("starting", "kwok://starting");
    starting.spec.as_mut().unwrap().taints = Some(vec![
        K8sTaint {
            key: "example.com/starting".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        },
        K8sTaint {
            key: UNREGISTERED_TAINT_KEY.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        },
        K8sTaint {
            key: "example.com/dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        },
    ]);
    let mut claim_deleting = claim("claim-deleting", Some("kwok://claim-deleting"), true);
    claim_deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    let s = Snapshot {
        nodes: vec![
            Arc::new(deleting),
            Arc::new(disrupted),
            Arc::new(starting),
            Arc::new(node("claim-deleting", "kwok://claim-deleting")),
        ],
        node_claims: vec![
            Arc::new(claim("starting", Some("kwok://starting"), false)),
            Arc::new(claim_deleting),
        ],
        ..Default::default()
    };
    let round = build_now(&s, &HashMap::new(), Instant::now());
    let names: Vec<&str> = round
        .problem
        .existing_nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(names, vec!["starting"]);
    let taints: Vec<&str> = round.problem.existing_nodes[0]
        .taints
        .iter()
        .map(|t| t.key.as_str())
        .collect();
    assert_eq!(taints, vec!["example.com/dedicated"]);
}

#[test]
fn bound_pods_and_daemon_pods_fill_their_nodes() {
    let ds_labels = BTreeMap::from([("app".to_string(), "agent".to_string())]);
    let ds = DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(ds_labels),
                    ..Default::default()
                }),
                spec: Some(with_cpu(unschedulable("t"), "100m").spec.unwrap()),
            },
            ..Default::default()
        }),
        status: None,
    };
    // n1 runs its daemon pod already; n2 does not list one yet.
    let mut daemon = (*bound("agent-n1", "n1")).clone();
    daemon.metadata.namespace = Some("kube-system".into());
    daemon.metadata.owner_references = Some(vec![OwnerReference {
        kind: "DaemonSet".into(),
        name: "agent".into(),
        ..Default::default()
    }]);
    let mut done = (*bound("done", "n1")).clone();
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let s = Snapshot {
        pods: vec![bound("web", "n1"), Arc::new(daemon), Arc::new(done)],
        nodes: vec![
            Arc::new(node("n1", "kwok://n1")),
            Arc::new(node("n2", "kwok://n2")),
        ],
        daemon_sets: vec![Arc::new(ds)],
        ..Default::default()
    };
    let round = build_now(&s, &HashMap::new(), Instant::now());
    assert_eq!(pod_names(existing(&round, "n1")), vec!["web", "agent-n1"]);
    assert_eq!(pod_names(existing(&round, "n2")), vec!["agent-n2"]);
    assert_eq!(round.problem.daemon_sets.len(), 1);
    assert_eq!(round.problem.daemon_sets[0].pod.requests.get("cpu"), 100);
}

#[test]
fn namespace_selectors_resolve_against_namespace_labels() {
    let mut p = with_cpu(unschedulable("a"), "1");
    p.spec.as_mut().unwrap().affinity = Some(k8s_openapi::api::core::v1::Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector::default()),
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([("team".to_string(), "x".to_string())])),
                    ..Default::default()
                }),
                topology_key: HOSTNAME_LABEL.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let ns = |name: &str, team: &str| {
        Arc::new(Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("team".to_string(), team.to_string())])),
                ..Default::default()
            },
            ..Default::default()
        })
    };
    let s = Snapshot {
        pods: vec![stored(p)],
        namespaces: vec![ns("x1", "x"), ns("x2", "x"), ns("y1", "y")],
        ..Default::default()
    };
    let round = build_now(&s, &HashMap::new(), Instant::now());
    let term = &round.problem.pods[0].pod_anti_affinity[0];
    assert_eq!(term.namespaces, vec!["x1", "x2"]);
}

/// Pending pod `ns/<name>` mounting claim `data`.
fn with_claim(name: &str) -> KubePod {
    let mut p = with_cpu(unschedulable(name), "1");
    p.spec.as_mut().unwrap().volumes = Some(vec![k8s_openapi::api::core::v1::Volume {
        name: "v".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: "data".into(),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    p
}

#[test]
fn pending_pods_are_pinned_to_their_volume_zone() {
    // Not the cheapest (first) zone, so the pin is what puts the claim there.
    let zone = "test-zone-c";
    let pvc = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            volume_name: Some("pv-1".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some("pv-1".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![K8sNodeSelectorRequirement {
                            key: ZONE_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![zone.into()]),
                        }]),
                        ..Default::default()
                    }],
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = Snapshot {
        pods: vec![stored(with_claim("db-0"))],
        node_pools: vec![Arc::new(pool())],
        volume_claims: vec![Arc::new(pvc)],
        volumes: vec![Arc::new(pv)],
        ..Default::default()
    };
    let round = build_now(&s, &HashMap::new(), Instant::now());
    assert!(round.invalid.is_empty(), "{:?}", round.invalid);
    assert_eq!(
        round.problem.pods[0].volume_requirements,
        vec![karpenter_solver::NodeSelectorRequirement::new(
            ZONE_LABEL,
            karpenter_solver::Operator::In,
            &[zone]
        )]
    );
    let plan =
        karpenter_solver::solve(&round.problem, &crate::provisioning::solve_options()).unwrap();
    assert_eq!(plan.node_claims.len(), 1);
    assert_eq!(plan.node_claims[0].zone, zone);
    assert_eq!(plan.node_claims[0].pods, vec!["ns/db-0".to_string()]);
}

#[test]
fn pods_with_a_missing_claim_wait() {
    let s = Snapshot {
        pods: vec![stored(with_claim("db-0")), pending("web")],
        node_pools: vec![Arc::new(pool())],
        ..Default::default()
    };
    let round = build_now(&s, &HashMap::new(), Instant::now());
    assert_eq!(round.invalid.len(), 1);
    let reason = &round.invalid[0].1;
    assert!(reason.contains("Pod ns/db-0"), "{reason}");
    assert!(reason.contains("PersistentVolumeClaim ns/data"), "{reason}");
    assert_eq!(round.pending.keys().collect::<Vec<_>>(), vec!["ns/web"]);
}

#[test]
fn static_pools_launch_nothing_for_pods_but_their_nodes_take_pods() {
    let mut fixed = pool();
    fixed.metadata.name = Some("fixed".into());
    fixed.spec.limits = quantities(&[("nodes", "5")]);
    fixed.spec.replicas = Some(2);
    let mut n1 = node("n1", "kwok://n1");
    n1.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(NODE_POOL_LABEL.into(), "fixed".into());
    let s = Snapshot {
        pods: vec![pending("p")],
        nodes: vec![Arc::new(n1)],
        node_pools: vec![Arc::new(pool()), Arc::new(fixed)],
        ..Default::default()
    };
    let mut cats = catalogs();
    cats.insert("fixed".into(), karpenter_providers::kwok::catalog());
    let round = build(&s, &cats, &HashMap::new(), Instant::now(), WINDOW);
    let pools: Vec<&str> = round
        .problem
        .node_pools
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(pools, vec!["np"], "the static pool is no option for pods");
    // Its node is still room for the pending pod.
    assert_eq!(existing(&round, "n1").name, "n1");
    assert_eq!(round.problem.pods.len(), 1);
}
