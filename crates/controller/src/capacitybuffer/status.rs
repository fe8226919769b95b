//! The CapacityBuffer status loop: after every change of a buffer or a PodTemplate (and every
//! [`RESYNC`]) each buffer's status is computed from the state ([`super::resolve`]) and
//! written when it differs: `ReadyForProvisioning`, `replicas`, `podTemplateRef`,
//! `podTemplateGeneration` and `provisioningStrategy`, as upstream's controller writes them,
//! and `Provisioning` from the last provisioning round, as upstream's provisioner writes it
//! (one writer here, so the two never race).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use karpenter_api::autoscaling::{
    CONDITION_PROVISIONING, CONDITION_READY_FOR_PROVISIONING, CapacityBuffer, CapacityBufferStatus,
    LocalObjectRef,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{reason, resolve};
use crate::context::Context;
use crate::error::is_status;
use crate::nodeclaim::lifecycle::logic::set_condition;
use crate::state::BufferRound;

/// How often statuses are recomputed without a change (upstream requeues every 30 s).
pub const RESYNC: Duration = Duration::from_secs(30);

/// Runs until aborted.
pub async fn run(ctx: Arc<Context>) {
    let mut changes = ctx.state.buffer_changes();
    loop {
        if ctx.state.wait_until_synced().await.is_err() {
            return;
        }
        // Mark the current version seen before reading, so a change during the round wakes
        // the next one.
        changes.borrow_and_update();
        for buffer in ctx.state.capacity_buffers.state() {
            write(&ctx, &buffer).await;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// Upstream's `Provisioning` condition (status, reason, message) for a buffer that is ready
/// (`ready`) with `replicas` virtual pods, after `round`; `None` leaves it as it is (no round
/// saw the buffer's pods yet, or they were only partly placed).
fn provisioning(
    ready: bool,
    replicas: Option<i32>,
    round: Option<BufferRound>,
) -> Option<(&'static str, &'static str, String)> {
    if !ready {
        return Some((
            "False",
            "NotReadyForProvisioning",
            "Buffer is not ReadyForProvisioning".into(),
        ));
    }
    let desired = replicas.unwrap_or(0);
    if desired <= 0 {
        return Some((
            "False",
            "BufferEmpty",
            "Buffer has zero desired replicas".into(),
        ));
    }
    let r = round?;
    if r.new_capacity > 0 || r.failed > 0 {
        return Some((
            "False",
            "RequiresNewCapacity",
            format!(
                "{}/{desired} virtual pods required new capacity, {} failed",
                r.new_capacity, r.failed
            ),
        ));
    }
    (i64::from(r.existing) == i64::from(desired)).then(|| {
        (
            "True",
            "FitsExistingCapacity",
            format!("All {desired} virtual pods fit on existing capacity"),
        )
    })
}

/// The status a buffer should have, given the current one (condition times kept when
/// nothing changed) and its virtual pods' last provisioning round; None when it already has
/// it.
pub fn desired_status(
    buffer: &CapacityBuffer,
    resolved: &Result<super::Resolved, super::NotReady>,
    round: Option<BufferRound>,
    now: Timestamp,
) -> Option<CapacityBufferStatus> {
    let current = buffer.status.clone().unwrap_or_default();
    let mut next = current.clone();
    next.provisioning_strategy = Some(buffer.provisioning_strategy().to_owned());
    let (status, why, message) = match resolved {
        Ok(r) => {
            next.pod_template_ref = r
                .template_name
                .as_ref()
                .map(|name| LocalObjectRef { name: name.clone() });
            next.pod_template_generation = r.template_generation;
            next.replicas = Some(r.replicas);
            (
                "True",
                reason::RESOLVED,
                "Pod template resolved successfully".to_owned(),
            )
        }
        Err(e) => {
            // Upstream keeps the last replicas on a failure; the buffer has no virtual pods
            // now, so say 0 rather than a stale count.
            next.pod_template_ref = None;
            next.pod_template_generation = None;
            next.replicas = None;
            ("False", e.reason, e.message.clone())
        }
    };
    set_condition(
        &mut next.conditions,
        CONDITION_READY_FOR_PROVISIONING,
        status,
        why,
        &message,
        now,
    );
    if let Some((status, why, message)) = provisioning(resolved.is_ok(), next.replicas, round) {
        set_condition(
            &mut next.conditions,
            CONDITION_PROVISIONING,
            status,
            why,
            &message,
            now,
        );
    }
    (next != current).then_some(next)
}

async fn write(ctx: &Context, buffer: &CapacityBuffer) {
    let resolved = resolve(buffer, &ctx.state.buffer_refs);
    let key = format!(
        "{}/{}",
        buffer.namespace().unwrap_or_else(|| "default".into()),
        buffer.name_any()
    );
    let round = ctx.state.buffer_rounds.get(&key);
    let Some(status) = desired_status(buffer, &resolved, round, Timestamp::now()) else {
        return;
    };
    let name = buffer.name_any();
    let namespace = buffer.namespace().unwrap_or_else(|| "default".into());
    if let Err(e) = &resolved {
        tracing::info!(CapacityBuffer = %format!("{namespace}/{name}"), reason = e.reason, message = %e.message, "capacitybuffer not ready for provisioning");
    }
    // A merge patch: `null` clears fields the status no longer has.
    let patch = json!({
        "metadata": {"resourceVersion": buffer.resource_version()},
        "status": {
            "podTemplateRef": status.pod_template_ref,
            "replicas": status.replicas,
            "podTemplateGeneration": status.pod_template_generation,
            "conditions": status.conditions,
            "provisioningStrategy": status.provisioning_strategy,
        },
    });
    match Api::<CapacityBuffer>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        // Changed or gone since read: the watch brings the new version and another round.
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => {}
        Err(e) => {
            tracing::warn!(CapacityBuffer = %format!("{namespace}/{name}"), error = %e, "writing capacitybuffer status failed")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use karpenter_api::autoscaling::CapacityBufferSpec;

    use super::super::{NotReady, Resolved};
    use super::*;

    #[test]
    fn the_status_is_written_once_and_cleared_on_failure() {
        let b = CapacityBuffer::new("spare", CapacityBufferSpec::default());
        let ok: Result<Resolved, NotReady> = Ok(Resolved {
            template_name: Some("chunk".into()),
            template_generation: Some(2),
            replicas: 3,
            template: PodTemplateSpec::default(),
        });
        let now = Timestamp::now();
        let s = desired_status(&b, &ok, None, now).unwrap();
        assert_eq!(s.replicas, Some(3));
        assert_eq!(s.pod_template_generation, Some(2));
        assert_eq!(
            s.provisioning_strategy.as_deref(),
            Some("buffer.x-k8s.io/active-capacity")
        );
        assert!(s.conditions[0].is_true());
        // Written: nothing more to do.
        let mut written = b.clone();
        written.status = Some(s);
        assert_eq!(desired_status(&written, &ok, None, now), None);
        // The template went away: not ready, no replicas.
        let gone: Result<Resolved, NotReady> = Err(NotReady {
            reason: reason::POD_TEMPLATE_NOT_FOUND,
            message: "gone".into(),
        });
        let s = desired_status(&written, &gone, None, now).unwrap();
        assert_eq!((s.replicas, s.pod_template_ref), (None, None));
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(
            s.conditions[0].reason.as_deref(),
            Some("PodTemplateNotFound")
        );
    }

    #[test]
    fn provisioning_follows_the_last_round_as_upstream() {
        let round = |existing, new_capacity, failed| {
            Some(BufferRound {
                existing,
                new_capacity,
                failed,
            })
        };
        let reason =
            |r: Option<(&'static str, &'static str, String)>| r.map(|(s, why, _)| (s, why));
        // Not ready, or nothing to provision: False whatever the round.
        assert_eq!(
            reason(provisioning(false, Some(3), round(3, 0, 0))),
            Some(("False", "NotReadyForProvisioning"))
        );
        assert_eq!(
            reason(provisioning(true, Some(0), None)),
            Some(("False", "BufferEmpty"))
        );
        // No round has seen the pods yet: unchanged.
        assert_eq!(provisioning(true, Some(3), None), None);
        // One of three needed a new node: False, and the message counts it.
        assert_eq!(
            provisioning(true, Some(3), round(2, 1, 0)),
            Some((
                "False",
                "RequiresNewCapacity",
                "1/3 virtual pods required new capacity, 0 failed".into()
            ))
        );
        assert_eq!(
            reason(provisioning(true, Some(3), round(2, 0, 1))),
            Some(("False", "RequiresNewCapacity"))
        );
        // All three on existing capacity: True.
        assert_eq!(
            provisioning(true, Some(3), round(3, 0, 0)),
            Some((
                "True",
                "FitsExistingCapacity",
                "All 3 virtual pods fit on existing capacity".into()
            ))
        );
        // Fewer placed than desired (the round ran before a resize): unchanged.
        assert_eq!(provisioning(true, Some(3), round(2, 0, 0)), None);
    }

    #[test]
    fn the_provisioning_condition_is_written_with_the_status() {
        let b = CapacityBuffer::new("spare", CapacityBufferSpec::default());
        let ok: Result<Resolved, NotReady> = Ok(Resolved {
            template_name: Some("chunk".into()),
            template_generation: Some(2),
            replicas: 2,
            template: PodTemplateSpec::default(),
        });
        let now = Timestamp::now();
        let fits = Some(BufferRound {
            existing: 2,
            new_capacity: 0,
            failed: 0,
        });
        let s = desired_status(&b, &ok, fits, now).unwrap();
        let p = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Provisioning")
            .unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("True", Some("FitsExistingCapacity"))
        );
        let mut written = b.clone();
        written.status = Some(s);
        assert_eq!(desired_status(&written, &ok, fits, now), None);
    }
}
