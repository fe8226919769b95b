//! CapacityBuffers (feature gate `CapacityBuffer`, upstream `pkg/controllers/capacitybuffer`
//! and `pkg/state/virtualpods`): each buffer is resolved from the cluster state (its
//! PodTemplate, or the pod template of the Deployment / StatefulSet / ReplicaSet of its
//! `scalableRef`, and its size, [`resolve`]) into virtual pods, which
//!
//! - join the pending pods of every provisioning round (capacity is launched for them; they
//!   are never bound, nominated or told anything), and the round records where it put them
//!   ([`crate::state::BufferPlacements`]);
//! - sit, for disruption, on the node the last round put them on ([`placed_virtual_pods`]): a
//!   node holding them is not empty, and consolidation must find them room elsewhere.
//!
//! The [`status`] loop writes each buffer's `status` (`ReadyForProvisioning`, `replicas`,
//! `podTemplateRef`, `podTemplateGeneration`). Everything is read from the state's stores: no
//! API call per round.

pub mod rounds;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplate, PodTemplateSpec};
use karpenter_api::autoscaling::{
    ACTIVE_PROVISIONING_STRATEGY, CapacityBuffer, FAKE_POD_ANNOTATION, ScalableRef,
    desired_replicas, virtual_pods,
};
use karpenter_api::solver_input::{parse_resources, pod_requests};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::pods::pod_key;
use crate::state::{BufferStores, ClusterState, Snapshot, StoredPod};

/// Condition reasons on `ReadyForProvisioning` (upstream's, plus two for what this controller
/// does not do).
pub mod reason {
    /// The template and size were resolved.
    pub const RESOLVED: &str = "Resolved";
    /// The PodTemplate does not exist.
    pub const POD_TEMPLATE_NOT_FOUND: &str = "PodTemplateNotFound";
    /// The `scalableRef` workload does not exist.
    pub const SCALABLE_REF_NOT_FOUND: &str = "ScalableRefNotFound";
    /// No reference, an unsupported workload kind, or a template that cannot be read.
    pub const RESOLUTION_FAILED: &str = "ResolutionFailed";
    /// A strategy other than active capacity: another autoscaler's business.
    pub const UNSUPPORTED_STRATEGY: &str = "UnsupportedProvisioningStrategy";
}

/// A buffer whose virtual pods can be built.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The PodTemplate's name (None for a `scalableRef` buffer).
    pub template_name: Option<String>,
    /// Its `metadata.generation`.
    pub template_generation: Option<i64>,
    /// How many chunks.
    pub replicas: i32,
    /// The pod template.
    pub template: PodTemplateSpec,
}

/// Why a buffer has no virtual pods: a `ReadyForProvisioning=False` reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// Condition reason.
    pub reason: &'static str,
    /// Condition message.
    pub message: String,
}

fn not_ready(reason: &'static str, message: impl Into<String>) -> NotReady {
    NotReady {
        reason,
        message: message.into(),
    }
}

/// Resolves a buffer against the state's stores: which pod template, how many chunks.
pub fn resolve(buffer: &CapacityBuffer, refs: &BufferStores) -> Result<Resolved, NotReady> {
    if buffer.provisioning_strategy() != ACTIVE_PROVISIONING_STRATEGY {
        return Err(not_ready(
            reason::UNSUPPORTED_STRATEGY,
            format!(
                "provisioningStrategy {:?} is not supported (only {ACTIVE_PROVISIONING_STRATEGY:?})",
                buffer.provisioning_strategy()
            ),
        ));
    }
    let spec = &buffer.spec;
    let namespace = buffer.namespace().unwrap_or_else(|| "default".into());
    let (pod_template, template_name, template_generation, scalable_replicas) =
        match (&spec.pod_template_ref, &spec.scalable_ref) {
            (Some(r), _) => {
                let key = ObjectRef::<PodTemplate>::new(&r.name).within(&namespace);
                let Some(t) = refs.pod_templates.get(&key) else {
                    return Err(not_ready(
                        reason::POD_TEMPLATE_NOT_FOUND,
                        format!("podtemplates {:?} not found", r.name),
                    ));
                };
                let template = t.template.clone().unwrap_or_default();
                (template, Some(r.name.clone()), t.metadata.generation, None)
            }
            (None, Some(r)) => {
                let (template, replicas) = scalable(r, &namespace, refs)?;
                (template, None, None, Some(replicas))
            }
            (None, None) => {
                return Err(not_ready(
                    reason::RESOLUTION_FAILED,
                    "Neither podTemplateRef nor scalableRef is set",
                ));
            }
        };
    let chunk = Pod {
        metadata: Default::default(),
        spec: pod_template.spec.clone(),
        status: None,
    };
    let requests = pod_requests(&chunk)
        .map_err(|e| not_ready(reason::RESOLUTION_FAILED, format!("pod template: {e}")))?;
    let object = format!("CapacityBuffer {namespace}/{}", buffer.name_any());
    let limits = spec
        .limits
        .as_ref()
        .map(|l| parse_resources(&object, "spec.limits", l))
        .transpose()
        .map_err(|e| not_ready(reason::RESOLUTION_FAILED, e.to_string()))?;
    Ok(Resolved {
        template_name,
        template_generation,
        replicas: desired_replicas(spec, scalable_replicas, &requests, limits.as_ref()),
        template: pod_template,
    })
}

/// The pod template and replicas (unset means 1) of a `scalableRef`'s workload: an `apps`
/// Deployment, StatefulSet or ReplicaSet, as upstream resolves them.
fn scalable(
    r: &ScalableRef,
    namespace: &str,
    refs: &BufferStores,
) -> Result<(PodTemplateSpec, i32), NotReady> {
    if !matches!(r.api_group.as_str(), "" | "apps") {
        return Err(not_ready(
            reason::RESOLUTION_FAILED,
            format!("unsupported scalableRef API group {:?}", r.api_group),
        ));
    }
    let found = match r.kind.as_str() {
        "Deployment" => refs
            .deployments
            .get(&ObjectRef::new(&r.name).within(namespace))
            .map(|d| d.spec.clone().map(|s| (s.template, s.replicas))),
        "StatefulSet" => refs
            .stateful_sets
            .get(&ObjectRef::new(&r.name).within(namespace))
            .map(|d| d.spec.clone().map(|s| (s.template, s.replicas))),
        "ReplicaSet" => refs
            .replica_sets
            .get(&ObjectRef::new(&r.name).within(namespace))
            .map(|d| {
                d.spec
                    .clone()
                    .map(|s| (s.template.unwrap_or_default(), s.replicas))
            }),
        other => {
            return Err(not_ready(
                reason::RESOLUTION_FAILED,
                format!("unsupported scalableRef kind {other:?}"),
            ));
        }
    };
    match found {
        None => Err(not_ready(
            reason::SCALABLE_REF_NOT_FOUND,
            format!("{} {:?} not found", r.kind, r.name),
        )),
        Some(spec) => {
            let (template, replicas) = spec.unwrap_or_default();
            Ok((template, replicas.unwrap_or(1)))
        }
    }
}

/// Whether a stored pod is a buffer's virtual pod.
pub fn is_virtual(pod: &StoredPod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FAKE_POD_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// The virtual pods of every resolved buffer of the state, unbound.
pub fn pending_virtual_pods(state: &ClusterState) -> Vec<Arc<StoredPod>> {
    let refs = &state.buffer_refs;
    state
        .capacity_buffers
        .state()
        .iter()
        .filter_map(|b| Some((b, resolve(b, refs).ok()?)))
        .flat_map(|(b, r)| virtual_pods(b, &r.template, r.replicas))
        .map(|p| Arc::new(StoredPod::from(p)))
        .collect()
}

/// The virtual pods the last provisioning round placed on a node of `snapshot`, bound to it
/// (a placement on a NodeClaim counts once its Node exists). Pods placed nowhere, or on a
/// node still launching (never a disruption candidate), are left out.
pub fn placed_virtual_pods(state: &ClusterState, snapshot: &Snapshot) -> Vec<Arc<StoredPod>> {
    let placements = state.buffer_placements.get();
    if placements.is_empty() {
        return Vec::new();
    }
    let nodes: std::collections::HashSet<&str> = snapshot
        .nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let claim_nodes: HashMap<&str, &str> = snapshot
        .node_claims
        .iter()
        .filter_map(|c| {
            let node = c.status.as_ref()?.node_name.as_deref()?;
            Some((c.metadata.name.as_deref()?, node))
        })
        .collect();
    pending_virtual_pods(state)
        .into_iter()
        .filter_map(|p| {
            let target = placements.get(&pod_key(&p))?;
            let node = if nodes.contains(target.as_str()) {
                target.as_str()
            } else {
                claim_nodes.get(target.as_str()).copied()?
            };
            let mut bound = StoredPod::clone(&p);
            bound.node_name = Some(node.to_owned());
            // The planner calls a node empty when evicting its pods costs nothing, and the
            // lowest priority makes a pod's eviction cost clamp to nothing: for disruption a
            // virtual pod is an ordinary pod (upstream keeps such nodes out of emptiness
            // explicitly).
            let mut spec = PodSpec::clone(&bound.spec);
            spec.priority = None;
            bound.spec = Arc::new(spec);
            Some(Arc::new(bound))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use karpenter_api::autoscaling::{CapacityBufferSpec, LocalObjectRef};
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    use super::*;

    /// The stores: PodTemplate `team/chunk` (generation 3) and Deployment `team/web` with 10
    /// replicas, both with one container requesting `cpu`.
    fn templates(cpu: &str) -> BufferStores {
        let (reader, mut writer) = reflector::store();
        let (deployments, mut deployment_writer) = reflector::store();
        let container = Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".into(), Quantity(cpu.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut t = PodTemplate {
            template: Some(PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    containers: vec![container],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        t.metadata.name = Some("chunk".into());
        t.metadata.namespace = Some("team".into());
        t.metadata.generation = Some(3);
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(10),
                template: t.template.clone().unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.metadata.name = Some("web".into());
        d.metadata.namespace = Some("team".into());
        writer.apply_watcher_event(&Event::Apply(t));
        deployment_writer.apply_watcher_event(&Event::Apply(d));
        BufferStores {
            pod_templates: reader,
            deployments,
            ..BufferStores::empty()
        }
    }

    fn scalable_spec(kind: &str, name: &str) -> Option<ScalableRef> {
        Some(ScalableRef {
            api_group: "apps".into(),
            kind: kind.into(),
            name: name.into(),
        })
    }

    #[test]
    fn a_scalable_buffer_takes_a_percentage_of_its_workload() {
        // 20% of the Deployment's 10 replicas = 2; with replicas 5 as well, upstream takes the
        // larger, 5.
        let pct = buffer(CapacityBufferSpec {
            scalable_ref: scalable_spec("Deployment", "web"),
            percentage: Some(20),
            ..Default::default()
        });
        let stores = templates("1");
        let r = resolve(&pct, &stores).unwrap();
        assert_eq!((r.replicas, r.template_name), (2, None));
        let both = buffer(CapacityBufferSpec {
            scalable_ref: scalable_spec("Deployment", "web"),
            percentage: Some(20),
            replicas: Some(5),
            ..Default::default()
        });
        assert_eq!(resolve(&both, &stores).unwrap().replicas, 5);
        let missing = buffer(CapacityBufferSpec {
            scalable_ref: scalable_spec("StatefulSet", "web"),
            replicas: Some(1),
            ..Default::default()
        });
        assert_eq!(
            resolve(&missing, &stores).unwrap_err().reason,
            reason::SCALABLE_REF_NOT_FOUND
        );
        let job = buffer(CapacityBufferSpec {
            scalable_ref: scalable_spec("Job", "web"),
            replicas: Some(1),
            ..Default::default()
        });
        assert_eq!(
            resolve(&job, &stores).unwrap_err().reason,
            reason::RESOLUTION_FAILED
        );
    }

    fn buffer(spec: CapacityBufferSpec) -> CapacityBuffer {
        let mut b = CapacityBuffer::new("spare", spec);
        b.metadata.namespace = Some("team".into());
        b
    }

    fn template_ref() -> Option<LocalObjectRef> {
        Some(LocalObjectRef {
            name: "chunk".into(),
        })
    }

    #[test]
    fn a_template_buffer_resolves_to_its_replicas() {
        let b = buffer(CapacityBufferSpec {
            pod_template_ref: template_ref(),
            replicas: Some(2),
            ..Default::default()
        });
        let r = resolve(&b, &templates("1")).unwrap();
        assert_eq!(
            (
                r.template_name.as_deref(),
                r.template_generation,
                r.replicas
            ),
            (Some("chunk"), Some(3), 2)
        );
    }

    #[test]
    fn limits_size_a_buffer_by_the_template_requests() {
        // Chunks of 1500m under a 4-CPU limit: floor(4 / 1.5) = 2.
        let b = buffer(CapacityBufferSpec {
            pod_template_ref: template_ref(),
            limits: Some(BTreeMap::from([("cpu".into(), Quantity("4".into()))])),
            ..Default::default()
        });
        assert_eq!(resolve(&b, &templates("1500m")).unwrap().replicas, 2);
    }

    #[test]
    fn unresolvable_buffers_say_why() {
        let missing = buffer(CapacityBufferSpec {
            pod_template_ref: Some(LocalObjectRef {
                name: "other".into(),
            }),
            replicas: Some(1),
            ..Default::default()
        });
        let other_ns = {
            let mut b = buffer(CapacityBufferSpec {
                pod_template_ref: template_ref(),
                replicas: Some(1),
                ..Default::default()
            });
            b.metadata.namespace = Some("elsewhere".into());
            b
        };
        let passive = buffer(CapacityBufferSpec {
            pod_template_ref: template_ref(),
            replicas: Some(1),
            provisioning_strategy: Some("example.com/passive".into()),
            ..Default::default()
        });
        let store = templates("1");
        let reason_of = |b: &CapacityBuffer| resolve(b, &store).unwrap_err().reason;
        assert_eq!(reason_of(&missing), reason::POD_TEMPLATE_NOT_FOUND);
        assert_eq!(reason_of(&other_ns), reason::POD_TEMPLATE_NOT_FOUND);
        assert_eq!(reason_of(&passive), reason::UNSUPPORTED_STRATEGY);
        assert_eq!(
            reason_of(&buffer(CapacityBufferSpec::default())),
            reason::RESOLUTION_FAILED
        );
    }
}
