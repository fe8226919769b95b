//! `simulate --from-cluster`: read a running cluster into the same named YAML [`Input`]s that
//! `-f` files give, so everything after reading (parsing, conversion, planning, output) is the
//! one path `-f` takes, and `--snapshot FILE` (those same texts, concatenated) replays to the
//! identical result with `simulate -f FILE`.
//!
//! Read-only by construction: the only requests are `list` calls (paged with continue tokens),
//! on the kinds of [`KINDS`]; [`rbac`] prints the ClusterRole that allows exactly those.
//! Workloads (Deployments, Jobs, ...) are not read: in a cluster their pods exist already, and
//! reading both would count each replica twice. So a CapacityBuffer is resolved when it names
//! a PodTemplate (read, with the PodTemplates, when the cluster has buffers); one with a
//! `scalableRef` gets the same warning as in a file without its workload.
//!
//! What the snapshot leaves out (the simulation needs none of it, and a snapshot is meant to
//! be shared): `metadata.managedFields`, the `kubectl.kubernetes.io/last-applied-configuration`
//! annotation (a copy of the object as applied), and every container's `env`, `envFrom`,
//! `command` and `args`. Finished pods (`Succeeded`/`Failed`) are not read: they hold nothing.

use std::path::PathBuf;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::Value;

use super::manifests::Input;

/// Objects per list page: big enough for few round trips, small enough that no single response
/// is huge on a cluster with tens of thousands of pods.
pub const PAGE: u32 = 500;

/// Name prefix of the inputs read from the cluster, as they appear in warnings.
pub const SOURCE_PREFIX: &str = "<cluster>";

/// When a kind is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Always: a cluster without it is broken, so failing to list it is an error.
    Always,
    /// When the cluster serves it (Karpenter's CRDs are absent from clusters run by another
    /// autoscaler); a 404 means "not installed".
    IfServed,
    /// Only with `--catalog clusterapi`, when served.
    ClusterApi,
    /// Only when a CapacityBuffer was read (the PodTemplates buffers name).
    WithBuffers,
}

/// A kind simulate reads from a cluster.
#[derive(Clone, Copy, Debug)]
struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    need: Need,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    need: Need,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        need,
    }
}

/// Every kind read, in the order the inputs are built (and the snapshot written): the
/// Karpenter objects first, as a user's files usually have them.
const KINDS: [Kind; 17] = [
    kind(
        "karpenter.sh",
        "v1",
        "NodePool",
        "nodepools",
        Need::IfServed,
    ),
    kind(
        "karpenter.sh",
        "v1alpha5",
        "Provisioner",
        "provisioners",
        Need::IfServed,
    ),
    kind(
        "karpenter.k8s.aws",
        "v1",
        "EC2NodeClass",
        "ec2nodeclasses",
        Need::IfServed,
    ),
    kind(
        "karpenter.kwok.sh",
        "v1alpha1",
        "KWOKNodeClass",
        "kwoknodeclasses",
        Need::IfServed,
    ),
    kind(
        "karpenter.sh",
        "v1alpha1",
        "NodeOverlay",
        "nodeoverlays",
        Need::IfServed,
    ),
    kind(
        "autoscaling.x-k8s.io",
        "v1beta1",
        "CapacityBuffer",
        "capacitybuffers",
        Need::IfServed,
    ),
    kind(
        "cluster.x-k8s.io",
        "v1beta2",
        "MachineDeployment",
        "machinedeployments",
        Need::ClusterApi,
    ),
    // Which nodes belong to which MachineDeployment (its min size, for disruption).
    kind(
        "cluster.x-k8s.io",
        "v1beta2",
        "Machine",
        "machines",
        Need::ClusterApi,
    ),
    kind("", "v1", "Namespace", "namespaces", Need::Always),
    kind("", "v1", "Node", "nodes", Need::Always),
    kind("", "v1", "Pod", "pods", Need::Always),
    kind("apps", "v1", "DaemonSet", "daemonsets", Need::Always),
    kind(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        Need::Always,
    ),
    kind(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        Need::Always,
    ),
    kind(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        Need::Always,
    ),
    kind(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        Need::Always,
    ),
    kind("", "v1", "PodTemplate", "podtemplates", Need::WithBuffers),
];

/// Which cluster to read.
#[derive(Clone, Debug)]
pub struct Target {
    /// A kubeconfig file; `None`: `$KUBECONFIG` or `~/.kube/config`, or the in-cluster
    /// ServiceAccount when there is neither.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig instead of its current one.
    pub context: Option<String>,
    /// Also read Cluster API MachineDeployments and Machines (`--catalog clusterapi`).
    pub cluster_api: bool,
    /// Objects per list request ([`PAGE`]; tests make it small to exercise continue tokens).
    pub page_size: u32,
}

/// Reading the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The kubeconfig could not be read or used.
    #[error("cannot use the kubeconfig: {0}")]
    Kubeconfig(String),
    /// No client could be built from it.
    #[error("cannot build a client: {0}")]
    Client(#[source] kube::Error),
    /// The credentials may not list a kind.
    #[error(
        "not allowed to list {resource}: {message} (`karpenter simulate --print-rbac` prints the read-only ClusterRole simulate needs)"
    )]
    Forbidden {
        /// `plural.group`.
        resource: String,
        /// The API server's message.
        message: String,
    },
    /// A list request failed.
    #[error("cannot list {resource}: {source}")]
    List {
        /// `plural.group`.
        resource: String,
        /// What failed.
        #[source]
        source: kube::Error,
    },
    /// An object could not be written as YAML.
    #[error("cannot write {resource} as YAML: {message}")]
    Yaml {
        /// `plural.group`.
        resource: String,
        /// What the serializer said.
        message: String,
    },
}

/// What was read: one input per kind (named `<cluster>/<plural>`), and notes for stderr.
pub struct Read {
    /// The inputs, in [`KINDS`] order, kinds with no object left out.
    pub inputs: Vec<Input>,
    /// What was not found (e.g. Karpenter not installed).
    pub notes: Vec<String>,
}

/// Connects with the kubeconfig of `target`.
pub async fn client(target: &Target) -> Result<Client, LiveError> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..KubeConfigOptions::default()
    };
    let failed = |e: &dyn std::fmt::Display| LiveError::Kubeconfig(e.to_string());
    let config = match &target.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| LiveError::Kubeconfig(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| failed(&e))?
        }
        None if target.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| failed(&e))?,
        None => Config::infer().await.map_err(|e| failed(&e))?,
    };
    Client::try_from(config).map_err(LiveError::Client)
}

/// Reads every kind of [`KINDS`] the target needs.
pub async fn read(client: &Client, target: &Target) -> Result<Read, LiveError> {
    let mut inputs = Vec::new();
    let mut notes = Vec::new();
    let mut karpenter_pools = false;
    let mut buffers = false;
    let mut absent = Vec::new();
    for k in KINDS {
        if (k.need == Need::ClusterApi && !target.cluster_api)
            || (k.need == Need::WithBuffers && !buffers)
        {
            continue;
        }
        let resource = resource_name(&k);
        let objects = match list_all(client, &k, target.page_size).await {
            Ok(objects) => objects,
            Err(kube::Error::Api(s)) if s.code == 404 && k.need != Need::Always => {
                absent.push(format!("{}/{} {}", k.group, k.version, k.kind));
                continue;
            }
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 401 => {
                return Err(LiveError::Forbidden {
                    resource,
                    message: s.message,
                });
            }
            Err(source) => return Err(LiveError::List { resource, source }),
        };
        if matches!(k.kind, "NodePool" | "Provisioner") && !objects.is_empty() {
            karpenter_pools = true;
        }
        if k.kind == "CapacityBuffer" && !objects.is_empty() {
            buffers = true;
        }
        if objects.is_empty() {
            continue;
        }
        let mut text = String::new();
        for object in objects {
            let yaml = serde_saphyr::to_string(&object).map_err(|e| LiveError::Yaml {
                resource: resource.clone(),
                message: e.to_string(),
            })?;
            text.push_str("---\n");
            text.push_str(&yaml);
        }
        inputs.push(Input {
            name: format!("{SOURCE_PREFIX}/{resource}"),
            text,
        });
    }
    if !absent.is_empty() {
        notes.push(format!(
            "note: the cluster does not serve {}; none read",
            absent.join(", ")
        ));
    }
    if !karpenter_pools {
        notes.push(
            "note: no NodePool or Provisioner in the cluster: its nodes are the only capacity \
             (pending pods that fit nowhere are unschedulable); --repack still prices a fleet \
             from --catalog"
                .to_owned(),
        );
    }
    Ok(Read { inputs, notes })
}

/// The snapshot file's text: every input, in order, as one multi-document YAML stream.
pub fn snapshot(inputs: &[Input]) -> String {
    let mut out = String::from(
        "# What `karpenter simulate --from-cluster` read; replay with `karpenter simulate -f FILE`.\n",
    );
    for input in inputs {
        out.push_str(&format!("# {}\n", input.name));
        out.push_str(&input.text);
    }
    out
}

/// `plural.group` (`pods` for the core group), as RBAC and kubectl name resources.
fn resource_name(k: &Kind) -> String {
    if k.group.is_empty() {
        k.plural.to_owned()
    } else {
        format!("{}.{}", k.plural, k.group)
    }
}

/// Lists one kind across all namespaces, page by page, as JSON with `apiVersion` and `kind` set
/// (list items come without them) and the parts simulate does not need removed.
async fn list_all(client: &Client, k: &Kind, page_size: u32) -> Result<Vec<Value>, kube::Error> {
    let gvk = GroupVersionKind::gvk(k.group, k.version, k.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, k.plural);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let mut params = ListParams::default().limit(page_size.max(1));
    if k.kind == "Pod" {
        params = params.fields("status.phase!=Succeeded,status.phase!=Failed");
    }
    let mut out = Vec::new();
    loop {
        let page = api.list(&params).await?;
        for object in page.items {
            let mut value = serde_json::to_value(&object).map_err(kube::Error::SerdeError)?;
            if let Some(map) = value.as_object_mut() {
                map.insert(
                    "apiVersion".into(),
                    Value::String(resource.api_version.clone()),
                );
                map.insert("kind".into(), Value::String(k.kind.to_owned()));
            }
            redact(&mut value);
            out.push(value);
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    Ok(out)
}

/// Removes what the simulation does not use and a shared snapshot should not carry.
fn redact(value: &mut Value) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    let spec = match value.get("kind").and_then(Value::as_str) {
        Some("Pod") => value.pointer_mut("/spec"),
        Some("DaemonSet") => value.pointer_mut("/spec/template/spec"),
        Some("PodTemplate") => value.pointer_mut("/template/spec"),
        _ => None,
    };
    let Some(spec) = spec.and_then(Value::as_object_mut) else {
        return;
    };
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                for field in ["env", "envFrom", "command", "args"] {
                    c.remove(field);
                }
            }
        }
    }
}

/// The ClusterRole (and a binding to fill in) that lets a user run `simulate --from-cluster`:
/// `get` and `list` on exactly the kinds read, nothing else.
pub fn rbac() -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for k in KINDS {
        match groups.iter_mut().find(|(g, _)| *g == k.group) {
            Some((_, plurals)) => plurals.push(k.plural),
            None => groups.push((k.group, vec![k.plural])),
        }
    }
    let mut out = String::from(
        "# Read-only access for `karpenter simulate --from-cluster` (get and list only).\n\
         # Kinds a cluster does not serve (Karpenter's, Cluster API's) are skipped when absent.\n\
         apiVersion: rbac.authorization.k8s.io/v1\n\
         kind: ClusterRole\n\
         metadata:\n  name: karpenter-simulate-reader\n\
         rules:\n",
    );
    for (group, plurals) in groups {
        out.push_str(&format!(
            "- apiGroups: [\"{group}\"]\n  resources: [{}]\n  verbs: [get, list]\n",
            plurals.join(", ")
        ));
    }
    out.push_str(
        "---\n\
         apiVersion: rbac.authorization.k8s.io/v1\n\
         kind: ClusterRoleBinding\n\
         metadata:\n  name: karpenter-simulate-reader\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: karpenter-simulate-reader\n\
         subjects:\n\
         - apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: REPLACE-WITH-YOUR-USER\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::manifests;

    #[test]
    fn redaction_keeps_what_the_simulation_reads() {
        let mut pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "managedFields": [{}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                "karpenter.sh/do-not-disrupt": "true"}},
            "spec": {"containers": [{"name": "c", "env": [{"name": "PASSWORD", "value": "x"}],
                "command": ["run"], "args": ["--token=x"],
                "resources": {"requests": {"cpu": "1"}}}]}
        });
        redact(&mut pod);
        assert_eq!(
            pod,
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p",
                    "annotations": {"karpenter.sh/do-not-disrupt": "true"}},
                "spec": {"containers": [{"name": "c",
                    "resources": {"requests": {"cpu": "1"}}}]}
            })
        );
    }

    /// The snapshot is YAML written by serde-saphyr and read back by the manifest reader:
    /// strings that YAML would otherwise read as booleans, numbers or null must stay strings.
    #[test]
    fn values_that_look_like_other_types_survive_the_yaml_round_trip()
    -> Result<(), Box<dyn std::error::Error>> {
        let tricky = [
            "true",
            "false",
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "null",
            "~",
            "",
            "1",
            "0x10",
            "1e3",
            "01",
            "1.0",
            ".inf",
            "-",
            "a: b",
            "#x",
            "multi\nline",
            " lead",
            "trail ",
            "'q'",
            "\"dq\"",
            "*alias",
            "&anchor",
            "!tag",
            "%",
        ];
        let labels: serde_json::Map<String, Value> = tricky
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("k{i}"), Value::String((*v).to_owned())))
            .collect();
        let node = serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n", "labels": labels},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi"}}
        });
        let text = format!("---\n{}", serde_saphyr::to_string(&node)?);
        let parsed = manifests::parse(&[Input {
            name: "snapshot".into(),
            text,
        }])?;
        let read = parsed.nodes.first().ok_or("no node read back")?;
        let back: Value = serde_json::to_value(&read.object)?;
        assert_eq!(back["metadata"]["labels"], node["metadata"]["labels"]);
        Ok(())
    }

    #[test]
    fn the_cluster_role_allows_only_get_and_list_on_every_kind_read() {
        let text = rbac();
        for k in KINDS {
            assert!(text.contains(k.plural), "{} missing", k.plural);
        }
        let verbs: Vec<&str> = text.lines().filter(|l| l.contains("verbs")).collect();
        assert!(!verbs.is_empty());
        assert!(
            verbs.iter().all(|l| l.trim() == "verbs: [get, list]"),
            "{verbs:?}"
        );
    }
}
