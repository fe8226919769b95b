//! Unit tests of simulate's conversion (manifests → solver `Problem`): what simulate adds to
//! `karpenter_api::solver_input` (whose own tests are in `crates/api/tests/solver_input.rs`):
//! documents, workloads and Lists located in errors and warnings, unique names, Provisioners;
//! plus fuzz-ish property tests: random text into the YAML reader and the conversion never
//! panics.

use karpenter_solver::{PodView, TaintEffect};
use proptest::prelude::*;

use super::convert::{self, Converted};
use super::manifests::{self, Input};

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

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: a, ver: v1}}\n";

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

#[test]
fn errors_and_warnings_are_located_in_the_document() -> TestResult {
    let bad = "spec:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        \
               nodeSelectorTerms: [{matchExpressions: [{key: a, operator: Gt, values: [x]}]}]\n  containers: []\n";
    let err = error(&format!("{POD}{bad}"));
    assert!(err.contains("t.yaml: document 0 (Pod p): spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values"), "{err}");

    // A workload's pods are named by the workload, at the template's paths; once per replica
    // in the list, printed once.
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchFields: [{key: metadata.name, operator: In, values: [n1]}]}]}}}
      topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: Honor}]
      containers: [{name: c}]
";
    let (_, warnings) = convert(deploy)?;
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    assert!(
        warnings[0].starts_with("warning: t.yaml: document 0 (Deployment shop/web): spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields: "),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains(
            "(Deployment shop/web): spec.template.spec.topologySpreadConstraints[0].nodeTaintsPolicy: Honor"
        ),
        "{warnings:?}"
    );
    let err = error(&deploy.replace(
        "containers: [{name: c}]",
        "tolerations: [{key: k, effect: Sometimes}]\n      containers: []",
    ));
    assert!(
        err.contains("document 0 (Deployment shop/web): spec.template.spec.tolerations[0].effect: unknown effect"),
        "{err}"
    );

    // Inside a List, paths start at the item.
    let list = "apiVersion: v1\nkind: List\nitems:
- {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: [{name: c, ports: [{containerPort: 1, hostPort: 70000}]}]}}
";
    let err = error(list);
    assert!(
        err.contains(
            "(Pod a): items[0].spec.containers[0].ports[0].hostPort: 70000 is not a valid port"
        ),
        "{err}"
    );
    let list = "apiVersion: v1\nkind: List\nitems:
- {apiVersion: v1, kind: Node, metadata: {name: n1}, status: {allocatable: {cpu: '1'}}}
- {apiVersion: v1, kind: Node, metadata: {name: n2}, status: {allocatable: {cpu: '1'}, capacity: {cpu: '-1'}}}
";
    let err = error(list);
    assert!(
        err.contains(
            "document 0 (Node n2): items[1].status.capacity.cpu: \"-1\" must not be negative"
        ),
        "{err}"
    );

    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template: {spec: {containers: [{name: a, resources: {requests: {cpu: lots}}}]}}
";
    let err = error(ds);
    assert!(
        err.contains(
            "(DaemonSet kube-system/agent): spec.template.spec.containers[0].resources.requests.cpu"
        ),
        "{err}"
    );
    Ok(())
}

#[test]
fn bound_pods_and_daemons_fill_existing_nodes() -> TestResult {
    let nodes = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {karpenter.sh/nodepool: default}}
spec: {unschedulable: true}
status: {capacity: {cpu: '4', memory: 8Gi}, allocatable: {cpu: 3900m, memory: 7Gi, pods: '20'}}
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
---
apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: default}
spec:
  limits: {cpu: '100'}
  template: {spec: {nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: d}, requirements: []}}
";
    let (c, warnings) = convert(nodes)?;
    let p = &c.problem;
    assert!(p.pods.is_empty(), "bound pods are not pending");
    let names: Vec<String> = p.existing_nodes[0].pods.iter().map(PodView::key).collect();
    assert_eq!(names, ["web/bound", "kube-system/agent-n1"]);
    assert_eq!(c.bound.get("web/bound").map(String::as_str), Some("n1"));
    assert!(!c.bound.contains_key("default/lost"), "{:?}", c.bound);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0],
        "warning: t.yaml: document 3 (Pod lost): pod default/lost is bound to node \"gone\", which is not in the input; ignored"
    );
    let np = &p.node_pools[0];
    assert_eq!((np.usage.get("cpu"), np.usage.get("nodes")), (4000, 1));
    Ok(())
}

#[test]
fn a_provisioner_limit_is_named_where_it_is_written() {
    let prov = "apiVersion: karpenter.sh/v1alpha5\nkind: Provisioner\nmetadata: {name: default}
spec:
  limits: {resources: {cpu: '-1'}}
  providerRef: {name: default}
";
    let err = error(prov);
    assert!(err.contains("document 0"), "{err}");
    assert!(err.contains("spec.limits.resources.cpu"), "{err}");
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

}
