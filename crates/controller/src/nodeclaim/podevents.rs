//! `status.lastPodEventTime` of NodeClaims: the last time a pod was bound to the claim's Node
//! or left it (deleted or finished). Emptiness and `consolidateAfter` count from it.
//!
//! The cluster state's pod index tells which node a pod arrived on or left
//! ([`crate::state::index::PodMoved`]); pods already bound when the state listed them are
//! remembered without an update. Updates to one NodeClaim are at most one per [`DEDUPE`], as
//! upstream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use karpenter_api::v1::NodeClaim;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::context::Context;

/// Minimum time between two updates of one NodeClaim (upstream 10 s).
pub const DEDUPE: Duration = Duration::from_secs(10);

/// Which NodeClaims are due an update, at most one per [`DEDUPE`] each.
#[derive(Debug, Default)]
pub struct Dedupe {
    last: HashMap<String, Instant>,
}

impl Dedupe {
    /// Whether the NodeClaim is due an update at `now` (and if so, remembers it).
    pub fn due(&mut self, claim: &str, now: Instant) -> bool {
        if self
            .last
            .get(claim)
            .is_some_and(|t| now.saturating_duration_since(*t) < DEDUPE)
        {
            return false;
        }
        self.last
            .retain(|_, t| now.saturating_duration_since(*t) < DEDUPE);
        self.last.insert(claim.to_string(), now);
        true
    }
}

/// Runs until the future is dropped.
pub async fn run(ctx: Arc<Context>) {
    let mut moves = ctx.state.pod_moves();
    let mut dedupe = Dedupe::default();
    loop {
        let node = match moves.recv().await {
            Ok(moved) => moved.node,
            // Missed moves only cost precision: the next one updates the claim.
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(missed = n, "pod events fell behind");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(claim) = ctx.state.node_claim_for_node(&node) else {
            continue;
        };
        let name = claim.name_any();
        if !dedupe.due(&name, Instant::now()) {
            continue;
        }
        let patch = json!({"status": {"lastPodEventTime": Time(Timestamp::now())}});
        if let Err(e) = Api::<NodeClaim>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(NodeClaim = %name, error = %e, "recording a pod event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_update_per_claim_per_window() {
        let t0 = Instant::now();
        let mut d = Dedupe::default();
        assert!(d.due("a", t0));
        assert!(!d.due("a", t0 + DEDUPE / 2), "within the window");
        assert!(
            d.due("b", t0 + DEDUPE / 2),
            "another claim is not held back"
        );
        assert!(d.due("a", t0 + DEDUPE), "window over");
    }
}
