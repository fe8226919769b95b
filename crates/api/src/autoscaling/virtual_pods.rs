//! Virtual pods: the placeholder pods a CapacityBuffer stands for. They are scheduled like
//! pending pods (so capacity is launched and kept for them) but exist only in memory; nothing
//! binds them, nominates them or publishes events about them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    BUFFER_NAME_ANNOTATION, BUFFER_NAMESPACE_ANNOTATION, CapacityBuffer, FAKE_POD_ANNOTATION,
};

/// The priority of virtual pods: the lowest there is, so they are the first to make room.
pub const VIRTUAL_POD_PRIORITY: i32 = i32::MIN;

/// Whether a pod is a buffer's virtual pod (by upstream's annotation).
pub fn is_virtual_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FAKE_POD_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// The name of a buffer's `index`-th virtual pod (1-based). Upstream names them
/// `capacity-buffer-<buffer>-<i>`, which a real pod may also be called; a `:` cannot appear
/// in a real pod's name (a DNS subdomain), so these never collide with one.
pub fn virtual_pod_name(buffer: &str, index: usize) -> String {
    format!("capacity-buffer:{buffer}:{index}")
}

/// `replicas` virtual pods for `buffer`, shaped by `template`: in the buffer's namespace, with
/// the template's labels, unschedulable and unbound, the lowest priority, and without the
/// volumes that would need claims (a placeholder needs room, not storage).
pub fn virtual_pods(
    buffer: &CapacityBuffer,
    template: &PodTemplateSpec,
    replicas: i32,
) -> Vec<Pod> {
    let count = usize::try_from(replicas).unwrap_or(0);
    if count == 0 {
        return Vec::new();
    }
    let name = buffer.metadata.name.clone().unwrap_or_default();
    let namespace = buffer
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let uid = buffer
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("{namespace}/{name}"));
    let spec = placeholder_spec(template.spec.clone().unwrap_or_default());
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
    let annotations = BTreeMap::from([
        (FAKE_POD_ANNOTATION.to_owned(), "true".to_owned()),
        (BUFFER_NAME_ANNOTATION.to_owned(), name.clone()),
        (BUFFER_NAMESPACE_ANNOTATION.to_owned(), namespace.clone()),
    ]);
    (1..=count)
        .map(|i| Pod {
            metadata: ObjectMeta {
                name: Some(virtual_pod_name(&name, i)),
                namespace: Some(namespace.clone()),
                uid: Some(format!("{uid}-{i}")),
                labels: labels.clone(),
                annotations: Some(annotations.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec.clone()),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        })
        .collect()
}

/// The template's spec as a placeholder: no node, lowest priority, and no PVC or ephemeral
/// volumes (nor their mounts), whose claims do not exist for a pod that never runs.
fn placeholder_spec(mut spec: PodSpec) -> PodSpec {
    spec.node_name = None;
    spec.priority = Some(VIRTUAL_POD_PRIORITY);
    let Some(volumes) = spec.volumes.take() else {
        return spec;
    };
    let (dropped, kept): (Vec<_>, Vec<_>) = volumes
        .into_iter()
        .partition(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
    spec.volumes = (!kept.is_empty()).then_some(kept);
    if dropped.is_empty() {
        return spec;
    }
    let dropped: Vec<String> = dropped.into_iter().map(|v| v.name).collect();
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for c in containers {
        if let Some(mounts) = c.volume_mounts.as_mut() {
            mounts.retain(|m| !dropped.contains(&m.name));
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
    };

    fn buffer() -> CapacityBuffer {
        let mut b = CapacityBuffer::new("web", super::super::CapacityBufferSpec::default());
        b.metadata.namespace = Some("prod".into());
        b.metadata.uid = Some("u1".into());
        b
    }

    #[test]
    fn one_pod_per_replica_named_apart_from_real_pods() {
        let pods = virtual_pods(&buffer(), &PodTemplateSpec::default(), 3);
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(
            names,
            [
                "capacity-buffer:web:1",
                "capacity-buffer:web:2",
                "capacity-buffer:web:3"
            ]
        );
        assert!(pods.iter().all(is_virtual_pod));
        assert!(
            pods.iter()
                .all(|p| p.metadata.namespace.as_deref() == Some("prod"))
        );
        let uids: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.uid.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(uids, ["u1-1", "u1-2", "u1-3"]);
        assert!(virtual_pods(&buffer(), &PodTemplateSpec::default(), 0).is_empty());
        assert!(virtual_pods(&buffer(), &PodTemplateSpec::default(), -1).is_empty());
    }

    #[test]
    fn placeholders_drop_claims_and_take_the_lowest_priority() {
        let template = PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    volume_mounts: Some(vec![
                        VolumeMount {
                            name: "data".into(),
                            mount_path: "/d".into(),
                            ..Default::default()
                        },
                        VolumeMount {
                            name: "cfg".into(),
                            mount_path: "/c".into(),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }],
                volumes: Some(vec![
                    Volume {
                        name: "data".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: "pvc".into(),
                            read_only: None,
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "cfg".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
        };
        let pods = virtual_pods(&buffer(), &template, 1);
        let spec = pods[0].spec.as_ref().expect("spec");
        assert_eq!(spec.node_name, None);
        assert_eq!(spec.priority, Some(i32::MIN));
        let volumes: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["cfg"]);
        let mounts: Vec<_> = spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(mounts, ["cfg"]);
    }
}
