//! The NodeOverlay status loop: after every overlay change (and every [`RESYNC`], since
//! catalogs and NodePools change too) each overlay gets `ValidationSucceeded` and `Ready`:
//! True, or False with reason `RuntimeValidation` (malformed) or `Conflict` (left out for an
//! overlay of the same weight, named in the message), as upstream's conditions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use karpenter_api::v1alpha1::{CONDITION_READY, CONDITION_VALIDATION_SUCCEEDED, NodeOverlay};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Outcome, evaluate};
use crate::context::Context;
use crate::error::is_status;
use crate::nodeclaim::lifecycle::logic::set_condition;

/// How often statuses are recomputed without an overlay change.
pub const RESYNC: Duration = Duration::from_secs(60);

/// Runs until aborted.
pub async fn run(ctx: Arc<Context>) {
    let mut changes = ctx.state.node_overlay_changes();
    loop {
        if ctx.state.wait_until_synced().await.is_err() {
            return;
        }
        // Mark the current version seen before reading, so a change during the round wakes
        // the next one.
        changes.borrow_and_update();
        reconcile(&ctx).await;
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// Computes every overlay's conditions against the NodePools' current catalogs and writes the
/// ones that changed.
async fn reconcile(ctx: &Context) {
    let overlays = ctx.state.node_overlays.state();
    if overlays.is_empty() {
        return;
    }
    let snapshot = ctx.state.snapshot();
    let mut catalogs = BTreeMap::new();
    for pool in &snapshot.node_pools {
        let name = pool.name_any();
        match ctx.provider.instance_types(pool).await {
            Ok(its) => {
                catalogs.insert(name, its);
            }
            Err(e) => tracing::warn!(NodePool = %name, error = %e, "listing instance types failed"),
        }
    }
    let outcome = evaluate(&overlays, &snapshot.node_pools, &mut catalogs);
    let now = Timestamp::now();
    for overlay in &overlays {
        write(ctx, overlay, &outcome, now).await;
    }
}

/// The (status, reason, message) of both conditions for one overlay.
pub fn verdict(name: &str, outcome: &Outcome) -> (&'static str, &'static str, String) {
    if let Some(e) = outcome.invalid.get(name) {
        ("False", "RuntimeValidation", e.to_string())
    } else if let Some(c) = outcome.evaluation.conflicts.get(name) {
        ("False", "Conflict", c.to_string())
    } else {
        ("True", "ValidationSucceeded", String::new())
    }
}

async fn write(ctx: &Context, overlay: &NodeOverlay, outcome: &Outcome, now: Timestamp) {
    let name = overlay.name_any();
    let (status, reason, message) = verdict(&name, outcome);
    let ready_reason = if status == "True" { "Ready" } else { reason };
    let mut conditions = overlay
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let validated = set_condition(
        &mut conditions,
        CONDITION_VALIDATION_SUCCEEDED,
        status,
        reason,
        &message,
        now,
    );
    let ready = set_condition(
        &mut conditions,
        CONDITION_READY,
        status,
        ready_reason,
        &message,
        now,
    );
    if !validated && !ready {
        return;
    }
    if status == "False" {
        tracing::warn!(NodeOverlay = %name, reason, message = %message, "nodeoverlay not applied");
    }
    let patch = json!({
        "metadata": {"resourceVersion": overlay.resource_version()},
        "status": {"conditions": conditions},
    });
    match Api::<NodeOverlay>::all(ctx.client.clone())
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        // Changed or gone since read: the watch brings the new version and another round.
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => {}
        Err(e) => {
            tracing::warn!(NodeOverlay = %name, error = %e, "writing nodeoverlay status failed")
        }
    }
}
