//! Kubernetes Events on the MachineDeployments the provider cannot launch from, so a user
//! sees why on the object they would fix (`kubectl describe machinedeployment`):
//! - Warning `InvalidCapacityAnnotations` (a `capacity.cluster-autoscaler.kubernetes.io/*`
//!   annotation is missing or unreadable), `InvalidAnnotations` (another annotation of ours or
//!   Cluster Autoscaler's) or `InvalidMachineDeployment` (no zone, a conflicting shape): the
//!   MachineDeployment is not offered, the others keep working;
//! - Normal `MaxSizeReached` or `Paused`: its offering is skipped until it has room again.
//!
//! The catalog is rebuilt on every provisioning round, so each problem is published when it
//! first appears or its message changes, then again every [`REPEAT`] while it lasts (Events
//! expire after an hour on a default API server); a problem that went away is forgotten, so it
//! is reported afresh if it comes back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::DynamicObject;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, ResourceExt};

use crate::catalog::Unavailable;
use crate::machine::{CAPI_GROUP, CAPI_VERSION};
use crate::shape::ShapeError;

/// How often a lasting problem is published again.
pub const REPEAT: Duration = Duration::from_secs(10 * 60);

/// Prefix of Cluster Autoscaler's capacity annotations.
const CAPACITY_PREFIX: &str = "capacity.cluster-autoscaler.kubernetes.io/";

/// Something wrong with one MachineDeployment, as an Event would say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `namespace/name` of the MachineDeployment.
    pub machine_deployment: String,
    /// CamelCase Event reason.
    pub reason: &'static str,
    /// Warning (it cannot be used at all) or Normal (skipped for now).
    pub warning: bool,
    /// The Event's note.
    pub message: String,
}

impl Problem {
    /// The Event of a MachineDeployment that cannot be offered.
    pub fn invalid(e: &ShapeError) -> Problem {
        let (machine_deployment, reason) = match e {
            ShapeError::Annotation {
                machine_deployment,
                annotation,
                ..
            } if annotation.starts_with(CAPACITY_PREFIX) => {
                (machine_deployment, "InvalidCapacityAnnotations")
            }
            ShapeError::Annotation {
                machine_deployment, ..
            } => (machine_deployment, "InvalidAnnotations"),
            ShapeError::Invalid {
                machine_deployment, ..
            } => (machine_deployment, "InvalidMachineDeployment"),
        };
        Problem {
            machine_deployment: machine_deployment.clone(),
            reason,
            warning: true,
            message: format!("{e}; this MachineDeployment is not offered"),
        }
    }

    /// The Event of a MachineDeployment whose offering is skipped.
    pub fn unavailable(u: &Unavailable) -> Problem {
        Problem {
            machine_deployment: u.machine_deployment.clone(),
            reason: u.cause.reason(),
            warning: false,
            message: u.to_string(),
        }
    }
}

/// What was last published, per (MachineDeployment, reason).
type Seen = HashMap<(String, &'static str), (String, Instant)>;

/// Pure: the problems to publish `now`, given what was published before (updated: problems
/// no longer present are forgotten).
pub fn due<'a>(seen: &mut Seen, problems: &'a [Problem], now: Instant) -> Vec<&'a Problem> {
    seen.retain(|(md, reason), _| {
        problems
            .iter()
            .any(|p| &p.machine_deployment == md && p.reason == *reason)
    });
    let mut out = Vec::new();
    for p in problems {
        let key = (p.machine_deployment.clone(), p.reason);
        let fresh = match seen.get(&key) {
            Some((message, at)) => *message != p.message || now.duration_since(*at) >= REPEAT,
            None => true,
        };
        if fresh {
            seen.insert(key, (p.message.clone(), now));
            out.push(p);
        }
    }
    out
}

/// Publishes [`Problem`]s as Events on their MachineDeployments (best effort: a failure is
/// logged, never returned).
pub struct EventReporter {
    recorder: Recorder,
    seen: Mutex<Seen>,
}

impl EventReporter {
    /// Events reported as `karpenter` through `client` (the management cluster's).
    pub fn new(client: Client) -> Self {
        Self {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "karpenter".into(),
                    instance: None,
                },
            ),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Reports the current problems; `objects` are the MachineDeployments by `namespace/name`.
    pub async fn report(&self, problems: &[Problem], objects: &HashMap<String, DynamicObject>) {
        let due: Vec<Problem> = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            due(&mut seen, problems, Instant::now())
                .into_iter()
                .cloned()
                .collect()
        };
        for p in due {
            if p.warning {
                tracing::warn!(machine_deployment = %p.machine_deployment, reason = p.reason, "{}", p.message);
            } else {
                tracing::info!(machine_deployment = %p.machine_deployment, reason = p.reason, "{}", p.message);
            }
            let Some(md) = objects.get(&p.machine_deployment) else {
                continue;
            };
            let event = Event {
                type_: if p.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: p.reason.to_string(),
                note: Some(truncate(p.message.clone())),
                action: "Offer".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &reference(md)).await {
                tracing::warn!(error = %e, reason = p.reason, "publishing an event failed");
            }
        }
    }
}

/// The events API caps notes at 1 kB.
fn truncate(mut note: String) -> String {
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    note
}

fn reference(md: &DynamicObject) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{CAPI_GROUP}/{CAPI_VERSION}")),
        kind: Some("MachineDeployment".into()),
        name: md.metadata.name.clone(),
        namespace: md.namespace(),
        uid: md.uid(),
        resource_version: md.resource_version(),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::catalog::UnavailableCause;
    use crate::shape::{CPU_ANNOTATION, PRICE_ANNOTATION};
    use karpenter_providers::OfferingKey;

    fn annotation(annotation: &'static str) -> ShapeError {
        ShapeError::Annotation {
            machine_deployment: "ns/md".into(),
            annotation,
            reason: "\"lots\" is not a quantity".into(),
        }
    }

    #[test]
    fn reasons_say_what_is_wrong() {
        let p = Problem::invalid(&annotation(CPU_ANNOTATION));
        assert_eq!(p.reason, "InvalidCapacityAnnotations");
        assert!(p.warning);
        assert!(
            p.message.contains("ns/md") && p.message.contains(CPU_ANNOTATION),
            "{}",
            p.message
        );
        assert_eq!(
            Problem::invalid(&annotation(PRICE_ANNOTATION)).reason,
            "InvalidAnnotations"
        );
        let conflict = ShapeError::Invalid {
            machine_deployment: "ns/md".into(),
            reason: "no zone".into(),
        };
        assert_eq!(
            Problem::invalid(&conflict).reason,
            "InvalidMachineDeployment"
        );
        let full = Problem::unavailable(&Unavailable {
            machine_deployment: "ns/md".into(),
            offering: OfferingKey {
                instance_type: "c2".into(),
                zone: "a".into(),
                capacity_type: "on-demand".into(),
            },
            cause: UnavailableCause::MaxSize { size: 1, max: 1 },
        });
        assert_eq!((full.reason, full.warning), ("MaxSizeReached", false));
    }

    #[test]
    fn published_once_until_changed_repeated_or_gone() {
        let a = Problem::invalid(&annotation(CPU_ANNOTATION));
        let mut b = a.clone();
        b.message = "other".into();
        let mut seen = Seen::new();
        let t0 = Instant::now();
        assert_eq!(due(&mut seen, std::slice::from_ref(&a), t0).len(), 1);
        assert!(
            due(
                &mut seen,
                std::slice::from_ref(&a),
                t0 + Duration::from_secs(5)
            )
            .is_empty(),
            "unchanged: not again"
        );
        assert_eq!(
            due(
                &mut seen,
                std::slice::from_ref(&b),
                t0 + Duration::from_secs(6)
            )
            .len(),
            1,
            "a new message is published"
        );
        assert_eq!(
            due(
                &mut seen,
                std::slice::from_ref(&b),
                t0 + REPEAT + Duration::from_secs(6)
            )
            .len(),
            1,
            "a lasting problem is published again after REPEAT"
        );
        assert!(due(&mut seen, &[], t0 + REPEAT + Duration::from_secs(7)).is_empty());
        assert_eq!(
            due(
                &mut seen,
                std::slice::from_ref(&b),
                t0 + REPEAT + Duration::from_secs(8)
            )
            .len(),
            1,
            "gone then back: reported afresh"
        );
    }
}
