//! `status.lastPodEventTime` of NodeClaims: the last time a pod was bound to the claim's Node
//! or left it (deleted or finished). Emptiness and `consolidateAfter` count from it.
//!
//! A pod watch of its own (rather than the cluster state's) so the controller sees each
//! transition once: pods already bound when the watch starts are remembered without an
//! update. Updates to one NodeClaim are at most one per [`DEDUPE`], as upstream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use karpenter_api::v1::NodeClaim;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::provisioning::pending::is_terminal;

/// Minimum time between two updates of one NodeClaim (upstream 10 s).
pub const DEDUPE: Duration = Duration::from_secs(10);

/// Where each live pod is bound, to tell binds and departures from other updates.
#[derive(Debug, Default)]
pub struct Tracker {
    bound: HashMap<String, String>,
}

impl Tracker {
    /// Folds one watch event in; returns the node a pod arrived on or left, if any.
    /// `initial` events (the watch's first list) are remembered without reporting.
    pub fn observe(&mut self, event: &watcher::Event<Pod>) -> Option<String> {
        match event {
            watcher::Event::InitApply(p) => {
                let uid = p.metadata.uid.clone()?;
                if let Some(node) = live_node(p) {
                    self.bound.insert(uid, node);
                }
                None
            }
            watcher::Event::Apply(p) => {
                let uid = p.metadata.uid.clone()?;
                match live_node(p) {
                    Some(node) if self.bound.get(&uid) != Some(&node) => {
                        self.bound.insert(uid, node.clone());
                        Some(node)
                    }
                    Some(_) => None,
                    None => self.bound.remove(&uid),
                }
            }
            watcher::Event::Delete(p) => self.bound.remove(p.metadata.uid.as_ref()?),
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }
}

fn live_node(p: &Pod) -> Option<String> {
    let node = p
        .spec
        .as_ref()?
        .node_name
        .clone()
        .filter(|n| !n.is_empty())?;
    (!is_terminal(p)).then_some(node)
}

/// Runs until the future is dropped.
pub async fn run(ctx: Arc<Context>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let mut tracker = Tracker::default();
    let mut last: HashMap<String, Instant> = HashMap::new();
    let mut stream = std::pin::pin!(watcher(pods, watcher::Config::default()).default_backoff());
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        let Some(node) = tracker.observe(&event) else {
            continue;
        };
        let Some(claim) = claim_of(&ctx, &node) else {
            continue;
        };
        let name = claim.name_any();
        let now = Instant::now();
        if last
            .get(&name)
            .is_some_and(|t| now.duration_since(*t) < DEDUPE)
        {
            continue;
        }
        last.insert(name.clone(), now);
        last.retain(|_, t| now.duration_since(*t) < DEDUPE);
        let patch = json!({"status": {"lastPodEventTime": Time(Timestamp::now())}});
        if let Err(e) = Api::<NodeClaim>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(NodeClaim = %name, error = %e, "recording a pod event failed");
        }
    }
}

fn claim_of(ctx: &Context, node: &str) -> Option<Arc<NodeClaim>> {
    let n = ctx.state.nodes.find(|n| n.name_any() == node)?;
    let pid = n.spec.as_ref()?.provider_id.clone()?;
    ctx.state.node_claim_for_provider_id(&pid)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(uid: &str, node: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn binds_and_departures_are_reported_once() {
        let mut t = Tracker::default();
        assert_eq!(
            t.observe(&watcher::Event::InitApply(pod("a", Some("n1"), "Running"))),
            None
        );
        // Already known: a status update is no event.
        assert_eq!(
            t.observe(&watcher::Event::Apply(pod("a", Some("n1"), "Running"))),
            None
        );
        assert_eq!(
            t.observe(&watcher::Event::Apply(pod("b", None, "Pending"))),
            None
        );
        assert_eq!(
            t.observe(&watcher::Event::Apply(pod("b", Some("n2"), "Pending"))),
            Some("n2".into())
        );
        assert_eq!(
            t.observe(&watcher::Event::Apply(pod("b", Some("n2"), "Succeeded"))),
            Some("n2".into())
        );
        assert_eq!(
            t.observe(&watcher::Event::Delete(pod("b", Some("n2"), "Succeeded"))),
            None
        );
        assert_eq!(
            t.observe(&watcher::Event::Delete(pod("a", Some("n1"), "Running"))),
            Some("n1".into())
        );
    }
}
