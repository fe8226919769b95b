//! The CapacityBuffer watch and the watches of what buffers point to (PodTemplates, and the
//! Deployments, StatefulSets and ReplicaSets of `scalableRef`s, kept without their status;
//! feature gate `CapacityBuffer`), and where the last provisioning round put each buffer's
//! virtual pods.
//!
//! As for NodeOverlays, the sync gate waits for the buffers' first list only when the API
//! serves them: the gate may be on before the CRD is installed. Every change of a buffer or a
//! PodTemplate bumps a counter the status loop waits on and asks the provisioner for a round
//! (a buffer may need capacity, or may no longer hold a node).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplate;
use karpenter_api::autoscaling::CapacityBuffer;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::sync::SyncGate;
use super::{Served, Trigger, store, watch};

/// How a buffer's virtual pods fared in the last provisioning round: the input of upstream's
/// `Provisioning` condition.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BufferRound {
    /// Placed on existing capacity (a node, or a NodeClaim launched by an earlier round).
    pub existing: u32,
    /// Placed on a NodeClaim this round creates.
    pub new_capacity: u32,
    /// Placed nowhere.
    pub failed: u32,
}

/// Buffer (`namespace/name`) → its virtual pods' last round; replaced whole by each round.
#[derive(Debug, Default, Clone)]
pub struct BufferRounds(Arc<Mutex<HashMap<String, BufferRound>>>);

impl BufferRounds {
    /// Replaces the rounds; whether anything changed.
    pub fn set(&self, rounds: HashMap<String, BufferRound>) -> bool {
        let mut current = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = *current != rounds;
        *current = rounds;
        changed
    }

    /// The last round of buffer `key` (`namespace/name`), if its virtual pods were in it.
    pub fn get(&self, key: &str) -> Option<BufferRound> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
    }
}

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

/// The stores of the buffer watches.
#[derive(Clone)]
pub struct BufferStores {
    /// All CapacityBuffers.
    pub buffers: Store<CapacityBuffer>,
    /// All PodTemplates.
    pub pod_templates: Store<PodTemplate>,
    /// All Deployments (without status).
    pub deployments: Store<Deployment>,
    /// All StatefulSets (without status).
    pub stateful_sets: Store<StatefulSet>,
    /// All ReplicaSets (without status).
    pub replica_sets: Store<ReplicaSet>,
}

impl BufferStores {
    /// Stores that are never written: no buffers.
    pub fn empty() -> Self {
        Self {
            buffers: reflector::store().0,
            pod_templates: reflector::store().0,
            deployments: reflector::store().0,
            stateful_sets: reflector::store().0,
            replica_sets: reflector::store().0,
        }
    }
}

/// Starts the watches; returns their stores.
pub(super) fn watch(
    client: &Client,
    gate: &SyncGate,
    tasks: &mut Vec<JoinHandle<()>>,
    changes: &tokio::sync::watch::Sender<u64>,
    triggers: &UnboundedSender<Trigger>,
) -> BufferStores {
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
    let w = Watching {
        client,
        gate,
        changes,
        triggers,
        buffers: &buffers,
    };
    BufferStores {
        pod_templates: w.referenced(tasks, |_| {}),
        deployments: w.referenced(tasks, |d: &mut Deployment| d.status = None),
        stateful_sets: w.referenced(tasks, |s: &mut StatefulSet| s.status = None),
        replica_sets: w.referenced(tasks, |r: &mut ReplicaSet| r.status = None),
        buffers,
    }
}

/// What the watches of referenced kinds share.
struct Watching<'a> {
    client: &'a Client,
    gate: &'a SyncGate,
    changes: &'a tokio::sync::watch::Sender<u64>,
    triggers: &'a UnboundedSender<Trigger>,
    buffers: &'a Store<CapacityBuffer>,
}

impl Watching<'_> {
    /// Watches a kind buffers refer to. A change of its spec (`metadata.generation`, as
    /// upstream's predicate; workloads' status changes all the time) or a deletion is a buffer
    /// change, when there are buffers at all.
    fn referenced<K>(&self, tasks: &mut Vec<JoinHandle<()>>, slim: fn(&mut K)) -> Store<K>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let (reader, writer, sync) = store::<K>(self.gate);
        let (c, t, buffers) = (
            self.changes.clone(),
            self.triggers.clone(),
            self.buffers.clone(),
        );
        let mut generations: HashMap<String, Option<i64>> = HashMap::new();
        tasks.push(watch::spawn(
            Api::all(self.client.clone()),
            writer,
            Some(sync),
            slim,
            |_| {},
            move |event: &watcher::Event<K>| {
                let spec_changed = match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                        let uid = o.meta().uid.clone().unwrap_or_default();
                        let generation = o.meta().generation;
                        generations.insert(uid, generation) != Some(generation)
                    }
                    watcher::Event::Delete(o) => {
                        generations.remove(o.meta().uid.as_deref().unwrap_or_default());
                        true
                    }
                    watcher::Event::Init | watcher::Event::InitDone => false,
                };
                let listed = matches!(event, watcher::Event::InitDone);
                if (spec_changed || listed) && !buffers.is_empty() {
                    on_event(event, &c, &t);
                }
            },
        ));
        reader
    }
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
