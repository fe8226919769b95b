//! The NodeOverlay watch (feature gate `NodeOverlay`). Like the legacy Provisioners', the sync
//! gate waits for its first list only when the API serves NodeOverlays: the gate may be on in a
//! cluster whose CRD is not installed yet, and the controller must still become ready (with no
//! overlays); if the CRD appears later, the watch picks it up.
//!
//! Every change (and every re-list) bumps a counter the status loop waits on, and asks the
//! provisioner for a round: an overlay can make pending pods placeable (new capacity) or
//! change the cheapest choice.

use karpenter_api::v1alpha1::NodeOverlay;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::sync::SyncGate;
use super::{Served, Trigger, store, watch};

/// Starts the watch; returns its store.
pub(super) fn watch(
    client: &Client,
    gate: &SyncGate,
    tasks: &mut Vec<JoinHandle<()>>,
    changes: tokio::sync::watch::Sender<u64>,
    triggers: UnboundedSender<Trigger>,
) -> Store<NodeOverlay> {
    let (reader, writer, sync) = store::<NodeOverlay>(gate);
    let listed = sync.clone();
    tasks.push(watch::spawn(
        Api::all(client.clone()),
        writer,
        None,
        |_| {},
        |_| {},
        move |event: &watcher::Event<NodeOverlay>| {
            let changed = match event {
                watcher::Event::InitDone => {
                    listed.listed();
                    true
                }
                watcher::Event::Apply(_) | watcher::Event::Delete(_) => true,
                watcher::Event::Init | watcher::Event::InitApply(_) => false,
            };
            if changed {
                changes.send_modify(|n| *n = n.wrapping_add(1));
                // A closed channel means the provisioner stopped; nothing to tell.
                let _ = triggers.send(Trigger::Resync);
            }
        },
    ));
    let client = client.clone();
    tasks.push(tokio::spawn(async move {
        if !served(&client).await {
            sync.listed();
        }
    }));
    reader
}

/// Whether the API server serves `karpenter.sh/v1alpha1` NodeOverlays to us.
async fn served(client: &Client) -> bool {
    match super::served::<NodeOverlay>(client).await {
        Served::Yes => true,
        Served::NotFound => {
            tracing::warn!(
                "the NodeOverlay feature gate is on but karpenter.sh/v1alpha1 NodeOverlays are not served (is the CRD installed?); going on without overlays"
            );
            false
        }
        Served::Forbidden => {
            tracing::warn!(
                "not allowed to list karpenter.sh/v1alpha1 NodeOverlays; they are ignored until RBAC allows it"
            );
            false
        }
    }
}
