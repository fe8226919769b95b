//! The CapacityBuffer status loop: after every change of a buffer or a PodTemplate (and every
//! [`RESYNC`]) each buffer's status is computed from the state ([`super::resolve`]) and
//! written when it differs: `ReadyForProvisioning`, `replicas`, `podTemplateRef`,
//! `podTemplateGeneration` and `provisioningStrategy`, as upstream's controller writes them.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use karpenter_api::autoscaling::{
    CONDITION_READY_FOR_PROVISIONING, CapacityBuffer, CapacityBufferStatus, LocalObjectRef,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{reason, resolve};
use crate::context::Context;
use crate::error::is_status;
use crate::nodeclaim::lifecycle::logic::set_condition;

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

/// The status a buffer should have, given the current one (condition times kept when
/// nothing changed); None when it already has it.
pub fn desired_status(
    buffer: &CapacityBuffer,
    resolved: &Result<super::Resolved, super::NotReady>,
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
    (next != current).then_some(next)
}

async fn write(ctx: &Context, buffer: &CapacityBuffer) {
    let resolved = resolve(buffer, &ctx.state.buffer_refs);
    let Some(status) = desired_status(buffer, &resolved, Timestamp::now()) else {
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
        let s = desired_status(&b, &ok, now).unwrap();
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
        assert_eq!(desired_status(&written, &ok, now), None);
        // The template went away: not ready, no replicas.
        let gone: Result<Resolved, NotReady> = Err(NotReady {
            reason: reason::POD_TEMPLATE_NOT_FOUND,
            message: "gone".into(),
        });
        let s = desired_status(&written, &gone, now).unwrap();
        assert_eq!((s.replicas, s.pod_template_ref), (None, None));
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(
            s.conditions[0].reason.as_deref(),
            Some("PodTemplateNotFound")
        );
    }
}
