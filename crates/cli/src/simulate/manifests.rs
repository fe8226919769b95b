//! Reading the user's manifests: multi-document YAML files, directories and standard input, with
//! workloads expanded into the pods they would create.
//!
//! Everything is read before anything is used, so a malformed document stops the run with an
//! error that names the file, the document and the field path, and nothing is half-read.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec, PodTemplate,
    PodTemplateSpec,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::yaml;

/// Where a document came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The file path as given (or `<stdin>`, or `<bundled>/NAME`).
    pub file: String,
    /// Zero-based index of the document within the file; empty documents are not counted, as
    /// in the api crate's reader, so both name the same document.
    pub document: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)
    }
}

/// Where an object came from and how to name its fields, so that later stages (conversion to
/// the solver model) report errors at the path the user wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The document.
    pub source: Source,
    /// `Kind namespace/name` of the object as written (for a workload's pods: the workload).
    pub object: String,
    /// Path of the pod spec inside the document: `spec` for a Pod, `spec.template.spec` for a
    /// workload; empty for objects that are not pods. Prefixed with `items[i].` inside a List.
    pub spec_path: String,
    /// Path of the object inside the document: empty, or `items[i].` inside a List.
    pub prefix: String,
}

impl Origin {
    /// The path of `field` of the object, e.g. `metadata.name` or `items[2].metadata.name`.
    pub fn field(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// The path of `field` below the pod spec, e.g. `spec.template.spec.containers[0]`.
    pub fn spec_field(&self, field: &str) -> String {
        if field.is_empty() {
            self.spec_path.clone()
        } else {
            format!("{}.{field}", self.spec_path)
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.source, self.object)
    }
}

/// An object together with where it came from.
#[derive(Clone, Debug)]
pub struct Sourced<T> {
    /// Where it came from.
    pub origin: Origin,
    /// The object.
    pub object: T,
}

/// A manifest that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file or directory could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The path that failed.
        path: String,
        /// The underlying error (in the message, not chained: it would print twice).
        error: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("{file}: invalid YAML: {message}")]
    Yaml {
        /// The file.
        file: String,
        /// What the YAML parser said.
        message: String,
    },
    /// A document does not match the schema of its kind.
    #[error("{source_doc} ({object}): {path}: {message}")]
    Field {
        /// Where the document is.
        source_doc: Source,
        /// `Kind namespace/name` of the object.
        object: String,
        /// The field path, e.g. `spec.template.spec.containers[0].resources.requests.cpu`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A document that is a Karpenter object, kept as JSON: the api crate types and validates it.
#[derive(Clone, Debug)]
pub struct KarpenterDocument {
    /// Where it came from.
    pub source: Source,
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// The whole document.
    pub value: Value,
}

/// A workload a CapacityBuffer's `scalableRef` may name.
#[derive(Clone, Debug)]
pub struct Scalable {
    /// `Deployment`, `StatefulSet` or `ReplicaSet` (all `apps`).
    pub kind: &'static str,
    /// Namespace (`default` when unset).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The pod template.
    pub template: PodTemplateSpec,
    /// `spec.replicas` (unset: 1).
    pub replicas: i32,
}

/// Everything `simulate` reads from the user's manifests.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// NodePools, Provisioners, NodeClasses, NodeOverlays and CapacityBuffers, in input order.
    pub karpenter: Vec<KarpenterDocument>,
    /// Pods: one per Pod document and one per replica of each workload, in input order.
    /// A pod with `spec.nodeName` is already running on that node. Boxed: a `Pod` is ~2 KB
    /// before any of its content, and growing a vector of 100 000 of them moved ~0.5 GB.
    pub pods: Vec<Sourced<Box<Pod>>>,
    /// PodTemplates (the shape of CapacityBuffers' virtual pods).
    pub pod_templates: Vec<Sourced<PodTemplate>>,
    /// Deployments, StatefulSets and ReplicaSets as CapacityBuffers' `scalableRef`s see them
    /// (their pods are in `pods`).
    pub scalables: Vec<Sourced<Scalable>>,
    /// DaemonSets: their pods are overhead on every node that accepts them.
    pub daemon_sets: Vec<Sourced<DaemonSet>>,
    /// Existing nodes.
    pub nodes: Vec<Sourced<Node>>,
    /// Namespaces (their labels resolve `namespaceSelector`s of pod affinity terms).
    pub namespaces: Vec<Sourced<Namespace>>,
    /// PodDisruptionBudgets.
    pub pdbs: Vec<Sourced<PodDisruptionBudget>>,
    /// PersistentVolumeClaims, PersistentVolumes and StorageClasses: the zones a pending
    /// pod's volumes pin it to.
    pub volume_claims: Vec<Sourced<PersistentVolumeClaim>>,
    /// PersistentVolumes.
    pub volumes: Vec<Sourced<PersistentVolume>>,
    /// StorageClasses.
    pub storage_classes: Vec<Sourced<StorageClass>>,
    /// Cluster API MachineDeployments (any version; read by `--catalog clusterapi`).
    pub machine_deployments: Vec<Sourced<DynamicObject>>,
    /// Cluster API Machines (with `--catalog clusterapi`: which nodes belong to which
    /// MachineDeployment, for the node groups' minimum sizes).
    pub machines: Vec<Sourced<DynamicObject>>,
    /// Skip lines for the other Cluster API kinds (templates, Clusters, ...): warnings, except
    /// with `--catalog clusterapi`, where they come with the MachineDeployments.
    pub cluster_api_skipped: Vec<String>,
    /// One line per skipped document (unknown kind), for stderr.
    pub warnings: Vec<String>,
}

impl Manifests {
    /// Drops the spec and status of every pod not bound to a node, keeping its metadata.
    /// Call it once the pods are converted ([`super::convert::problem`]): after that only
    /// bound pods' objects are read (disruption, repack) and every pod's metadata (the
    /// reference time). The specs are most of the input's memory (~4 KB a pod, 0.4 GB at
    /// 100 000 pods), and the solver reuses what they held instead of faulting in new pages.
    pub fn release_pending_specs(&mut self) {
        for p in &mut self.pods {
            let node = p.object.spec.as_ref().and_then(|s| s.node_name.as_deref());
            if node.is_none_or(str::is_empty) {
                p.object.spec = None;
                p.object.status = None;
            }
        }
    }
}

/// A named piece of YAML text: a file's contents, standard input, or a bundled example.
pub struct Input {
    /// Name used in messages.
    pub name: String,
    /// The YAML text.
    pub text: String,
}

/// Reads paths (files, directories of `*.yaml`/`*.yml`/`*.json` in name order, or `-` for
/// standard input) into named inputs.
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<Input>, ManifestError> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|error| ManifestError::Io {
                    path: "<stdin>".into(),
                    error,
                })?;
            inputs.push(Input {
                name: "<stdin>".into(),
                text,
            });
        } else if path.is_dir() {
            let mut files = list_manifest_files(path)?;
            files.sort();
            for file in files {
                inputs.push(read_file(&file)?);
            }
        } else {
            inputs.push(read_file(path)?);
        }
    }
    Ok(inputs)
}

fn io_error(path: &Path, error: std::io::Error) -> ManifestError {
    ManifestError::Io {
        path: path.display().to_string(),
        error,
    }
}

fn read_file(path: &Path) -> Result<Input, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    Ok(Input {
        name: path.display().to_string(),
        text,
    })
}

fn list_manifest_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let path = entry.map_err(|e| io_error(dir, e))?.path();
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if path.is_file() && is_manifest {
            files.push(path);
        }
    }
    Ok(files)
}

/// Parses every document of every input.
pub fn parse(inputs: &[Input]) -> Result<Manifests, ManifestError> {
    let mut manifests = Manifests::default();
    for input in inputs {
        let yaml_error = |message| ManifestError::Yaml {
            file: input.name.clone(),
            message,
        };
        yaml::for_each_document(&input.text, yaml_error, |document, content| {
            let source = Source {
                file: input.name.clone(),
                document,
            };
            match content {
                yaml::Document::Value(value) => add_document(&mut manifests, &source, "", value),
                yaml::Document::Pod(pod) => {
                    add_pod(&mut manifests, &source, pod);
                    Ok(())
                }
            }
        })?;
    }
    Ok(manifests)
}

/// Adds one document (or one item of a `List`, whose fields are then under `prefix`).
fn add_document(
    m: &mut Manifests,
    source: &Source,
    prefix: &str,
    value: Value,
) -> Result<(), ManifestError> {
    let Some(object) = value.as_object() else {
        return Err(field_error(
            source,
            "<document>",
            prefix.trim_end_matches('.'),
            "expected a Kubernetes object (a mapping)",
        ));
    };
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = object_name(&value);
    if kind.is_empty() {
        let path = format!("{prefix}kind");
        return Err(field_error(
            source,
            &name,
            &path,
            "missing: every document needs a kind",
        ));
    }
    let object = format!("{kind} {name}");
    let origin = |spec_path: &str| Origin {
        source: source.clone(),
        object: object.clone(),
        spec_path: if spec_path.is_empty() {
            String::new()
        } else {
            format!("{prefix}{spec_path}")
        },
        prefix: prefix.to_owned(),
    };
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    match (group, kind.as_str()) {
        ("karpenter.sh" | "karpenter.k8s.aws" | "karpenter.kwok.sh", _)
        | ("autoscaling.x-k8s.io", "CapacityBuffer") => {
            m.karpenter.push(KarpenterDocument {
                source: source.clone(),
                api_version,
                kind,
                value,
            });
        }
        // `kubectl get ... -o yaml` wraps objects in a List.
        ("", "List") => {
            let items = match object_items(&value) {
                Some(items) => items,
                None => {
                    let path = format!("{prefix}items");
                    return Err(field_error(source, &object, &path, "expected a list"));
                }
            };
            for (i, item) in items.into_iter().enumerate() {
                add_document(m, source, &format!("{prefix}items[{i}]."), item)?;
            }
        }
        ("", "Pod") => {
            let pod: Box<Pod> = typed(source, &object, prefix, value)?;
            m.pods.push(Sourced {
                origin: origin("spec"),
                object: pod,
            });
        }
        ("apps", "Deployment") => {
            let d: Deployment = typed(source, &object, prefix, value)?;
            let spec = d.spec.unwrap_or_default();
            let replicas = spec.replicas.unwrap_or(1);
            scalable(
                m,
                origin(""),
                "Deployment",
                &d.metadata,
                &spec.template,
                replicas,
            );
            expand(
                m,
                origin("spec.template.spec"),
                &d.metadata,
                spec.template,
                replicas,
            );
        }
        ("apps", "StatefulSet") => {
            let s: StatefulSet = typed(source, &object, prefix, value)?;
            let spec = s.spec.unwrap_or_default();
            let replicas = spec.replicas.unwrap_or(1);
            scalable(
                m,
                origin(""),
                "StatefulSet",
                &s.metadata,
                &spec.template,
                replicas,
            );
            expand(
                m,
                origin("spec.template.spec"),
                &s.metadata,
                spec.template,
                replicas,
            );
        }
        ("apps", "ReplicaSet") => {
            let r: ReplicaSet = typed(source, &object, prefix, value)?;
            let spec = r.spec.unwrap_or_default();
            let template = spec.template.unwrap_or_default();
            let replicas = spec.replicas.unwrap_or(1);
            scalable(
                m,
                origin(""),
                "ReplicaSet",
                &r.metadata,
                &template,
                replicas,
            );
            expand(
                m,
                origin("spec.template.spec"),
                &r.metadata,
                template,
                replicas,
            );
        }
        ("batch", "Job") => {
            let j: Job = typed(source, &object, prefix, value)?;
            let spec = j.spec.unwrap_or_default();
            let parallelism = spec.parallelism.unwrap_or(1);
            expand(
                m,
                origin("spec.template.spec"),
                &j.metadata,
                spec.template,
                parallelism,
            );
        }
        ("apps", "DaemonSet") => m.daemon_sets.push(Sourced {
            origin: origin("spec.template.spec"),
            object: typed(source, &object, prefix, value)?,
        }),
        ("", "PodTemplate") => m.pod_templates.push(Sourced {
            origin: origin(""),
            object: typed(source, &object, prefix, value)?,
        }),
        ("", "Node") => m.nodes.push(Sourced {
            origin: origin(""),
            object: typed(source, &object, prefix, value)?,
        }),
        ("", "Namespace") => m.namespaces.push(Sourced {
            origin: origin(""),
            object: typed(source, &object, prefix, value)?,
        }),
        ("policy", "PodDisruptionBudget") => m.pdbs.push(Sourced {
            origin: origin(""),
            object: typed(source, &object, prefix, value)?,
        }),
        ("", "PersistentVolumeClaim") => m.volume_claims.push(Sourced {
            origin: origin(""),
            object: typed(source, &object, prefix, value)?,
        }),
        ("", "PersistentVolume") => m.volumes.push(Sourced {
            origin: origin(""),
            object: typed(source, &object, prefix, value)?,
        }),
        ("storage.k8s.io", "StorageClass") => m.storage_classes.push(Sourced {
            origin: origin(""),
            object: typed(source, &object, prefix, value)?,
        }),
        ("cluster.x-k8s.io", "MachineDeployment") => m.machine_deployments.push(Sourced {
            origin: origin(""),
            object: typed(source, &object, prefix, value)?,
        }),
        ("cluster.x-k8s.io", "Machine") => m.machines.push(Sourced {
            origin: origin(""),
            object: typed(source, &object, prefix, value)?,
        }),
        (g, _) if g == "cluster.x-k8s.io" || g.ends_with(".cluster.x-k8s.io") => {
            m.cluster_api_skipped.push(format!(
                "warning: {source}: skipping {object} ({api_version}): not a kind simulate reads"
            ));
        }
        _ => m.warnings.push(format!(
            "warning: {source}: skipping {object} ({api_version}): not a kind simulate reads"
        )),
    }
    Ok(())
}

/// Adds a Pod document the reader typed already: as the `Pod` arm of [`add_document`] would.
fn add_pod(m: &mut Manifests, source: &Source, pod: Box<Pod>) {
    let name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
    let object = match &pod.metadata.namespace {
        Some(ns) => format!("Pod {ns}/{name}"),
        None => format!("Pod {name}"),
    };
    m.pods.push(Sourced {
        origin: Origin {
            source: source.clone(),
            object,
            spec_path: "spec".to_owned(),
            prefix: String::new(),
        },
        object: pod,
    });
}

fn object_items(value: &Value) -> Option<Vec<Value>> {
    match value.get("items") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => Some(items.clone()),
        Some(_) => None,
    }
}

fn object_name(value: &Value) -> String {
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

fn field_error(source: &Source, object: &str, path: &str, message: &str) -> ManifestError {
    ManifestError::Field {
        source_doc: source.clone(),
        object: object.to_owned(),
        path: if path.is_empty() {
            "<root>".to_owned()
        } else {
            path.to_owned()
        },
        message: message.to_owned(),
    }
}

/// Deserializes a document into its Kubernetes type, keeping the path of the first bad field.
fn typed<T: DeserializeOwned>(
    source: &Source,
    object: &str,
    prefix: &str,
    value: Value,
) -> Result<T, ManifestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            prefix.trim_end_matches('.').to_owned()
        } else {
            format!("{prefix}{path}")
        };
        field_error(source, object, &path, &e.inner().to_string())
    })
}

/// Turns a workload into `replicas` pods named `<workload>-<i>` in the workload's namespace.
/// Records a workload for CapacityBuffers' `scalableRef`s.
fn scalable(
    m: &mut Manifests,
    origin: Origin,
    kind: &'static str,
    meta: &ObjectMeta,
    template: &PodTemplateSpec,
    replicas: i32,
) {
    m.scalables.push(Sourced {
        origin,
        object: Scalable {
            kind,
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            template: template.clone(),
            replicas,
        },
    });
}

fn expand(
    m: &mut Manifests,
    origin: Origin,
    owner: &ObjectMeta,
    template: PodTemplateSpec,
    replicas: i32,
) {
    let namespace = owner
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let workload = owner.name.clone().unwrap_or_default();
    let spec: PodSpec = template.spec.unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    for i in 0..replicas.max(0) {
        let metadata = ObjectMeta {
            name: Some(format!("{workload}-{i}")),
            namespace: Some(namespace.clone()),
            labels: template_meta.labels.clone(),
            annotations: template_meta.annotations.clone(),
            ..ObjectMeta::default()
        };
        let pod = Pod {
            metadata,
            spec: Some(spec.clone()),
            status: None,
        };
        m.pods.push(Sourced {
            origin: origin.clone(),
            object: Box::new(pod),
        });
    }
}
