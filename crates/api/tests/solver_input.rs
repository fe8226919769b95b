//! Tests of `karpenter_api::solver_input`: Kubernetes objects → the solver's model, on plain
//! objects (no files, no apiserver), plus property tests that odd quantities never panic.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, NodeSpec, NodeStatus, Pod, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use karpenter_api::solver_input::{
    self as input, BoundPod, ConvertError, ConvertWarning, NO_NAMESPACE, NamespaceIndex, Parts,
    PodContext, parse_resources,
};
use karpenter_api::v1::NodePool;
use karpenter_solver::{PodView, Resources, TaintEffect, TolerationOperator, WhenUnsatisfiable};
use proptest::prelude::*;
use serde::de::DeserializeOwned;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn obj<T: DeserializeOwned>(yaml: &str) -> TestResult<T> {
    Ok(serde_saphyr::from_str(yaml)?)
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: a, ver: v1}}\n";

/// Converts a pod (`POD` + `spec`) against `namespaces`, with its warnings.
fn convert_in(
    spec: &str,
    namespaces: &NamespaceIndex,
) -> TestResult<(Result<PodView, ConvertError>, Vec<ConvertWarning>)> {
    let pod: Pod = obj(&format!("{POD}{spec}"))?;
    let mut warnings = Vec::new();
    let view = input::pod_view(&pod, &PodContext { namespaces }, &mut warnings);
    Ok((view, warnings))
}

fn convert(spec: &str) -> TestResult<(PodView, Vec<ConvertWarning>)> {
    let (view, warnings) = convert_in(spec, &NamespaceIndex::new())?;
    Ok((view?, warnings))
}

fn error(spec: &str) -> TestResult<String> {
    let (view, _) = convert_in(spec, &NamespaceIndex::new())?;
    Ok(view.err().map(|e| e.to_string()).unwrap_or_default())
}

#[test]
fn effective_requests_cover_sidecars_inits_overhead_and_limits() -> TestResult {
    let (p, _) = convert(
        "spec:
  overhead: {cpu: 100m}
  initContainers:
  - {name: sidecar, restartPolicy: Always, resources: {requests: {cpu: 500m}}}
  - {name: migrate, resources: {requests: {cpu: '3'}}}
  containers:
  - {name: app, resources: {requests: {cpu: '1'}, limits: {memory: 2Gi}}}
",
    )?;
    let r = &p.requests;
    // max(1 + 0.5, 0.5 + 3) + 0.1
    assert_eq!(r.get("cpu"), 3600);
    assert_eq!(
        r.get("memory"),
        2 << 30,
        "a limit without a request requests the limit"
    );
    assert_eq!(r.get("pods"), 1);
    Ok(())
}

#[test]
fn node_affinity_terms_are_ored_and_match_fields_warn() -> TestResult {
    let (p, warnings) = convert(
        "spec:
  nodeSelector: {disk: ssd}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: a, operator: In, values: [x]}]
        - matchExpressions: [{key: b, operator: Gt, values: ['3']}]
        - matchFields: [{key: metadata.name, operator: In, values: [n1]}]
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 20
        preference: {matchExpressions: [{key: c, operator: Exists}]}
  containers: []
",
    )?;
    assert_eq!(p.node_selector.get("disk").map(String::as_str), Some("ssd"));
    assert_eq!(p.required_node_affinity.len(), 2);
    assert_eq!(p.preferred_node_affinity[0].weight, 20);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].object, "Pod default/p");
    assert!(
        warnings[0]
            .path
            .ends_with("nodeSelectorTerms[2].matchFields"),
        "{warnings:?}"
    );
    let bad = "spec:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        \
               nodeSelectorTerms: [{matchExpressions: [{key: a, operator: Gt, values: [x]}]}]\n  containers: []\n";
    let err = error(bad)?;
    assert!(err.starts_with("Pod default/p: spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: "), "{err}");
    Ok(())
}

#[test]
fn tolerations_follow_kubernetes_rules() -> TestResult {
    let (p, _) = convert(
        "spec:
  tolerations:
  - {operator: Exists}
  - {key: k, value: v, effect: NoExecute}
  containers: []
",
    )?;
    let t = &p.tolerations;
    assert_eq!(t[0].operator, TolerationOperator::Exists);
    assert!(t[0].key.is_empty() && t[0].effect.is_none());
    assert_eq!(t[1].effect, Some(TaintEffect::NoExecute));
    let err = error("spec:\n  tolerations: [{key: k, effect: Sometimes}]\n  containers: []\n")?;
    assert!(
        err.contains("spec.tolerations[0].effect: unknown effect"),
        "{err}"
    );
    Ok(())
}

#[test]
fn spread_and_affinity_terms_are_converted() -> TestResult {
    let team: Namespace =
        obj("apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, labels: {team: a}}\n")?;
    let mut namespaces: NamespaceIndex = [&team].into_iter().collect();
    namespaces.ensure("default");
    let (p, _) = convert_in(
        "spec:
  topologySpreadConstraints:
  - {maxSkew: 2, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway, minDomains: 3,
     nodeAffinityPolicy: Ignore, matchLabelKeys: [ver], labelSelector: {matchLabels: {app: a}}}
  affinity:
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - {topologyKey: zone, labelSelector: {matchLabels: {app: db}}, namespaceSelector: {}}
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - {topologyKey: host, labelSelector: {matchLabels: {app: a}}, matchLabelKeys: [ver],
         namespaceSelector: {matchLabels: {team: a}}}
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 5
        podAffinityTerm: {topologyKey: host, labelSelector: {}, namespaceSelector: {matchLabels: {team: z}}}
  containers: []
",
        &namespaces,
    )?;
    let p = p?;
    let s = &p.topology_spread[0];
    assert_eq!(
        (s.max_skew, s.min_domains, s.ignore_node_affinity),
        (2, Some(3), true)
    );
    assert_eq!(s.when_unsatisfiable, WhenUnsatisfiable::ScheduleAnyway);
    assert_eq!(s.match_label_keys, ["ver"]);
    assert!(p.pod_affinity[0].all_namespaces);
    let anti = &p.pod_anti_affinity[0];
    assert_eq!(anti.namespaces, ["team-a"]);
    let sel = anti.label_selector.as_ref().ok_or("selector")?;
    assert_eq!(sel.match_expressions[0].key, "ver", "matchLabelKeys merged");
    assert_eq!(sel.match_expressions[0].values, ["v1"]);
    let pref = &p.preferred_pod_anti_affinity[0];
    assert_eq!(pref.weight, 5);
    assert_eq!(
        pref.term.namespaces,
        [NO_NAMESPACE],
        "no namespace matched: a name nothing has"
    );
    assert!(!pref.term.namespaces.contains(&"default".to_owned()));
    Ok(())
}

#[test]
fn host_ports_come_from_containers_and_sidecars() -> TestResult {
    let (p, _) = convert(
        "spec:
  initContainers: [{name: s, restartPolicy: Always, ports: [{containerPort: 9, hostPort: 9000}]}]
  containers: [{name: c, ports: [{containerPort: 80, hostPort: 8080, protocol: UDP}, {containerPort: 81}]}]
",
    )?;
    let got: Vec<(u16, &str)> = p
        .host_ports
        .iter()
        .map(|p| (p.port, p.protocol.as_str()))
        .collect();
    assert_eq!(got, [(8080, "UDP"), (9000, "TCP")]);
    let err =
        error("spec:\n  containers: [{name: c, ports: [{containerPort: 1, hostPort: 70000}]}]\n")?;
    assert!(
        err.contains("spec.containers[0].ports[0].hostPort"),
        "{err}"
    );
    Ok(())
}

const N1: &str =
    "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {karpenter.sh/nodepool: default}}
spec: {unschedulable: true}
status: {capacity: {cpu: '4', memory: 8Gi}, allocatable: {cpu: 3900m, memory: 7Gi, pods: '20'}}
";
const N2: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: n2, labels: {gpu: 'yes', karpenter.sh/nodepool: default}}
spec: {taints: [{key: gpu, value: 'true', effect: NoSchedule}]}
status: {allocatable: {cpu: '8', memory: 16Gi, pods: '20'}}
";
const AGENT: &str = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template: {metadata: {labels: {app: agent}}, spec: {containers: [{name: a, resources: {requests: {cpu: 100m}}}]}}
";

/// The converted pieces of two nodes, a DaemonSet, a pod bound to n1 and one bound to a node
/// that is not there.
fn cluster_parts() -> TestResult<Parts> {
    let ns = NamespaceIndex::new();
    let ctx = PodContext { namespaces: &ns };
    let mut warnings = Vec::new();
    let ds: DaemonSet = obj(AGENT)?;
    let bound: Pod = obj(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bound, namespace: web}
spec: {nodeName: n1, containers: [{name: c, resources: {requests: {cpu: '1'}}}]}
",
    )?;
    let lost: Pod = obj(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lost}\nspec: {nodeName: gone, containers: []}\n",
    )?;
    let mut parts = Parts::default();
    for yaml in [N1, N2] {
        parts
            .nodes
            .push(input::existing_node(&obj(yaml)?, Vec::new())?);
    }
    for (pod, node) in [(bound, "n1"), (lost, "gone")] {
        parts.bound.push(BoundPod {
            node: node.to_owned(),
            pod: input::pod_view(&pod, &ctx, &mut warnings)?,
            daemon_set: input::daemon_set_owner(&pod),
        });
    }
    parts
        .daemon_sets
        .push(input::daemon_set_view(&ds, &ctx, &mut warnings)?);
    assert!(warnings.is_empty(), "{warnings:?}");
    Ok(parts)
}

#[test]
fn existing_nodes_get_bound_pods_daemons_cordons_and_pool_usage() -> TestResult {
    let assembled = input::problem(cluster_parts()?);
    let p = &assembled.problem;
    assert!(p.pods.is_empty(), "bound pods are not pending");
    let n1 = &p.existing_nodes[0];
    let names: Vec<String> = n1.pods.iter().map(PodView::key).collect();
    assert_eq!(
        names,
        ["web/bound", "kube-system/agent-n1"],
        "daemons run on cordoned nodes"
    );
    assert!(
        n1.taints
            .iter()
            .any(|t| t.key == input::UNSCHEDULABLE_TAINT)
    );
    assert_eq!(
        n1.labels.get("kubernetes.io/hostname").map(String::as_str),
        Some("n1")
    );
    let n2 = &p.existing_nodes[1];
    assert!(
        n2.pods.is_empty(),
        "the DaemonSet does not tolerate the gpu taint"
    );
    let unplaced: Vec<(String, &str)> = assembled
        .unplaced
        .iter()
        .map(|b| (b.pod.key(), b.node.as_str()))
        .collect();
    assert_eq!(unplaced, [("default/lost".to_owned(), "gone")]);
    assert_eq!(p.daemon_sets.len(), 1);
    Ok(())
}

#[test]
fn a_daemon_pod_already_bound_is_not_added_twice() -> TestResult {
    let mut parts = cluster_parts()?;
    let daemon: Pod = obj(
        "apiVersion: v1\nkind: Pod
metadata: {name: agent-x1, namespace: kube-system, ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: u}]}
spec: {nodeName: n1, containers: [{name: a, resources: {requests: {cpu: 100m}}}]}
",
    )?;
    let ns = NamespaceIndex::new();
    let view = input::pod_view(&daemon, &PodContext { namespaces: &ns }, &mut Vec::new())?;
    assert_eq!(input::daemon_set_owner(&daemon).as_deref(), Some("agent"));
    parts.bound.push(BoundPod {
        node: "n1".into(),
        pod: view,
        daemon_set: input::daemon_set_owner(&daemon),
    });
    let assembled = input::problem(parts);
    let names: Vec<String> = assembled.problem.existing_nodes[0]
        .pods
        .iter()
        .map(PodView::key)
        .collect();
    assert_eq!(names, ["web/bound", "kube-system/agent-x1"]);
    Ok(())
}

#[test]
fn pool_usage_counts_capacity_and_nodes() -> TestResult {
    let nodes: Vec<Node> = vec![obj(N1)?, obj(N2)?];
    let mut usage = input::pool_usage(&nodes)?;
    assert_eq!(
        usage.get("default").map(|u| u.get("cpu")),
        Some(4000 + 8000),
        "capacity, or allocatable when capacity is absent"
    );
    let pool: NodePool = obj(
        "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: default}
spec:
  limits: {cpu: '100', nodes: '10'}
  template:
    metadata: {labels: {team: a}}
    spec:
      nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: d}
      requirements: [{key: karpenter.sh/capacity-type, operator: In, values: [spot], minValues: 1}]
      taints: [{key: k, effect: NoSchedule}]
",
    )?;
    let mut warnings = Vec::new();
    let np = input::node_pool_view(
        &pool,
        usage.remove("default").unwrap_or_default(),
        &mut warnings,
    )?;
    assert_eq!(np.usage.get("nodes"), 2);
    assert_eq!(np.usage.get("cpu"), 12000);
    assert_eq!(np.limits.as_ref().map(|l| l.get("nodes")), Some(10));
    assert_eq!(np.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(np.requirements[0].values, ["spot"]);
    assert_eq!(np.taints[0].effect, TaintEffect::NoSchedule);
    // minValues is modelled (carried beside the view, for Problem::min_values): no warning.
    assert!(warnings.is_empty(), "{warnings:?}");
    let min_values = input::min_values(&pool);
    assert_eq!(
        min_values.get("karpenter.sh/capacity-type"),
        Some(&1),
        "{min_values:?}"
    );
    Ok(())
}

#[test]
fn node_and_daemon_set_errors_name_the_object_and_its_field() -> TestResult {
    let no_allocatable: Node =
        obj("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {}\n")?;
    let err = input::existing_node(&no_allocatable, Vec::new()).err();
    assert_eq!(
        err.map(|e| (e.object, e.path)),
        Some(("Node n1".to_owned(), "status.allocatable".to_owned()))
    );
    let nameless: Node =
        obj("apiVersion: v1\nkind: Node\nmetadata: {}\nstatus: {allocatable: {cpu: '1'}}\n")?;
    let err = input::existing_node(&nameless, Vec::new())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("Node <unnamed>: metadata.name: missing: every node needs a name")
    );
    let bad_capacity: Node =
        obj("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {capacity: {cpu: '-2'}}\n")?;
    let err = input::node_capacity(&bad_capacity).err().map(|e| e.path);
    assert_eq!(err.as_deref(), Some("status.capacity.cpu"));
    let ds: DaemonSet = obj(&AGENT.replace("cpu: 100m", "cpu: lots"))?;
    let ns = NamespaceIndex::new();
    let err = input::daemon_set_view(&ds, &PodContext { namespaces: &ns }, &mut Vec::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.starts_with(
            "DaemonSet kube-system/agent: spec.template.spec.containers[0].resources.requests.cpu: "
        ),
        "{err}"
    );
    Ok(())
}

#[test]
fn namespace_index_labels_namespaces_by_name() -> TestResult {
    let team: Namespace =
        obj("apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, labels: {team: a}}\n")?;
    let mut index = NamespaceIndex::new();
    index.insert(&team);
    index.ensure("web");
    index.ensure("team-a"); // keeps the Namespace's labels
    let name = |n: &str| {
        index
            .labels(n)
            .and_then(|l| l.get("kubernetes.io/metadata.name"))
            .cloned()
    };
    assert_eq!(name("web").as_deref(), Some("web"));
    assert_eq!(
        index
            .labels("team-a")
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("a")
    );
    assert_eq!(name("team-a").as_deref(), Some("team-a"));
    Ok(())
}

#[test]
fn quantities_are_exact_and_negative_ones_are_refused() {
    let list = |q: &str| BTreeMap::from([("cpu".to_owned(), Quantity(q.to_owned()))]);
    let ok = parse_resources("Pod p", "x", &list("1.5")).map(|r| r.get("cpu"));
    assert_eq!(ok.ok(), Some(1500));
    let err = parse_resources("Pod p", "x", &list("-1"))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("Pod p: x.cpu: \"-1\" must not be negative")
    );
}

proptest! {
    #[test]
    fn quantity_conversion_never_panics(name in "[a-z./-]{1,12}", q in "\\PC{0,24}") {
        let list = BTreeMap::from([(name, Quantity(q))]);
        if let Ok(r) = parse_resources("Pod p", "spec", &list) {
            prop_assert!(r.0.values().all(|v| *v >= 0));
        }
    }

    #[test]
    fn node_conversion_never_panics(cpu in "\\PC{0,12}", taint in "\\PC{0,12}", cordoned: bool) {
        let node = Node {
            metadata: ObjectMeta { name: Some("n".into()), ..Default::default() },
            spec: Some(NodeSpec {
                unschedulable: Some(cordoned),
                taints: Some(vec![Taint { key: "k".into(), effect: taint, ..Default::default() }]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([("cpu".to_owned(), Quantity(cpu))])),
                ..Default::default()
            }),
        };
        let _ = input::existing_node(&node, Vec::new());
        let _: Result<Resources, _> = input::node_capacity(&node);
    }
}
