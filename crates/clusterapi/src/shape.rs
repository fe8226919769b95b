//! Pure: the shape of the nodes a MachineDeployment launches, read from Cluster Autoscaler's
//! scale-from-zero annotations (so a cluster set up for Cluster Autoscaler works unchanged),
//! our price and capacity-type annotations, and the min/max size annotations.
//!
//! A MachineDeployment is handled as a [`DynamicObject`] (CAPI `cluster.x-k8s.io/v1beta2`):
//! we read a handful of fields and copy its Machine template as it is, so fields we do not
//! model survive the copy.

use std::collections::BTreeMap;

use karpenter_api::labels::{
    ARCH_LABEL, HOSTNAME_LABEL, INSTANCE_TYPE_LABEL, OS_LABEL, ZONE_LABEL,
};
use karpenter_api::v1::TaintEffect;
use karpenter_solver::Resources;
use karpenter_solver::quantity::parse_for_resource;
use kube::ResourceExt;
use kube::api::DynamicObject;

/// Label that opts a MachineDeployment in (upstream's Cluster API provider uses the same one).
pub const MEMBER_LABEL: &str = "node.cluster.x-k8s.io/karpenter-member";

/// Cluster Autoscaler: the node's cpu capacity (a Kubernetes quantity). Required.
pub const CPU_ANNOTATION: &str = "capacity.cluster-autoscaler.kubernetes.io/cpu";
/// Cluster Autoscaler: the node's memory capacity (a Kubernetes quantity). Required.
pub const MEMORY_ANNOTATION: &str = "capacity.cluster-autoscaler.kubernetes.io/memory";
/// Cluster Autoscaler: the node's ephemeral-storage capacity (a Kubernetes quantity).
pub const EPHEMERAL_DISK_ANNOTATION: &str =
    "capacity.cluster-autoscaler.kubernetes.io/ephemeral-disk";
/// Cluster Autoscaler: how many pods the node runs (an integer; [`DEFAULT_MAX_PODS`] if unset).
pub const MAX_PODS_ANNOTATION: &str = "capacity.cluster-autoscaler.kubernetes.io/maxPods";
/// Cluster Autoscaler: the GPU resource name ([`DEFAULT_GPU_RESOURCE`] if unset).
pub const GPU_TYPE_ANNOTATION: &str = "capacity.cluster-autoscaler.kubernetes.io/gpu-type";
/// Cluster Autoscaler: how many GPUs the node has (an integer).
pub const GPU_COUNT_ANNOTATION: &str = "capacity.cluster-autoscaler.kubernetes.io/gpu-count";
/// Cluster Autoscaler: the node's labels, `key=value,key=value`.
pub const LABELS_ANNOTATION: &str = "capacity.cluster-autoscaler.kubernetes.io/labels";
/// Cluster Autoscaler: the node's taints, `key=value:Effect,key:Effect`.
pub const TAINTS_ANNOTATION: &str = "capacity.cluster-autoscaler.kubernetes.io/taints";
/// Cluster Autoscaler: the fewest nodes the group keeps (parsed and checked; see the README).
pub const MIN_SIZE_ANNOTATION: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size";
/// Cluster Autoscaler: the most nodes the group may have; at it, the offering is unavailable.
pub const MAX_SIZE_ANNOTATION: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size";
/// Ours: the price per hour of one node (a non-negative decimal, any currency used
/// consistently). Without it the price is estimated from cpu and memory ([`estimated_price`]).
pub const PRICE_ANNOTATION: &str = "clusterapi.karpenter.sh/price-per-hour";
/// Ours: `on-demand` (the default) or `spot`.
pub const CAPACITY_TYPE_ANNOTATION: &str = "clusterapi.karpenter.sh/capacity-type";
/// Ours: how NodeClaims get Machines from this MachineDeployment ([`LaunchMode`]): `machine`
/// (the default) or `scale`.
pub const LAUNCH_MODE_ANNOTATION: &str = "clusterapi.karpenter.sh/launch-mode";

/// How a MachineDeployment's NodeClaims get their Machines ([`LAUNCH_MODE_ANNOTATION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LaunchMode {
    /// One ownerless Machine per NodeClaim, named after it, cloned from the MachineDeployment's
    /// templates; the MachineDeployment stays at its replicas (a template only).
    #[default]
    Machine,
    /// The MachineDeployment owns the Machines: a launch raises `spec.replicas` by one and
    /// claims the Machine its MachineSet creates; a delete marks that Machine
    /// `cluster.x-k8s.io/delete-machine` and lowers `spec.replicas` (see [`crate::scale`]).
    /// For MachineDeployments managed by GitOps or a ClusterClass, whose Machines must belong
    /// to them.
    Scale,
}

/// Pods per node when [`MAX_PODS_ANNOTATION`] is unset (Cluster Autoscaler's default too).
pub const DEFAULT_MAX_PODS: i64 = 110;
/// GPU resource when [`GPU_COUNT_ANNOTATION`] is set without [`GPU_TYPE_ANNOTATION`].
pub const DEFAULT_GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Label domains CAPI copies from a Machine onto its Node (its "managed" labels): template
/// labels in them are promises about the Node, so they become instance-type labels.
const NODE_LABEL_DOMAINS: [&str; 3] = [
    "node-role.kubernetes.io",
    "node-restriction.kubernetes.io",
    "node.cluster.x-k8s.io",
];

/// A MachineDeployment that cannot be offered, and why; names the MachineDeployment and,
/// where one is at fault, the annotation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShapeError {
    /// An annotation is missing or its value is unusable.
    #[error("MachineDeployment {machine_deployment}: annotation {annotation}: {reason}")]
    Annotation {
        /// `namespace/name`.
        machine_deployment: String,
        /// The annotation at fault.
        annotation: &'static str,
        /// What is wrong, in words a user can act on.
        reason: String,
    },
    /// Something other than one annotation is wrong (a missing field, a conflict).
    #[error("MachineDeployment {machine_deployment}: {reason}")]
    Invalid {
        /// `namespace/name`.
        machine_deployment: String,
        /// What is wrong.
        reason: String,
    },
}

/// A taint every node of a shape carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShapeTaint {
    /// Key.
    pub key: String,
    /// Value (empty when none).
    pub value: String,
    /// Effect: `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// What one MachineDeployment launches: one offering (its zone and capacity type) of one
/// instance type.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// The MachineDeployment's namespace.
    pub namespace: String,
    /// The MachineDeployment's name.
    pub name: String,
    /// Instance type: the `node.kubernetes.io/instance-type` label of [`LABELS_ANNOTATION`],
    /// else the MachineDeployment's name.
    pub instance_type: String,
    /// Node capacity (cpu in millicores, memory and storage in bytes, pods and GPUs as counts).
    pub capacity: Resources,
    /// Node labels other than instance type, zone and capacity type (which the offering
    /// implies); `kubernetes.io/arch` and `kubernetes.io/os` default to amd64 and linux.
    pub labels: BTreeMap<String, String>,
    /// Node taints ([`TAINTS_ANNOTATION`]).
    pub taints: Vec<ShapeTaint>,
    /// Zone: the `topology.kubernetes.io/zone` label, else the template's failure domain.
    pub zone: String,
    /// `on-demand` or `spot`.
    pub capacity_type: String,
    /// Price per hour.
    pub price: f64,
    /// True when [`PRICE_ANNOTATION`] is absent and the price is [`estimated_price`].
    pub price_estimated: bool,
    /// [`MIN_SIZE_ANNOTATION`].
    pub min_size: Option<i64>,
    /// [`MAX_SIZE_ANNOTATION`].
    pub max_size: Option<i64>,
    /// `spec.replicas` (Machines the MachineDeployment itself runs count towards max size).
    pub replicas: i64,
    /// `spec.paused`: a paused MachineDeployment is not launched from.
    pub paused: bool,
    /// [`LAUNCH_MODE_ANNOTATION`].
    pub mode: LaunchMode,
}

impl Shape {
    /// `namespace/name` of the MachineDeployment.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Reads a MachineDeployment. Every problem is an error naming the MachineDeployment and
    /// the annotation or field; nothing here panics on user data.
    pub fn from_machine_deployment(md: &DynamicObject) -> Result<Shape, ShapeError> {
        let namespace = md.namespace().unwrap_or_default();
        let name = md.name_any();
        let key = format!("{namespace}/{name}");
        let annotations = md.annotations();
        let annotation_error = |annotation: &'static str, reason: String| ShapeError::Annotation {
            machine_deployment: key.clone(),
            annotation,
            reason,
        };
        let get = |a: &str| {
            annotations
                .get(a)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };

        let mut capacity = Resources::new();
        for (annotation, resource) in [
            (CPU_ANNOTATION, "cpu"),
            (MEMORY_ANNOTATION, "memory"),
            (EPHEMERAL_DISK_ANNOTATION, "ephemeral-storage"),
        ] {
            match get(annotation) {
                Some(v) => {
                    let amount = parse_for_resource(resource, v)
                        .map_err(|e| annotation_error(annotation, format!("{v:?}: {e}")))?;
                    if amount <= 0 {
                        return Err(annotation_error(
                            annotation,
                            format!("{v:?} must be positive"),
                        ));
                    }
                    capacity.set(resource, amount);
                }
                // Without cpu and memory the solver cannot tell what fits.
                None if resource != "ephemeral-storage" => {
                    return Err(annotation_error(
                        annotation,
                        "missing: cpu and memory capacity are required to offer this MachineDeployment"
                            .into(),
                    ));
                }
                None => {}
            }
        }
        let max_pods = match get(MAX_PODS_ANNOTATION) {
            Some(v) => positive_int(v).map_err(|r| annotation_error(MAX_PODS_ANNOTATION, r))?,
            None => DEFAULT_MAX_PODS,
        };
        capacity.set("pods", max_pods);
        if let Some(v) = get(GPU_COUNT_ANNOTATION) {
            let count = positive_int(v).map_err(|r| annotation_error(GPU_COUNT_ANNOTATION, r))?;
            let resource = get(GPU_TYPE_ANNOTATION).unwrap_or(DEFAULT_GPU_RESOURCE);
            if !resource.contains('/') {
                return Err(annotation_error(
                    GPU_TYPE_ANNOTATION,
                    format!("{resource:?} is not an extended resource name (domain/name)"),
                ));
            }
            capacity.set(resource, count);
        }

        let mut labels = template_node_labels(md);
        if let Some(v) = get(LABELS_ANNOTATION) {
            labels.extend(parse_labels(v).map_err(|r| annotation_error(LABELS_ANNOTATION, r))?);
        }
        labels
            .entry(ARCH_LABEL.into())
            .or_insert_with(|| "amd64".into());
        labels
            .entry(OS_LABEL.into())
            .or_insert_with(|| "linux".into());
        // Each node has its own hostname; a fixed one would make every node look alike.
        labels.remove(HOSTNAME_LABEL);
        let instance_type = labels
            .remove(INSTANCE_TYPE_LABEL)
            .unwrap_or_else(|| name.clone());

        let failure_domain = md
            .data
            .pointer("/spec/template/spec/failureDomain")
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty());
        // The label wins: it is what the Node carries (on Azure the failure domain is "1" and
        // the zone label "eastus-1").
        let zone = match (labels.remove(ZONE_LABEL), failure_domain) {
            (Some(l), _) => l,
            (None, Some(f)) => f.to_string(),
            (None, None) => {
                return Err(ShapeError::Invalid {
                    machine_deployment: key,
                    reason: format!(
                        "no zone: set spec.template.spec.failureDomain or {ZONE_LABEL} in annotation {LABELS_ANNOTATION}"
                    ),
                });
            }
        };

        let taints = match get(TAINTS_ANNOTATION) {
            Some(v) => parse_taints(v).map_err(|r| annotation_error(TAINTS_ANNOTATION, r))?,
            None => Vec::new(),
        };
        let capacity_type = match get(CAPACITY_TYPE_ANNOTATION) {
            None | Some("on-demand") => "on-demand".to_string(),
            Some("spot") => "spot".to_string(),
            Some(other) => {
                return Err(annotation_error(
                    CAPACITY_TYPE_ANNOTATION,
                    format!("{other:?} is neither on-demand nor spot"),
                ));
            }
        };
        let (price, price_estimated) = match get(PRICE_ANNOTATION) {
            Some(v) => match v.parse::<f64>() {
                Ok(p) if p.is_finite() && p >= 0.0 => (p, false),
                _ => {
                    return Err(annotation_error(
                        PRICE_ANNOTATION,
                        format!("{v:?} is not a non-negative decimal number"),
                    ));
                }
            },
            None => (estimated_price(&capacity), true),
        };
        let min_size = get(MIN_SIZE_ANNOTATION)
            .map(non_negative_int)
            .transpose()
            .map_err(|r| annotation_error(MIN_SIZE_ANNOTATION, r))?;
        let max_size = get(MAX_SIZE_ANNOTATION)
            .map(non_negative_int)
            .transpose()
            .map_err(|r| annotation_error(MAX_SIZE_ANNOTATION, r))?;
        if let (Some(min), Some(max)) = (min_size, max_size)
            && min > max
        {
            return Err(annotation_error(
                MIN_SIZE_ANNOTATION,
                format!("min size {min} is above max size {max}"),
            ));
        }
        let mode = match get(LAUNCH_MODE_ANNOTATION) {
            None | Some("machine") => LaunchMode::Machine,
            Some("scale") => LaunchMode::Scale,
            Some(other) => {
                return Err(annotation_error(
                    LAUNCH_MODE_ANNOTATION,
                    format!("{other:?} is neither machine nor scale"),
                ));
            }
        };
        let replicas = md
            .data
            .pointer("/spec/replicas")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let paused = md
            .data
            .pointer("/spec/paused")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        Ok(Shape {
            namespace,
            name,
            instance_type,
            capacity,
            labels,
            taints,
            zone,
            capacity_type,
            price,
            price_estimated,
            min_size,
            max_size,
            replicas,
            paused,
            mode,
        })
    }

    /// Whether a NodePool with these taints (template taints and startup taints) may launch
    /// this shape: every taint its nodes carry must be one the NodePool declares, or the solver
    /// would place pods there that the node then repels.
    pub fn fits_taints(&self, pool_taints: &[karpenter_api::v1::Taint]) -> bool {
        self.taints.iter().all(|t| {
            pool_taints.iter().any(|p| {
                p.key == t.key
                    && p.value.as_deref().unwrap_or_default() == t.value
                    && effect_name(p.effect) == t.effect
            })
        })
    }
}

fn effect_name(e: TaintEffect) -> &'static str {
    match e {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    }
}

/// A rough price when none is annotated, so consolidation still prefers smaller shapes:
/// 0.04 per vCPU-hour plus 0.005 per GiB-hour (about a general-purpose on-demand rate).
/// Annotate real prices ([`PRICE_ANNOTATION`]) for real cost decisions.
pub fn estimated_price(capacity: &Resources) -> f64 {
    let vcpu = capacity.get("cpu") as f64 / 1000.0;
    let gib = capacity.get("memory") as f64 / (1024.0 * 1024.0 * 1024.0);
    vcpu * 0.04 + gib * 0.005
}

/// Template labels CAPI propagates to the Node, minus the opt-in label itself (a Cluster
/// topology copies it into templates; it says nothing about the node).
fn template_node_labels(md: &DynamicObject) -> BTreeMap<String, String> {
    let Some(labels) = md
        .data
        .pointer("/spec/template/metadata/labels")
        .and_then(|v| v.as_object())
    else {
        return BTreeMap::new();
    };
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != MEMBER_LABEL && is_node_label_domain(k))
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect()
}

fn is_node_label_domain(key: &str) -> bool {
    let Some((domain, _)) = key.split_once('/') else {
        return false;
    };
    NODE_LABEL_DOMAINS
        .iter()
        .any(|d| domain == *d || domain.ends_with(&format!(".{d}")))
}

fn positive_int(v: &str) -> Result<i64, String> {
    match v.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{v:?} is not a positive integer")),
    }
}

fn non_negative_int(v: &str) -> Result<i64, String> {
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(format!("{v:?} is not a non-negative integer")),
    }
}

/// `key=value,key=value` (spaces around items allowed, empty items skipped).
pub fn parse_labels(v: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, val)) = item.split_once('=') else {
            return Err(format!("{item:?} is not key=value"));
        };
        let (k, val) = (k.trim(), val.trim());
        if k.is_empty() {
            return Err(format!("{item:?} has an empty key"));
        }
        out.insert(k.to_string(), val.to_string());
    }
    Ok(out)
}

/// `key=value:Effect,key:Effect` (Cluster Autoscaler's format).
pub fn parse_taints(v: &str) -> Result<Vec<ShapeTaint>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((kv, effect)) = item.rsplit_once(':') else {
            return Err(format!("{item:?} is not key=value:Effect"));
        };
        let effect = effect.trim();
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!(
                "{item:?}: effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"
            ));
        }
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{item:?} has an empty key"));
        }
        out.push(ShapeTaint {
            key: key.to_string(),
            value: value.trim().to_string(),
            effect: effect.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn md(annotations: serde_json::Value, failure_domain: Option<&str>) -> DynamicObject {
        let mut spec = json!({"replicas": 0, "template": {"metadata": {"labels": {
            "node-role.kubernetes.io/worker": "",
            "cluster.x-k8s.io/deployment-name": "md-a",
            MEMBER_LABEL: "",
        }}, "spec": {"clusterName": "w1"}}});
        if let Some(f) = failure_domain {
            spec["template"]["spec"]["failureDomain"] = json!(f);
        }
        serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "MachineDeployment",
            "metadata": {"name": "md-a", "namespace": "ns", "annotations": annotations},
            "spec": spec,
        }))
        .unwrap()
    }

    fn err(annotations: serde_json::Value) -> ShapeError {
        Shape::from_machine_deployment(&md(annotations, Some("z1"))).unwrap_err()
    }

    #[test]
    fn reads_cluster_autoscaler_annotations() {
        let s = Shape::from_machine_deployment(&md(
            json!({
                CPU_ANNOTATION: "4", MEMORY_ANNOTATION: "8Gi", MAX_PODS_ANNOTATION: "58",
                EPHEMERAL_DISK_ANNOTATION: "100Gi", GPU_COUNT_ANNOTATION: "2",
                GPU_TYPE_ANNOTATION: "amd.com/gpu",
                LABELS_ANNOTATION: "node.kubernetes.io/instance-type=c4m8, kubernetes.io/arch=arm64,team=a",
                TAINTS_ANNOTATION: "dedicated=gpu:NoSchedule,spot:PreferNoSchedule",
                PRICE_ANNOTATION: "0.25", CAPACITY_TYPE_ANNOTATION: "spot",
                MIN_SIZE_ANNOTATION: "0", MAX_SIZE_ANNOTATION: "3",
            }),
            Some("z1"),
        ))
        .unwrap();
        assert_eq!(s.key(), "ns/md-a");
        assert_eq!(s.instance_type, "c4m8");
        assert_eq!(s.capacity.get("cpu"), 4000);
        assert_eq!(s.capacity.get("memory"), 8 << 30);
        assert_eq!(s.capacity.get("ephemeral-storage"), 100 << 30);
        assert_eq!(s.capacity.get("pods"), 58);
        assert_eq!(s.capacity.get("amd.com/gpu"), 2);
        assert_eq!(s.labels[ARCH_LABEL], "arm64");
        assert_eq!(s.labels[OS_LABEL], "linux");
        assert_eq!(s.labels["team"], "a");
        assert_eq!(s.labels["node-role.kubernetes.io/worker"], "");
        assert!(
            !s.labels.contains_key(MEMBER_LABEL),
            "the opt-in label says nothing about nodes"
        );
        assert!(
            !s.labels.contains_key("cluster.x-k8s.io/deployment-name"),
            "not propagated by CAPI"
        );
        assert!(
            !s.labels.contains_key(INSTANCE_TYPE_LABEL),
            "implied by the offering"
        );
        assert_eq!(s.zone, "z1");
        assert_eq!(s.capacity_type, "spot");
        assert_eq!(s.price, 0.25);
        assert!(!s.price_estimated);
        assert_eq!((s.min_size, s.max_size), (Some(0), Some(3)));
        assert_eq!(
            s.taints,
            vec![
                ShapeTaint {
                    key: "dedicated".into(),
                    value: "gpu".into(),
                    effect: "NoSchedule".into()
                },
                ShapeTaint {
                    key: "spot".into(),
                    value: "".into(),
                    effect: "PreferNoSchedule".into()
                },
            ]
        );
    }

    #[test]
    fn defaults_name_zone_pods_price_and_capacity_type() {
        let s = Shape::from_machine_deployment(&md(
            json!({CPU_ANNOTATION: "2", MEMORY_ANNOTATION: "4Gi",
                   LABELS_ANNOTATION: "topology.kubernetes.io/zone=z2"}),
            None,
        ))
        .unwrap();
        assert_eq!(
            s.instance_type, "md-a",
            "no instance-type label: the MachineDeployment's name"
        );
        assert_eq!(s.zone, "z2");
        assert_eq!(s.capacity.get("pods"), DEFAULT_MAX_PODS);
        assert_eq!(s.labels[ARCH_LABEL], "amd64");
        assert_eq!(s.capacity_type, "on-demand");
        assert!(s.price_estimated);
        // 2 vCPU * 0.04 + 4 GiB * 0.005
        assert!((s.price - 0.1).abs() < 1e-9);
    }

    #[test]
    fn bad_values_name_the_machine_deployment_and_annotation() {
        let base = json!({CPU_ANNOTATION: "2", MEMORY_ANNOTATION: "4Gi"});
        let with = |k: &str, v: &str| {
            let mut a = base.clone();
            a[k] = json!(v);
            a
        };
        let cases = [
            (with(CPU_ANNOTATION, "two"), CPU_ANNOTATION),
            (with(CPU_ANNOTATION, "0"), CPU_ANNOTATION),
            (with(MEMORY_ANNOTATION, "-1Gi"), MEMORY_ANNOTATION),
            (json!({CPU_ANNOTATION: "2"}), MEMORY_ANNOTATION),
            (json!({MEMORY_ANNOTATION: "4Gi"}), CPU_ANNOTATION),
            (with(MAX_PODS_ANNOTATION, "1.5"), MAX_PODS_ANNOTATION),
            (with(GPU_COUNT_ANNOTATION, "x"), GPU_COUNT_ANNOTATION),
            (with(LABELS_ANNOTATION, "novalue"), LABELS_ANNOTATION),
            (with(LABELS_ANNOTATION, "=v"), LABELS_ANNOTATION),
            (with(TAINTS_ANNOTATION, "k=v"), TAINTS_ANNOTATION),
            (with(TAINTS_ANNOTATION, "k=v:Sometimes"), TAINTS_ANNOTATION),
            (with(PRICE_ANNOTATION, "cheap"), PRICE_ANNOTATION),
            (with(PRICE_ANNOTATION, "-1"), PRICE_ANNOTATION),
            (with(PRICE_ANNOTATION, "NaN"), PRICE_ANNOTATION),
            (
                with(CAPACITY_TYPE_ANNOTATION, "reserved"),
                CAPACITY_TYPE_ANNOTATION,
            ),
            (with(MAX_SIZE_ANNOTATION, "-2"), MAX_SIZE_ANNOTATION),
            (
                {
                    let mut a = with(MIN_SIZE_ANNOTATION, "5");
                    a[MAX_SIZE_ANNOTATION] = json!("2");
                    a
                },
                MIN_SIZE_ANNOTATION,
            ),
        ];
        for (annotations, expected) in cases {
            let e = err(annotations.clone());
            match &e {
                ShapeError::Annotation {
                    machine_deployment,
                    annotation,
                    ..
                } => {
                    assert_eq!(machine_deployment, "ns/md-a", "{annotations}");
                    assert_eq!(*annotation, expected, "{annotations}: {e}");
                }
                other => panic!("{annotations}: expected an annotation error, got {other}"),
            }
            let text = e.to_string();
            assert!(
                text.contains("ns/md-a") && text.contains(expected),
                "{text}"
            );
        }
    }

    #[test]
    fn zone_label_wins_over_failure_domain() {
        let s = Shape::from_machine_deployment(&md(
            json!({CPU_ANNOTATION: "2", MEMORY_ANNOTATION: "4Gi",
                   LABELS_ANNOTATION: "topology.kubernetes.io/zone=eastus-1"}),
            Some("1"),
        ))
        .unwrap();
        assert_eq!(s.zone, "eastus-1");
    }

    #[test]
    fn launch_mode_defaults_to_machine_and_rejects_unknown_values() {
        let read = |mode: Option<&str>| {
            let mut a = json!({CPU_ANNOTATION: "2", MEMORY_ANNOTATION: "4Gi"});
            if let Some(m) = mode {
                a[LAUNCH_MODE_ANNOTATION] = json!(m);
            }
            Shape::from_machine_deployment(&md(a, Some("z1")))
        };
        assert_eq!(read(None).unwrap().mode, LaunchMode::Machine);
        assert_eq!(read(Some("machine")).unwrap().mode, LaunchMode::Machine);
        assert_eq!(read(Some("scale")).unwrap().mode, LaunchMode::Scale);
        let e = read(Some("Scale")).unwrap_err();
        assert!(
            e.to_string().contains(LAUNCH_MODE_ANNOTATION) && e.to_string().contains("\"Scale\""),
            "{e}"
        );
    }

    #[test]
    fn missing_zone_is_an_error() {
        let e = Shape::from_machine_deployment(&md(
            json!({CPU_ANNOTATION: "2", MEMORY_ANNOTATION: "4Gi"}),
            None,
        ))
        .unwrap_err();
        assert!(matches!(e, ShapeError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("failureDomain"), "{e}");
    }

    #[test]
    fn taints_must_be_declared_by_the_pool() {
        let s = Shape::from_machine_deployment(&md(
            json!({CPU_ANNOTATION: "2", MEMORY_ANNOTATION: "4Gi",
                   TAINTS_ANNOTATION: "dedicated=gpu:NoSchedule"}),
            Some("z1"),
        ))
        .unwrap();
        let taint = |k: &str, v: Option<&str>, e| karpenter_api::v1::Taint {
            key: k.into(),
            value: v.map(Into::into),
            effect: e,
        };
        assert!(!s.fits_taints(&[]));
        assert!(!s.fits_taints(&[taint("dedicated", Some("gpu"), TaintEffect::NoExecute)]));
        assert!(s.fits_taints(&[taint("dedicated", Some("gpu"), TaintEffect::NoSchedule)]));
        let plain = Shape {
            taints: vec![],
            ..s
        };
        assert!(plain.fits_taints(&[]));
    }
}
