//! Unit tests of the conversion (manifests → solver `Problem`), plus fuzz-ish property tests:
//! random text into the YAML reader and random quantities into the conversion never panic.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use karpenter_solver::{PodView, Problem, TaintEffect, TolerationOperator, WhenUnsatisfiable};
use proptest::prelude::*;

use super::convert::{self, Converted, parse_resources};
use super::manifests::{self, Input, Origin, Source};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn convert(yaml: &str) -> TestResult<(Converted, Vec<String>)> {
    let m = manifests::parse(&[Input {
        name: "t.yaml".into(),
        text: yaml.into(),
    }])?;
    let mut warnings = m.warnings.clone();
    let c = convert::problem(&m, Vec::new(), &mut warnings)?;
    Ok((c, warnings))
}

fn error(yaml: &str) -> String {
    match convert(yaml) {
        Ok(_) => String::from("<no error>"),
        Err(e) => e.to_string(),
    }
}

fn pod<'a>(p: &'a Problem, key: &str) -> TestResult<&'a PodView> {
    p.pods
        .iter()
        .find(|x| x.key() == key)
        .ok_or_else(|| format!("no pod {key}").into())
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: a, ver: v1}}\n";

#[test]
fn effective_requests_cover_sidecars_inits_overhead_and_limits() -> TestResult {
    let (c, _) = convert(&format!(
        "{POD}spec:
  overhead: {{cpu: 100m}}
  initContainers:
  - {{name: sidecar, restartPolicy: Always, resources: {{requests: {{cpu: 500m}}}}}}
  - {{name: migrate, resources: {{requests: {{cpu: '3'}}}}}}
  containers:
  - {{name: app, resources: {{requests: {{cpu: '1'}}, limits: {{memory: 2Gi}}}}}}
"
    ))?;
    let r = &pod(&c.problem, "default/p")?.requests;
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
    let (c, warnings) = convert(&format!(
        "{POD}spec:
  nodeSelector: {{disk: ssd}}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{{key: a, operator: In, values: [x]}}]
        - matchExpressions: [{{key: b, operator: Gt, values: ['3']}}]
        - matchFields: [{{key: metadata.name, operator: In, values: [n1]}}]
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 20
        preference: {{matchExpressions: [{{key: c, operator: Exists}}]}}
  containers: []
"
    ))?;
    let p = pod(&c.problem, "default/p")?;
    assert_eq!(p.node_selector.get("disk").map(String::as_str), Some("ssd"));
    assert_eq!(p.required_node_affinity.len(), 2);
    assert_eq!(p.preferred_node_affinity[0].weight, 20);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("nodeSelectorTerms[2].matchFields"),
        "{warnings:?}"
    );
    let bad = "spec:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        \
               nodeSelectorTerms: [{matchExpressions: [{key: a, operator: Gt, values: [x]}]}]\n  containers: []\n";
    let err = error(&format!("{POD}{bad}"));
    assert!(err.contains("t.yaml: document 0 (Pod p): spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values"), "{err}");
    Ok(())
}

#[test]
fn tolerations_follow_kubernetes_rules() -> TestResult {
    let (c, _) = convert(&format!(
        "{POD}spec:
  tolerations:
  - {{operator: Exists}}
  - {{key: k, value: v, effect: NoExecute}}
  containers: []
"
    ))?;
    let t = &pod(&c.problem, "default/p")?.tolerations;
    assert_eq!(t[0].operator, TolerationOperator::Exists);
    assert!(t[0].key.is_empty() && t[0].effect.is_none());
    assert_eq!(t[1].effect, Some(TaintEffect::NoExecute));
    let err = error(&format!(
        "{POD}spec:\n  tolerations: [{{key: k, effect: Sometimes}}]\n  containers: []\n"
    ));
    assert!(
        err.contains("spec.tolerations[0].effect: unknown effect"),
        "{err}"
    );
    Ok(())
}

#[test]
fn spread_and_affinity_terms_are_converted() -> TestResult {
    let (c, _) = convert(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team-a, labels: {{team: a}}}}\n---\n{POD}spec:
  topologySpreadConstraints:
  - {{maxSkew: 2, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway, minDomains: 3,
     nodeAffinityPolicy: Ignore, matchLabelKeys: [ver], labelSelector: {{matchLabels: {{app: a}}}}}}
  affinity:
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - {{topologyKey: zone, labelSelector: {{matchLabels: {{app: db}}}}, namespaceSelector: {{}}}}
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - {{topologyKey: host, labelSelector: {{matchLabels: {{app: a}}}}, matchLabelKeys: [ver],
         namespaceSelector: {{matchLabels: {{team: a}}}}}}
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 5
        podAffinityTerm: {{topologyKey: host, labelSelector: {{}}, namespaceSelector: {{matchLabels: {{team: z}}}}}}
  containers: []
"
    ))?;
    let p = pod(&c.problem, "default/p")?;
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
        pref.term.namespaces.len(),
        1,
        "no namespace matched: a name nothing has"
    );
    assert!(!pref.term.namespaces.contains(&"default".to_owned()));
    Ok(())
}

#[test]
fn host_ports_come_from_containers_and_sidecars() -> TestResult {
    let (c, _) = convert(&format!(
        "{POD}spec:
  initContainers: [{{name: s, restartPolicy: Always, ports: [{{containerPort: 9, hostPort: 9000}}]}}]
  containers: [{{name: c, ports: [{{containerPort: 80, hostPort: 8080, protocol: UDP}}, {{containerPort: 81}}]}}]
"
    ))?;
    let ports = &pod(&c.problem, "default/p")?.host_ports;
    let got: Vec<(u16, &str)> = ports
        .iter()
        .map(|p| (p.port, p.protocol.as_str()))
        .collect();
    assert_eq!(got, [(8080, "UDP"), (9000, "TCP")]);
    let err = error(&format!(
        "{POD}spec:\n  containers: [{{name: c, ports: [{{containerPort: 1, hostPort: 70000}}]}}]\n"
    ));
    assert!(
        err.contains("spec.containers[0].ports[0].hostPort"),
        "{err}"
    );
    Ok(())
}

const NODES: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {karpenter.sh/nodepool: default}}
spec: {unschedulable: true}
status: {capacity: {cpu: '4', memory: 8Gi}, allocatable: {cpu: 3900m, memory: 7Gi, pods: '20'}}
---
apiVersion: v1\nkind: Node\nmetadata: {name: n2, labels: {gpu: 'yes', karpenter.sh/nodepool: default}}
spec: {taints: [{key: gpu, value: 'true', effect: NoSchedule}]}
status: {allocatable: {cpu: '8', memory: 16Gi, pods: '20'}}
---
apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template: {metadata: {labels: {app: agent}}, spec: {containers: [{name: a, resources: {requests: {cpu: 100m}}}]}}
---
apiVersion: v1\nkind: Pod\nmetadata: {name: bound, namespace: web}
spec: {nodeName: n1, containers: [{name: c, resources: {requests: {cpu: '1'}}}]}
---
apiVersion: v1\nkind: Pod\nmetadata: {name: lost}
spec: {nodeName: gone, containers: []}
";

#[test]
fn existing_nodes_get_bound_pods_daemons_cordons_and_pool_usage() -> TestResult {
    let (c, warnings) = convert(NODES)?;
    let p = &c.problem;
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
            .any(|t| t.key == "node.kubernetes.io/unschedulable")
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
    assert_eq!(c.bound.get("web/bound").map(String::as_str), Some("n1"));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("default/lost") && w.contains("\"gone\"")),
        "{warnings:?}"
    );
    // Usage is counted for the NodePool even when it is not in the input.
    assert_eq!(p.daemon_sets.len(), 1);
    Ok(())
}

#[test]
fn pool_usage_counts_capacity_and_nodes() -> TestResult {
    let pool = "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: default}
spec:
  limits: {cpu: '100', nodes: '10'}
  template: {spec: {nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: d}, requirements: []}}
---
";
    let (c, _) = convert(&format!("{pool}{NODES}"))?;
    let np = &c.problem.node_pools[0];
    assert_eq!(
        np.usage.get("cpu"),
        4000 + 8000,
        "capacity, or allocatable when capacity is absent"
    );
    assert_eq!(np.usage.get("nodes"), 2);
    assert_eq!(np.limits.as_ref().map(|l| l.get("nodes")), Some(10));
    Ok(())
}

#[test]
fn a_provisioner_becomes_a_nodepool_and_names_must_be_unique() -> TestResult {
    let prov = "apiVersion: karpenter.sh/v1alpha5\nkind: Provisioner\nmetadata: {name: default}
spec:
  labels: {node-type: worker}
  taints: [{key: k, effect: NoSchedule}]
  requirements: [{key: karpenter.sh/capacity-type, operator: In, values: [spot]}]
  limits: {resources: {cpu: 1000}}
  providerRef: {name: default}
";
    let (c, _) = convert(prov)?;
    let np = &c.problem.node_pools[0];
    assert_eq!(np.name, "default");
    assert_eq!(
        np.labels.get("node-type").map(String::as_str),
        Some("worker")
    );
    assert_eq!(np.requirements[0].values, ["spot"]);
    assert_eq!(np.taints[0].effect, TaintEffect::NoSchedule);
    assert_eq!(np.limits.as_ref().map(|l| l.get("cpu")), Some(1_000_000));
    let err = error(&format!("{prov}---\n{prov}"));
    assert!(
        err.contains("t.yaml: document 1") && err.contains("already defined by t.yaml: document 0"),
        "{err}"
    );
    Ok(())
}

#[test]
fn duplicate_pods_and_nameless_nodes_are_errors() {
    let p = format!("{POD}spec: {{containers: []}}\n");
    let err = error(&format!("{p}---\n{p}"));
    assert!(
        err.contains(
            "document 1 (Pod p): metadata.name: pod default/p is also defined by t.yaml: document 0"
        ),
        "{err}"
    );
    let err =
        error("apiVersion: v1\nkind: Node\nmetadata: {}\nstatus: {allocatable: {cpu: '1'}}\n");
    assert!(err.contains("metadata.name: missing"), "{err}");
}

fn origin() -> Origin {
    Origin {
        source: Source {
            file: "f".into(),
            document: 0,
        },
        object: "Pod p".into(),
        spec_path: "spec".into(),
        prefix: String::new(),
    }
}

#[test]
fn quantities_are_exact_and_negative_ones_are_refused() {
    let list = |q: &str| BTreeMap::from([("cpu".to_owned(), Quantity(q.to_owned()))]);
    let ok = parse_resources(&origin(), "x", &list("1.5")).map(|r| r.get("cpu"));
    assert_eq!(ok.ok(), Some(1500));
    let err = parse_resources(&origin(), "x", &list("-1"))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("f: document 0 (Pod p): x.cpu: \"-1\" must not be negative")
    );
}

proptest! {
    #[test]
    fn the_yaml_reader_never_panics(text in "\\PC{0,200}") {
        let _ = manifests::parse(&[Input { name: "fuzz.yaml".into(), text }]);
    }

    #[test]
    fn kubernetes_shaped_documents_never_panic(
        kind in prop::sample::select(vec!["Pod", "Deployment", "Node", "DaemonSet", "NodePool", "Job", "List"]),
        api in prop::sample::select(vec!["v1", "apps/v1", "batch/v1", "karpenter.sh/v1", "karpenter.sh/v1alpha5"]),
        body in "[a-zA-Z0-9:{}\\[\\], \n-]{0,80}",
    ) {
        let text = format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {body}\n");
        if let Ok(m) = manifests::parse(&[Input { name: "fuzz.yaml".into(), text }]) {
            let _ = convert::problem(&m, Vec::new(), &mut Vec::new());
        }
    }

    #[test]
    fn quantity_conversion_never_panics(name in "[a-z./-]{1,12}", q in "\\PC{0,24}") {
        let list = BTreeMap::from([(name, Quantity(q))]);
        if let Ok(r) = parse_resources(&origin(), "spec", &list) {
            prop_assert!(r.0.values().all(|v| *v >= 0));
        }
    }
}
