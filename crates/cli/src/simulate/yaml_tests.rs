use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use k8s_openapi::api::core::v1::Pod;

use super::{Document, for_each_document, may_have_aliases, reference};

/// What a reader returned: the documents with their indices, then the error if any.
type Read = (Vec<(usize, Value)>, Option<String>);

/// A document as the manifest reader ends up with it: a `v1` Pod typed (from the JSON value
/// when the reader gave one, as `manifests::typed` does), then written back as JSON so both
/// paths compare; anything else as read.
fn normalise(document: Document) -> Value {
    let pod = match document {
        Document::Pod(pod) => *pod,
        Document::Value(value) => {
            let is_pod = value.get("apiVersion") == Some(&json!("v1"))
                && value.get("kind") == Some(&json!("Pod"));
            match serde_json::from_value::<Pod>(value.clone()) {
                Ok(pod) if is_pod => pod,
                _ => return value,
            }
        }
    };
    serde_json::to_value(pod).expect("a Pod serializes")
}

fn read_with(text: &str, fast: bool) -> Read {
    let mut documents = Vec::new();
    let add = |index, document| {
        documents.push((index, normalise(document)));
        Ok::<(), String>(())
    };
    let result = if fast {
        for_each_document(text, |m| m, add)
    } else {
        reference(text, 0, |m| m, add)
    };
    (documents, result.err())
}

/// Whether the fast path alone reads `text` (no fallback to serde-saphyr).
fn fast_path_alone(text: &str) -> bool {
    !may_have_aliases(text)
        && yaml_serde::Deserializer::from_str(text).all(|d| Document::deserialize(d).is_ok())
}

fn assert_same(text: &str) {
    assert_eq!(
        read_with(text, true),
        read_with(text, false),
        "fast path and serde-saphyr differ on:\n{text}"
    );
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn the_repositorys_manifests_read_the_same_and_on_the_fast_path() {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in [
        "examples",
        "crates/api/tests",
        "crates/cli/tests/data",
        "charts/karpenter/crds",
    ] {
        yaml_files(&root.join(dir), &mut files);
    }
    // The invalid-NodePool fixtures are valid YAML (invalid only for the CRD schema), so every
    // file here must stay on the fast path; fewer files than this means the walk broke.
    assert!(files.len() >= 50, "found only {} files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("repository file");
        assert_same(&text);
        assert!(
            fast_path_alone(&text),
            "{} left the fast path",
            file.display()
        );
    }
}

#[test]
fn core_schema_scalars_read_as_serde_saphyr_reads_them() {
    let scalars = [
        "a: null",
        "a: ~",
        "a:",
        "a: Null",
        "a: true",
        "a: True",
        "a: FALSE",
        "a: yes",
        "a: no",
        "a: on",
        "a: off",
        "a: y",
        "a: 0",
        "a: -17",
        "a: +17",
        "a: 0o17",
        "a: 0x1F",
        "a: 017",
        "a: 1_000",
        "a: 1.5",
        "a: .5",
        "a: -1.",
        "a: 1e3",
        "a: 1E-3",
        "a: .inf",
        "a: -.Inf",
        "a: .nan",
        "a: 18446744073709551615",
        "a: 18446744073709551616",
        "a: -9223372036854775809",
        "a: '123'",
        "a: \"true\"",
        "a: 100m",
        "a: 1Gi",
        "a: 2026-12-05",
        "a: 12:30:00",
        "a: 0.1.2",
        "a: '' ",
        "a: \"\\u00e9\\t\"",
        "a: |\n  x\n  y\n",
        "a: >\n  x\n  y\n",
        "a: |-\n  x\n",
        "a: [1, 'b', c]",
        "a: {b: 1, c: [d]}",
        "a: !!str 123",
        "a: !!int '7'",
        "a: !custom x",
        "1: a",
        "true: a",
        "null: a",
        "? [a]\n: b",
        "a: &x [1]\nb: *x",
        "a: n",
        "a: Yes",
        "a: NO",
        "a: On",
        "a: Y",
        "a: 'yes'",
        "a: 0_1",
        "a: 1_0.5",
        "a: 00",
        "a: 08:00",
        "a: 0755",
        "a: -012",
        "a: 0.5",
        "a: 10.0",
        "a: '017'",
        "a: 1_",
        "a: _1",
    ];
    let mut diffs = Vec::new();
    for text in scalars {
        let (f, r) = (read_with(text, true), read_with(text, false));
        if f != r {
            diffs.push(format!("{text:?}: fast {f:?} reference {r:?}"));
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn document_boundaries_and_empty_documents_are_counted_alike() {
    for text in [
        "",
        "---",
        "---\n---\n",
        "a: 1\n---\n---\nb: 2\n",
        "--- null\n--- a\n---\n- 1\n",
        "a: 1\n...\n---\nb: 2\n",
        "# only a comment\n",
        "\u{feff}a: 1\n---\nb: 2\n",
        "a: 1\r\nb:\r\n  - x\r\n---\r\nc: 'y'\r\n",
        "a:\tb\n",
        "a: \"multi\n  line\"\n",
    ] {
        assert_same(text);
    }
}

#[test]
fn what_the_fast_path_refuses_is_left_to_serde_saphyr() {
    // Each of these makes the fast path give up at the second document; the first must not be
    // delivered twice and the rest must be read by serde-saphyr with its indices.
    let refused = [
        "a: 1\nb: 2\na: 3\n",                      // duplicate key: serde-saphyr refuses
        "base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n", // merge key: serde-saphyr merges
        "a: !custom x\n",                          // a tag
        "a: [1, 2\n",                              // syntax error: serde-saphyr's message
        "a: .inf\n",                               // not JSON
    ];
    for bad in refused {
        let text = format!("first: 1\n---\n{bad}---\nlast: 2\n");
        assert!(!fast_path_alone(&text), "fast path accepted:\n{text}");
        let (documents, error) = read_with(&text, true);
        assert_eq!(documents.first(), Some(&(0, json!({"first": 1}))));
        assert_eq!(
            documents.iter().filter(|(i, _)| *i == 0).count(),
            1,
            "document 0 delivered twice for:\n{text}"
        );
        assert_eq!((documents, error), read_with(&text, false), "on:\n{text}");
    }
}

#[test]
fn nesting_past_serde_saphyr_s_depth_limit_is_refused_alike() {
    for depth in [30, 63, 64, 65, 100, 200] {
        let text = format!("a: {}1{}\n", "[".repeat(depth), "]".repeat(depth));
        assert_same(&text);
        let block: String = (0..depth)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect();
        assert_same(&format!("{block}{}v: 1\n", "  ".repeat(depth)));
    }
}

#[test]
fn streams_with_aliases_are_read_by_serde_saphyr_alone() {
    // One anchor aliased 30 times: serde-saphyr's alias/anchor ratio budget decides, not libyaml.
    let aliases = (0..30).map(|i| format!("k{i}: *r\n")).collect::<String>();
    let text = format!("first: 1\n---\nbase: &r {{cpu: 1}}\n{aliases}");
    assert!(may_have_aliases(&text));
    assert_same(&text);
    for no in [
        "schedule: \"0 * * * *\"",
        "host: '*.example.com'",
        "a: 2*3",
        "a: \"*/5\"",
    ] {
        assert!(!may_have_aliases(no), "{no}");
    }
    for yes in ["a: *x", "- *x", "a: [*x]", "{a: *x}", "*x: 1", "a: [1,*x]"] {
        assert!(may_have_aliases(yes), "{yes}");
    }
}

#[test]
fn an_alias_bomb_is_refused_with_serde_saphyr_s_message() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let (documents, error) = read_with(&text, true);
    assert!(documents.is_empty());
    let error = error.expect("an alias bomb must be refused");
    assert_eq!(Some(error), read_with(&text, false).1);
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        "[a-zA-Z0-9 :#'\"./_-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("yes"),
            Just("~"),
            Just("0x10"),
            Just("1e3"),
            Just("null"),
            Just("-")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z][a-z0-9.-]{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Documents written by serde-saphyr (quoting wherever YAML needs it) read back the same
    /// through both paths, as one stream.
    #[test]
    fn written_documents_read_the_same(values in prop::collection::vec(json_value(), 1..4)) {
        let mut text = String::new();
        for value in &values {
            text.push_str("---\n");
            text.push_str(&serde_saphyr::to_string(value).expect("serializable"));
        }
        let fast = read_with(&text, true);
        prop_assert_eq!(&fast, &read_with(&text, false), "on:\n{}", text);
    }
}

/// How many documents of `text` the fast path alone hands over typed as Pods.
fn typed_pods(text: &str) -> usize {
    yaml_serde::Deserializer::from_str(text)
        .map(Document::deserialize)
        .filter(|d| matches!(d, Ok(Document::Pod(_))))
        .count()
}

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels: {app: web, tier: "1", version: "1.20"}
  annotations:
    karpenter.sh/do-not-disrupt: "true"
  creationTimestamp: "2026-12-05T10:00:00Z"
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-abc, uid: u-1, controller: true}
spec:
  nodeSelector: {topology.kubernetes.io/zone: zone-a}
  priority: -5
  containers:
  - name: app
    image: nginx
    ports: [{containerPort: 80}]
    livenessProbe: {httpGet: {port: http, path: /}, periodSeconds: 10}
    readinessProbe: {tcpSocket: {port: 8080}}
    resources:
      requests: {cpu: 1, memory: 1.5Gi, ephemeral-storage: 0.5}
      limits: {cpu: "2", nvidia.com/gpu: 1}
  initContainers:
  - {name: init, image: busybox, resources: {requests: {cpu: 250m}}}
  tolerations:
  - {key: dedicated, operator: Equal, value: web, effect: NoSchedule}
  - {operator: Exists, tolerationSeconds: 300}
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector: {matchLabels: {app: web}}
        topologyKey: kubernetes.io/hostname
    nodeAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 50
        preference:
          matchExpressions: [{key: karpenter.sh/capacity-type, operator: In, values: [spot]}]
  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,
     labelSelector: {matchExpressions: [{key: app, operator: Exists}]}, minDomains: 2}
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data-web-0}
  schedulingGates: ~
  unknownField: {nested: [1, {a: b}]}
status:
  phase: Pending
  conditions: [{type: PodScheduled, status: "False", reason: Unschedulable}]
"#;

#[test]
fn pod_documents_are_typed_on_the_way_and_equal_the_json_path() {
    let minimal = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n";
    let null_parts = "kind: Pod\napiVersion: v1\nmetadata:\nspec:\nstatus: ~\n";
    let empty_spec = "apiVersion: v1\nkind: Pod\nspec: {}\nmetadata: {name: b, labels: {}}\n";
    let text = format!("{POD}---\n{minimal}---\n{null_parts}---\n{empty_spec}");
    assert_eq!(typed_pods(&text), 4, "every Pod typed on the way");
    assert!(fast_path_alone(&text));
    assert_same(&text);
    let (documents, error) = read_with(&text, true);
    assert_eq!(error, None);
    // The JSON path's reading of the first Pod, field by field where a reader could slip.
    let pod: Pod = serde_json::from_value(documents[0].1.clone()).expect("a Pod");
    let spec = pod.spec.expect("spec");
    let requests = spec.containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .expect("requests");
    assert_eq!(requests["cpu"].0, "1");
    assert_eq!(requests["memory"].0, "1.5Gi");
    assert_eq!(requests["ephemeral-storage"].0, "0.5");
    assert_eq!(spec.priority, Some(-5));
    assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(2));
    let labels = pod.metadata.labels.expect("labels");
    assert_eq!(labels["tier"], "1", "a quoted number stays a string");
    assert_eq!(labels["version"], "1.20");
}

#[test]
fn pods_whose_kind_comes_last_are_read_as_values() {
    // Keys before `apiVersion` and `kind` are read as values and handed over with them.
    let late = "metadata: {name: late}\napiVersion: v1\nkind: Pod\nspec: {containers: []}\n";
    assert_eq!(typed_pods(late), 1);
    assert_same(late);
    let last = "metadata: {name: last}\nspec: {containers: []}\napiVersion: v1\nkind: Pod\n";
    assert_eq!(typed_pods(last), 0);
    assert_same(last);
    let other = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
    assert_eq!(typed_pods(other), 0);
    assert_same(other);
    let v2 = "apiVersion: v2\nkind: Pod\nmetadata: {name: p}\n";
    assert_eq!(typed_pods(v2), 0);
    assert_same(v2);
}

#[test]
fn what_the_fast_path_refuses_inside_a_pod_is_left_to_serde_saphyr() {
    let refused = [
        "metadata: {name: p, labels: {a: '1', a: '2'}}", // duplicate key
        "metadata: {name: p, labels: {enabled: yes}}",   // YAML 1.1 bool
        "metadata: {name: p}\nspec: {priority: 017}",    // YAML 1.1 octal
        "metadata: {name: p}\nspec: {containers: !custom x}", // a tag
        "metadata: {name: p}\nunknown: {a: 1, a: 2}",    // duplicate in an ignored field
        "metadata: {name: p}\nspec: {activeDeadlineSeconds: .inf}", // not JSON
        "metadata: {name: p}\nspec: {containers: [1]}",  // a type error: the reference's message
        "metadata: {name: p}\nmetadata: {name: q}",      // duplicate top-level key
    ];
    for bad in refused {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: first}}\n---\napiVersion: v1\nkind: Pod\n{bad}\n---\nlast: 2\n"
        );
        assert!(!fast_path_alone(&text), "fast path accepted:\n{text}");
        assert_same(&text);
    }
}

#[test]
fn duplicate_keys_are_found_in_mappings_of_any_size() {
    for (size, again) in [(3, 1), (16, 2), (17, 16), (40, 3), (40, 39)] {
        let mut labels: String = (0..size).map(|i| format!("  k{i}: v\n")).collect();
        let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n";
        let unique = format!("{pod}{}", labels.replace("  k", "    k"));
        assert_eq!(typed_pods(&unique), 1, "{size} distinct labels");
        labels.push_str(&format!("  k{again}: w\n"));
        let repeated = format!("{pod}{}", labels.replace("  k", "    k"));
        assert_eq!(
            typed_pods(&repeated),
            0,
            "label {again} repeated among {size}"
        );
        assert_same(&repeated);
    }
}

fn pod_value() -> impl Strategy<Value = Value> {
    (
        "[a-z][a-z0-9-]{0,8}",
        prop::collection::btree_map("[a-z][a-z0-9./-]{0,8}", json_leaf(), 0..4),
        json_value(),
        json_value(),
    )
        .prop_map(|(name, labels, containers, selector)| {
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": labels},
                "spec": {"containers": containers, "nodeSelector": selector},
            })
        })
}

proptest! {
    /// Pod documents with arbitrary labels and spec parts (most of them not a valid Pod) read
    /// back the same typed on the way as through the JSON path, refusals and errors included.
    #[test]
    fn written_pods_read_the_same(pods in prop::collection::vec(pod_value(), 1..4)) {
        let mut text = String::new();
        for pod in &pods {
            text.push_str("---\n");
            text.push_str(&serde_saphyr::to_string(pod).expect("serializable"));
        }
        prop_assert_eq!(&read_with(&text, true), &read_with(&text, false), "on:\n{}", text);
    }
}
