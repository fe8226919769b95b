//! CapacityBuffers in the input: each adds its virtual pods (named `capacity-buffer:<buffer>:<i>`)
//! to the pending pods, shaped by the PodTemplate it names, as the controller does with the
//! `CapacityBuffer` gate (simulate has no feature gates: the user gave the buffers). The report
//! lists them as buffer pods. A `scalableRef` names a Deployment, StatefulSet or ReplicaSet of
//! the input (its template; `percentage` of its replicas).

use k8s_openapi::api::core::v1::Pod;
use karpenter_api::autoscaling::{ACTIVE_PROVISIONING_STRATEGY, desired_replicas, virtual_pods};
use karpenter_api::read::{KarpenterObject, object_from_value};
use karpenter_api::solver_input::{parse_resources, pod_requests};

use super::convert::ConvertError;
use super::manifests::{Manifests, Origin, Sourced};

/// Adds every CapacityBuffer's virtual pods to `manifests.pods`; returns their keys
/// (`namespace/name`). A malformed buffer is an error naming its document and field; one whose
/// PodTemplate is not in the input is a warning.
pub fn expand(
    manifests: &mut Manifests,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, ConvertError> {
    let mut added = Vec::new();
    let docs: Vec<_> = manifests
        .karpenter
        .iter()
        .filter(|d| d.kind == "CapacityBuffer")
        .cloned()
        .collect();
    for doc in docs {
        let object = object_from_value(doc.value).map_err(|e| ConvertError::Object {
            source_doc: doc.source.clone(),
            message: e.to_string(),
        })?;
        let Some(KarpenterObject::CapacityBuffer(buffer)) = object else {
            continue;
        };
        let name = buffer.metadata.name.clone().unwrap_or_default();
        let namespace = buffer
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let what = format!("warning: {}: CapacityBuffer {namespace}/{name}", doc.source);
        if buffer.provisioning_strategy() != ACTIVE_PROVISIONING_STRATEGY {
            warnings.push(format!(
                "{what}: skipped: provisioningStrategy {:?} is not supported",
                buffer.provisioning_strategy()
            ));
            continue;
        }
        let found = match (&buffer.spec.pod_template_ref, &buffer.spec.scalable_ref) {
            (Some(r), _) => manifests
                .pod_templates
                .iter()
                .find(|t| {
                    t.object.metadata.name.as_deref() == Some(r.name.as_str())
                        && t.object.metadata.namespace.as_deref().unwrap_or("default") == namespace
                })
                .map(|t| {
                    let origin = Origin {
                        spec_path: format!("{}template.spec", t.origin.prefix),
                        ..t.origin.clone()
                    };
                    (t.object.template.clone().unwrap_or_default(), None, origin)
                })
                .ok_or(format!("PodTemplate {namespace}/{}", r.name)),
            (None, Some(r)) => manifests
                .scalables
                .iter()
                .find(|w| {
                    matches!(r.api_group.as_str(), "" | "apps")
                        && w.object.kind == r.kind
                        && w.object.name == r.name
                        && w.object.namespace == namespace
                })
                .map(|w| {
                    let origin = Origin {
                        spec_path: format!("{}spec.template.spec", w.origin.prefix),
                        ..w.origin.clone()
                    };
                    (w.object.template.clone(), Some(w.object.replicas), origin)
                })
                .ok_or(format!("{} {namespace}/{}", r.kind, r.name)),
            (None, None) => Err("a podTemplateRef or scalableRef".to_owned()),
        };
        let (spec, scalable_replicas, origin) = match found {
            Ok(f) => f,
            Err(missing) => {
                warnings.push(format!("{what}: skipped: {missing} is not in the input"));
                continue;
            }
        };
        let chunk = Pod {
            spec: spec.spec.clone(),
            ..Pod::default()
        };
        let requests =
            pod_requests(&chunk).map_err(|e| super::convert::field(&origin, "", e.to_string()))?;
        let object = format!("CapacityBuffer {namespace}/{name}");
        let limits = buffer
            .spec
            .limits
            .as_ref()
            .map(|l| parse_resources(&object, "spec.limits", l))
            .transpose()
            .map_err(|e| ConvertError::Object {
                source_doc: doc.source.clone(),
                message: e.to_string(),
            })?;
        let replicas =
            desired_replicas(&buffer.spec, scalable_replicas, &requests, limits.as_ref());
        for pod in virtual_pods(&buffer, &spec, replicas) {
            added.push(format!(
                "{namespace}/{}",
                pod.metadata.name.as_deref().unwrap_or_default()
            ));
            manifests.pods.push(Sourced {
                origin: origin.clone(),
                object: Box::new(pod),
            });
        }
    }
    Ok(added)
}
