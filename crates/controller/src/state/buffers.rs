//! The CapacityBuffer and PodTemplate watches (feature gate `CapacityBuffer`), and where the
//! last provisioning round put each buffer's virtual pods.
//!
//! As for NodeOverlays, the sync gate waits for the buffers' first list only when the API
//! serves them: the gate may be on before the CRD is installed. Every change of a buffer or a
//! PodTemplate bumps a counter the status loop waits on and asks the provisioner for a round
//! (a buffer may need capacity, or may no longer hold a node).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::PodTemplate;
use karpenter_api::autoscaling::CapacityBuffer;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::sync::SyncGate;
use super::{Served, Trigger, store, watch};

/// Virtual pod key (`namespace/name`) → the node, or the NodeClaim of a node still launching,
/// the last provisioning round placed it on. Replaced whole by each round, as upstream's
/// per-node buffer pod counts.
#[derive(Debug, Default, Clone)]
pub struct BufferPlacements(Arc<Mutex<HashMap<String, String>>>);

impl BufferPlacements {
    /// Replaces the placements with a round's.
    pub fn set(&self, placements: HashMap<String, String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = placements;
    }

    /// A copy of the current placements.
    pub fn get(&self) -> HashMap<String, String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Starts both watches; returns their stores.
pub(super) fn watch(
    client: &Client,
    gate: &SyncGate,
    tasks: &mut Vec<JoinHandle<()>>,
    changes: &tokio::sync::watch::Sender<u64>,
    triggers: &UnboundedSender<Trigger>,
) -> (Store<CapacityBuffer>, Store<PodTemplate>) {
    let (buffers, writer, sync) = store::<CapacityBuffer>(gate);
    let listed = sync.clone();
    let (c, t) = (changes.clone(), triggers.clone());
    tasks.push(watch::spawn(
        Api::all(client.clone()),
        writer,
        None,
        |_| {},
        |_| {},
        move |event: &watcher::Event<CapacityBuffer>| {
            if matches!(event, watcher::Event::InitDone) {
                listed.listed();
            }
            on_event(event, &c, &t);
        },
    ));
    let probe = client.clone();
    tasks.push(tokio::spawn(async move {
        if !served(&probe).await {
            sync.listed();
        }
    }));
    let (templates, writer, sync) = store::<PodTemplate>(gate);
    let (c, t) = (changes.clone(), triggers.clone());
    tasks.push(watch::spawn(
        Api::all(client.clone()),
        writer,
        Some(sync),
        |_| {},
        |_| {},
        move |event: &watcher::Event<PodTemplate>| on_event(event, &c, &t),
    ));
    (buffers, templates)
}

fn on_event<K>(
    event: &watcher::Event<K>,
    changes: &tokio::sync::watch::Sender<u64>,
    triggers: &UnboundedSender<Trigger>,
) {
    let changed = match event {
        watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_) => true,
        watcher::Event::Init | watcher::Event::InitApply(_) => false,
    };
    if changed {
        changes.send_modify(|n| *n = n.wrapping_add(1));
        // A closed channel means the provisioner stopped; nothing to tell.
        let _ = triggers.send(Trigger::Resync);
    }
}

/// Whether the API server serves `autoscaling.x-k8s.io/v1beta1` CapacityBuffers to us.
async fn served(client: &Client) -> bool {
    match super::served::<CapacityBuffer>(client).await {
        Served::Yes => true,
        Served::NotFound => {
            tracing::warn!(
                "the CapacityBuffer feature gate is on but autoscaling.x-k8s.io/v1beta1 CapacityBuffers are not served (is the CRD installed?); going on without buffers"
            );
            false
        }
        Served::Forbidden => {
            tracing::warn!(
                "not allowed to list autoscaling.x-k8s.io/v1beta1 CapacityBuffers; they are ignored until RBAC allows it"
            );
            false
        }
    }
}
