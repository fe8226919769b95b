//! A pod's volumes → the node requirements they impose (upstream Karpenter's volume topology).
//!
//! A pod whose PersistentVolumeClaim is bound to a zonal PersistentVolume can only run where
//! that volume can be attached; one whose claim will be provisioned on first use
//! (`WaitForFirstConsumer`) can only run where its StorageClass allows volumes to be made.
//! These requirements go to [`PodView::volume_requirements`], kept apart from the pod's own
//! node affinity so that topology-spread counting (which looks at the pod's affinity) is not
//! distorted by them, as upstream does.
//!
//! Simplifications, as upstream makes them:
//! - a PV's `nodeAffinity.required` may have several (ORed) terms; only the **first** is used,
//!   because the solver's volume requirements are one ANDed list;
//! - likewise only the first `allowedTopologies` term of a StorageClass is used;
//! - a hostname requirement of a `local` or `hostPath` PV is dropped: a new node never has the
//!   old node's name, and keeping it would make the pod impossible rather than just pinned.
//!
//! A claim that cannot be judged yet (missing, being deleted, `Lost`, unbound with `Immediate`
//! binding, its PV or StorageClass missing) makes the pod not provisionable for now: that is
//! a [`ConvertError`] naming the pod, the volume's path and the claim.
//!
//! [`PodView::volume_requirements`]: karpenter_solver::PodView::volume_requirements

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    self as k8s, PersistentVolume, PersistentVolumeClaim, TopologySelectorTerm,
};
use k8s_openapi::api::storage::v1::StorageClass;
use karpenter_solver::{NodeSelectorRequirement, Operator};

use super::pods::PodObject;
use super::{At, ConvertError, describe};
use crate::labels::HOSTNAME_LABEL;

/// The binding mode under which a claim is provisioned where its first pod lands.
const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

/// PersistentVolumeClaims (by namespace and name), PersistentVolumes and StorageClasses (by
/// name), borrowed from wherever the caller keeps them (a watch cache, parsed files).
#[derive(Debug, Default, Clone)]
pub struct VolumeIndex<'a> {
    claims: HashMap<(&'a str, &'a str), &'a PersistentVolumeClaim>,
    volumes: HashMap<&'a str, &'a PersistentVolume>,
    classes: HashMap<&'a str, &'a StorageClass>,
}

impl<'a> VolumeIndex<'a> {
    /// Indexes the objects. Unnamed objects cannot be referred to and are skipped; a claim
    /// without a namespace is taken to be in `default`, as the apiserver defaults it.
    pub fn new(
        claims: impl IntoIterator<Item = &'a PersistentVolumeClaim>,
        volumes: impl IntoIterator<Item = &'a PersistentVolume>,
        classes: impl IntoIterator<Item = &'a StorageClass>,
    ) -> Self {
        let claims = claims
            .into_iter()
            .filter_map(|c| {
                let name = c.metadata.name.as_deref()?;
                let ns = c.metadata.namespace.as_deref().unwrap_or("default");
                Some(((ns, name), c))
            })
            .collect();
        let volumes = volumes
            .into_iter()
            .filter_map(|v| Some((v.metadata.name.as_deref()?, v)))
            .collect();
        let classes = classes
            .into_iter()
            .filter_map(|s| Some((s.metadata.name.as_deref()?, s)))
            .collect();
        Self {
            claims,
            volumes,
            classes,
        }
    }
}

/// The node requirements a pod's claimed volumes impose (empty for a pod without any).
///
/// Looks at `persistentVolumeClaim` volumes and at generic `ephemeral` volumes (whose claim is
/// `<pod>-<volume>`; before the ephemeral-volume controller made it, the claim template's
/// StorageClass is judged instead). Errors name the pod (`Pod ns/name`) and the volume's
/// path, and the message names the claim.
pub fn volume_requirements(
    pod: &(impl PodObject + ?Sized),
    index: &VolumeIndex<'_>,
) -> Result<Vec<NodeSelectorRequirement>, ConvertError> {
    let ns = pod.metadata().namespace.as_deref().unwrap_or("default");
    let pod_name = pod.metadata().name.as_deref().unwrap_or_default();
    let object = describe("Pod", Some(ns), pod.metadata().name.as_deref());
    let at = At {
        object: &object,
        spec: "spec",
    };
    let volumes = pod
        .spec()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        if let Some(src) = &v.persistent_volume_claim {
            let path = at.spec_field(&format!("volumes[{i}].persistentVolumeClaim.claimName"));
            let Some(claim) = index.claims.get(&(ns, src.claim_name.as_str())) else {
                let msg = format!("PersistentVolumeClaim {ns}/{} not found", src.claim_name);
                return Err(at.error(path, msg));
            };
            out.extend(claim_requirements(at, &path, claim, index)?);
        } else if let Some(eph) = &v.ephemeral {
            let path = at.spec_field(&format!("volumes[{i}].ephemeral"));
            let claim_name = format!("{pod_name}-{}", v.name);
            if let Some(claim) = index.claims.get(&(ns, claim_name.as_str())) {
                out.extend(claim_requirements(at, &path, claim, index)?);
            } else {
                // Not created yet: it will be provisioned from the template's class.
                let class = eph
                    .volume_claim_template
                    .as_ref()
                    .and_then(|t| t.spec.storage_class_name.as_deref());
                let what = format!("PersistentVolumeClaim {ns}/{claim_name}");
                out.extend(class_requirements(at, &path, &what, class, index)?);
            }
        }
    }
    Ok(out)
}

/// The requirements of one existing claim: its PV's when bound, else its class's.
fn claim_requirements(
    at: At<'_>,
    path: &str,
    claim: &PersistentVolumeClaim,
    index: &VolumeIndex<'_>,
) -> Result<Vec<NodeSelectorRequirement>, ConvertError> {
    let what = describe(
        "PersistentVolumeClaim",
        Some(claim.metadata.namespace.as_deref().unwrap_or("default")),
        claim.metadata.name.as_deref(),
    );
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(at.error(path, format!("{what} is being deleted")));
    }
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase == Some("Lost") {
        return Err(at.error(path, format!("{what} lost its PersistentVolume")));
    }
    let spec = claim.spec.as_ref();
    let bound_to = spec
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty());
    match bound_to {
        Some(pv_name) => {
            let Some(pv) = index.volumes.get(pv_name) else {
                let msg = format!("{what} is bound to PersistentVolume {pv_name}, not found");
                return Err(at.error(path, msg));
            };
            if pv.metadata.deletion_timestamp.is_some() {
                let msg = format!("{what} is bound to PersistentVolume {pv_name}, being deleted");
                return Err(at.error(path, msg));
            }
            volume_affinity(at, path, &what, pv)
        }
        None => {
            let class = spec.and_then(|s| s.storage_class_name.as_deref());
            class_requirements(at, path, &what, class, index)
        }
    }
}

/// The first `nodeAffinity.required` term of a PV, as requirements (see the module docs).
fn volume_affinity(
    at: At<'_>,
    path: &str,
    what: &str,
    pv: &PersistentVolume,
) -> Result<Vec<NodeSelectorRequirement>, ConvertError> {
    let Some(spec) = &pv.spec else {
        return Ok(Vec::new());
    };
    let first = spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
        .and_then(|r| r.node_selector_terms.first());
    let Some(term) = first else {
        return Ok(Vec::new());
    };
    let node_local = spec.local.is_some() || spec.host_path.is_some();
    term.match_expressions
        .iter()
        .flatten()
        .filter(|e| !(node_local && e.key == HOSTNAME_LABEL))
        .map(|e| pv_requirement(e).map_err(|m| at.error(path, format!("{what}: {m}"))))
        .collect()
}

/// A PV's node-selector requirement as the solver's; the message says what is wrong.
fn pv_requirement(e: &k8s::NodeSelectorRequirement) -> Result<NodeSelectorRequirement, String> {
    let operator = match e.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::Gt,
        "Lt" => Operator::Lt,
        other => {
            return Err(format!(
                "PersistentVolume node affinity: unknown operator {other:?} on {:?}",
                e.key
            ));
        }
    };
    Ok(NodeSelectorRequirement {
        key: e.key.clone(),
        operator,
        values: e.values.clone().unwrap_or_default(),
    })
}

/// The requirements of a claim that is not bound yet, from its StorageClass `class`.
///
/// No class (static binding to a pre-made PV, which the kube-scheduler matches) imposes
/// nothing; a class that binds immediately means the claim must be bound before the pod can be
/// placed, so the pod waits.
fn class_requirements(
    at: At<'_>,
    path: &str,
    what: &str,
    class: Option<&str>,
    index: &VolumeIndex<'_>,
) -> Result<Vec<NodeSelectorRequirement>, ConvertError> {
    let Some(class_name) = class.filter(|c| !c.is_empty()) else {
        return Ok(Vec::new());
    };
    let Some(sc) = index.classes.get(class_name) else {
        let msg = format!("{what} is unbound and its StorageClass {class_name} is not found");
        return Err(at.error(path, msg));
    };
    // The API defaults an unset mode to Immediate.
    if sc.volume_binding_mode.as_deref() != Some(WAIT_FOR_FIRST_CONSUMER) {
        let msg = format!(
            "{what} is not bound yet and StorageClass {class_name} binds immediately; \
             waiting for the binding"
        );
        return Err(at.error(path, msg));
    }
    let first: Option<&TopologySelectorTerm> =
        sc.allowed_topologies.as_ref().and_then(|t| t.first());
    Ok(first
        .and_then(|t| t.match_label_expressions.as_ref())
        .into_iter()
        .flatten()
        .map(|e| NodeSelectorRequirement {
            key: e.key.clone(),
            operator: Operator::In,
            values: e.values.clone(),
        })
        .collect())
}
