//! Cluster state: one watch per kind (Pods, Nodes, NodePools, NodeClaims, DaemonSets,
//! Namespaces, PersistentVolumeClaims, PersistentVolumes, StorageClasses,
//! PodDisruptionBudgets, legacy Provisioners, NodeOverlays with the `NodeOverlay` gate, and
//! CapacityBuffers with what they refer to with the `CapacityBuffer` gate), each object stored once (trimmed of what no
//! loop reads), indexed, and shared by every loop: they read it and write the API, never poll
//! it for what the state holds.
//!
//! - [`index`]: the indexes (providerID → NodeClaims and Nodes, node → pods, pending pods,
//!   pods per phase), pure and unit-tested;
//! - [`watch`]: the watch plumbing, and the fan-out that drives the lifecycle and termination
//!   controllers from the same watches;
//! - [`sync`]: the sync gate (every kind reflects a complete list);
//! - [`inflight`]: NodeClaims created by us that the watch has not delivered yet;
//! - [`stored_pod`]: pods as stored, the specs of a ReplicaSet's pods shared.
//!
//! The provisioner is also told here, through a channel, when something happened that may
//! need new capacity.

mod buffers;
pub mod index;
pub mod inflight;
pub mod legacy;
mod overlays;
pub mod stored_pod;
pub mod sync;
pub mod watch;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

pub use buffers::{BufferPlacements, BufferRound, BufferRounds, BufferStores};
use futures::Stream;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use karpenter_api::autoscaling::CapacityBuffer;
use karpenter_api::v1::{NodeClaim, NodePool};
use karpenter_api::v1alpha1::NodeOverlay;
use karpenter_api::v1alpha5::Provisioner;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
pub use stored_pod::StoredPod;
use tokio::sync::broadcast;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use crate::pods::awaits_capacity;
use index::{Fold, Indexed, NodeClaimIndex, NodeIndex, PodIndex, PodMoved};
use inflight::Created;
pub use sync::NotSynced;
use sync::{KindSync, SyncGate};
use watch::FanOut;
use watch::{Served, served};

/// Why the provisioner was woken.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// A provisionable pod appeared or changed (its UID: repeats do not extend the batch).
    Pod(String),
    /// Capacity went away (a NodeClaim or Node was deleted): pending pods may need a new home.
    CapacityRemoved,
    /// Periodic look at pods still pending.
    Resync,
}

/// How many pod moves a slow listener may fall behind before it misses some (it only loses
/// `status.lastPodEventTime` precision).
const POD_MOVES_CAPACITY: usize = 4096;

/// The indexes, each behind its own lock (never held across an await).
#[derive(Default)]
struct Indexes {
    pods: RwLock<Indexed<PodIndex>>,
    nodes: RwLock<Indexed<NodeIndex>>,
    node_claims: RwLock<Indexed<NodeClaimIndex>>,
}

/// Reads an index, whatever a panicking writer left (the indexes stay consistent per call).
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn fold<T: Fold<K>, K>(lock: &RwLock<Indexed<T>>, event: &watcher::Event<K>) -> Option<T::Change> {
    lock.write()
        .unwrap_or_else(PoisonError::into_inner)
        .on_event(event)
}

/// Read handles on every store and index. Cloning shares them.
#[derive(Clone)]
pub struct ClusterState {
    /// All pods.
    pub pods: Store<StoredPod>,
    /// All nodes.
    pub nodes: Store<Node>,
    /// All NodePools.
    pub node_pools: Store<NodePool>,
    /// All NodeClaims the watch delivered (see [`ClusterState::node_claim`] and
    /// [`ClusterState::snapshot`] for the ones created but not delivered yet).
    pub node_claims: Store<NodeClaim>,
    /// All legacy v1alpha5 Provisioners (empty when their CRD is not installed).
    pub provisioners: Store<Provisioner>,
    /// All DaemonSets.
    pub daemon_sets: Store<DaemonSet>,
    /// All Namespaces (their labels resolve pod-affinity `namespaceSelector`s).
    pub namespaces: Store<Namespace>,
    /// All PersistentVolumeClaims (with the PersistentVolumes and StorageClasses below, they
    /// give the zones a pending pod's volumes pin it to).
    pub volume_claims: Store<PersistentVolumeClaim>,
    /// All PersistentVolumes.
    pub volumes: Store<PersistentVolume>,
    /// All StorageClasses.
    pub storage_classes: Store<StorageClass>,
    /// All PodDisruptionBudgets.
    pub pod_disruption_budgets: Store<PodDisruptionBudget>,
    /// All NodeOverlays (empty unless started with them, [`ClusterState::start`]).
    pub node_overlays: Store<NodeOverlay>,
    node_overlay_changes: tokio::sync::watch::Sender<u64>,
    /// All CapacityBuffers (empty unless started with them).
    pub capacity_buffers: Store<CapacityBuffer>,
    /// What buffers refer to: PodTemplates, Deployments, StatefulSets, ReplicaSets (empty
    /// unless started with CapacityBuffers).
    pub buffer_refs: BufferStores,
    /// Where the last provisioning round placed each buffer's virtual pods.
    pub buffer_placements: BufferPlacements,
    /// How each buffer's virtual pods fared in the last provisioning round.
    pub buffer_rounds: BufferRounds,
    buffer_changes: tokio::sync::watch::Sender<u64>,
    indexes: Arc<Indexes>,
    created: Arc<Created>,
    gate: SyncGate,
    node_changes: FanOut<Node>,
    node_claim_changes: FanOut<NodeClaim>,
    pod_moves: broadcast::Sender<PodMoved>,
}

/// A consistent-enough copy of the stores for one round: shared objects, not copies.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Pods.
    pub pods: Vec<Arc<StoredPod>>,
    /// Nodes.
    pub nodes: Vec<Arc<Node>>,
    /// NodePools, followed by the legacy Provisioners converted to NodePools
    /// ([`legacy::effective_node_pools`]).
    pub node_pools: Vec<Arc<NodePool>>,
    /// NodeClaims, including the ones this controller created that the watch has not
    /// delivered yet.
    pub node_claims: Vec<Arc<NodeClaim>>,
    /// DaemonSets.
    pub daemon_sets: Vec<Arc<DaemonSet>>,
    /// Namespaces.
    pub namespaces: Vec<Arc<Namespace>>,
    /// PersistentVolumeClaims.
    pub volume_claims: Vec<Arc<PersistentVolumeClaim>>,
    /// PersistentVolumes.
    pub volumes: Vec<Arc<PersistentVolume>>,
    /// StorageClasses.
    pub storage_classes: Vec<Arc<StorageClass>>,
    /// PodDisruptionBudgets.
    pub pod_disruption_budgets: Vec<Arc<PodDisruptionBudget>>,
}

/// A kind's store, its writer, and its side of the sync gate.
fn store<K>(gate: &SyncGate) -> (Store<K>, reflector::store::Writer<K>, KindSync)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    (reader, writer, gate.register())
}

/// Watches a kind nothing indexes or is triggered by.
fn plain<K>(client: &Client, gate: &SyncGate, tasks: &mut Vec<JoinHandle<()>>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer, sync) = store::<K>(gate);
    tasks.push(watch::spawn(
        Api::all(client.clone()),
        writer,
        Some(sync),
        |_| {},
        |_| {},
        |_| {},
    ));
    reader
}

impl ClusterState {
    /// Starts the watches. Returns the state and the tasks driving it (abort them to stop).
    /// Provisionable pods and removed capacity are reported on `triggers`. NodeOverlays are
    /// watched only when `node_overlays` (the `NodeOverlay` feature gate), CapacityBuffers and
    /// PodTemplates only when `capacity_buffers` (the `CapacityBuffer` gate).
    pub fn start(
        client: &Client,
        triggers: UnboundedSender<Trigger>,
        node_overlays: bool,
        capacity_buffers: bool,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let mut tasks = Vec::new();
        let gate = SyncGate::new();
        let indexes = Arc::new(Indexes::default());
        let created = Arc::new(Created::default());
        let (pod_moves, _) = broadcast::channel(POD_MOVES_CAPACITY);

        let (pods, pod_task) = watch_pods(client, &gate, &indexes, &pod_moves, &triggers);
        let (nodes, node_changes, node_task) = watch_nodes(client, &gate, &indexes, &triggers);
        let (node_claims, node_claim_changes, claim_task) =
            watch_node_claims(client, &gate, &indexes, &created, triggers.clone());
        tasks.extend([pod_task, node_task, claim_task]);
        let provisioners = legacy_provisioners(client, &gate, &mut tasks);
        let (node_overlay_changes, _) = tokio::sync::watch::channel(0);
        let overlay_store = if node_overlays {
            overlays::watch(
                client,
                &gate,
                &mut tasks,
                node_overlay_changes.clone(),
                triggers.clone(),
            )
        } else {
            // Never written: no overlays.
            reflector::store().0
        };
        let (buffer_changes, _) = tokio::sync::watch::channel(0);
        let buffer_refs = if capacity_buffers {
            buffers::watch(client, &gate, &mut tasks, &buffer_changes, &triggers)
        } else {
            BufferStores::empty()
        };
        let state = Self {
            pods,
            nodes,
            node_pools: plain(client, &gate, &mut tasks),
            node_claims,
            provisioners,
            daemon_sets: plain(client, &gate, &mut tasks),
            namespaces: plain(client, &gate, &mut tasks),
            // No triggers: a pod waiting on its claim is still pending and is looked at again
            // by the kube-scheduler's next update of it or by the periodic resync.
            volume_claims: plain(client, &gate, &mut tasks),
            volumes: plain(client, &gate, &mut tasks),
            storage_classes: plain(client, &gate, &mut tasks),
            pod_disruption_budgets: plain(client, &gate, &mut tasks),
            node_overlays: overlay_store,
            node_overlay_changes,
            capacity_buffers: buffer_refs.buffers.clone(),
            buffer_refs,
            buffer_placements: BufferPlacements::default(),
            buffer_rounds: BufferRounds::default(),
            buffer_changes,
            indexes,
            created,
            gate,
            node_changes,
            node_claim_changes,
            pod_moves,
        };
        (state, tasks)
    }

    /// Waits until every kind was listed once; `Err` if the state stopped first.
    pub async fn wait_until_ready(&self) -> Result<(), NotSynced> {
        self.gate.wait_until_ready().await
    }

    /// Whether every kind was listed once (readiness: a later re-list does not unready the
    /// replica).
    pub fn is_ready(&self) -> bool {
        self.gate.was_synced()
    }

    /// Whether every kind reflects a complete list right now: false from the start until the
    /// first lists are in, and during any re-list. Loops that create or delete capacity act
    /// only while it is true.
    pub fn is_synced(&self) -> bool {
        self.gate.is_synced()
    }

    /// Waits until [`ClusterState::is_synced`].
    pub async fn wait_until_synced(&self) -> Result<(), NotSynced> {
        self.gate.wait_until_synced().await
    }

    /// Shares the stores' objects for one round.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            pods: self.pods.state(),
            nodes: self.nodes.state(),
            node_pools: legacy::effective_node_pools(
                self.node_pools.state(),
                &self.provisioners.state(),
            ),
            node_claims: self.all_node_claims(),
            daemon_sets: self.daemon_sets.state(),
            namespaces: self.namespaces.state(),
            volume_claims: self.volume_claims.state(),
            volumes: self.volumes.state(),
            storage_classes: self.storage_classes.state(),
            pod_disruption_budgets: self.pod_disruption_budgets.state(),
        }
    }

    /// Every NodeClaim: the store's, and the ones created but not delivered yet.
    pub fn all_node_claims(&self) -> Vec<Arc<NodeClaim>> {
        let mut claims = self.node_claims.state();
        let store = &self.node_claims;
        claims.extend(self.created.missing_from(
            |name| store.get(&ObjectRef::new(name)).is_some(),
            Instant::now(),
        ));
        claims
    }

    /// Records a NodeClaim the API just created (the object it returned): it counts as in
    /// flight at once, until the watch delivers it.
    pub fn node_claim_created(&self, claim: NodeClaim) {
        self.created.insert(claim, Instant::now());
    }

    /// A NodeClaim by name (created ones the watch has not delivered included).
    pub fn node_claim(&self, name: &str) -> Option<Arc<NodeClaim>> {
        self.node_claims
            .get(&ObjectRef::new(name))
            .or_else(|| self.created.get(name, Instant::now()))
    }

    /// A Node by name.
    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&ObjectRef::new(name))
    }

    /// The NodeClaim whose instance has this providerID.
    pub fn node_claim_for_provider_id(&self, provider_id: &str) -> Option<Arc<NodeClaim>> {
        let index = read(&self.indexes.node_claims);
        index
            .live()
            .by_provider_id
            .keys_of(provider_id)
            .find_map(|name| self.node_claims.get(&ObjectRef::new(name)))
    }

    /// The Nodes with this providerID (normally at most one).
    pub fn nodes_for_provider_id(&self, provider_id: &str) -> Vec<Arc<Node>> {
        let index = read(&self.indexes.nodes);
        index
            .live()
            .by_provider_id
            .keys_of(provider_id)
            .filter_map(|name| self.node(name))
            .collect()
    }

    /// The NodeClaim of the Node with this name (through its providerID).
    pub fn node_claim_for_node(&self, node: &str) -> Option<Arc<NodeClaim>> {
        let node = self.node(node)?;
        let pid = node.spec.as_ref()?.provider_id.as_deref()?;
        self.node_claim_for_provider_id(pid)
    }

    /// The pods holding resources on this node: bound to it and not finished.
    pub fn pods_on_node(&self, node: &str) -> Vec<Arc<StoredPod>> {
        let index = read(&self.indexes.pods);
        index
            .live()
            .on_node
            .keys_of(node)
            .filter_map(|key| self.pod(key))
            .collect()
    }

    /// The pods waiting for capacity ([`crate::pods::awaits_capacity`]).
    pub fn pending_pods(&self) -> Vec<Arc<StoredPod>> {
        let index = read(&self.indexes.pods);
        index
            .live()
            .pending
            .iter()
            .filter_map(|key| self.pod(key))
            .collect()
    }

    /// How many pods wait for capacity that `skip` does not rule out (by `namespace/name`).
    pub fn count_pending(&self, mut skip: impl FnMut(&str) -> bool) -> usize {
        let index = read(&self.indexes.pods);
        index.live().pending.iter().filter(|k| !skip(k)).count()
    }

    /// Whether any pod waits for capacity.
    pub fn has_pending_pods(&self) -> bool {
        !read(&self.indexes.pods).live().pending.is_empty()
    }

    /// How many pods are in each `karpenter_pods_state` phase.
    pub fn pod_phase_counts(&self) -> Vec<(&'static str, i64)> {
        read(&self.indexes.pods)
            .live()
            .phase_counts()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// Counts NodeOverlay changes (created, changed, deleted, re-listed); wakes whoever waits
    /// on it after each.
    pub fn node_overlay_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.node_overlay_changes.subscribe()
    }

    /// A receiver that changes whenever a CapacityBuffer or PodTemplate changes, or a
    /// provisioning round places the buffers' virtual pods differently.
    pub fn buffer_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.buffer_changes.subscribe()
    }

    /// Records a provisioning round's buffer outcomes; wakes the status loop if they changed.
    pub fn record_buffer_rounds(&self, rounds: std::collections::HashMap<String, BufferRound>) {
        if self.buffer_rounds.set(rounds) {
            self.buffer_changes.send_modify(|v| *v += 1);
        }
    }

    /// Every pod that arrives on or leaves a node from now on (lossy if not read promptly).
    pub fn pod_moves(&self) -> broadcast::Receiver<PodMoved> {
        self.pod_moves.subscribe()
    }

    /// Every Node once the store has its first list, then every Node that changes: the
    /// trigger stream of a controller over Nodes, sharing this state's watch.
    pub fn node_changes(&self) -> impl Stream<Item = Arc<Node>> + Send + 'static {
        self.node_changes.subscribe()
    }

    /// [`ClusterState::node_changes`] for NodeClaims.
    pub fn node_claim_changes(&self) -> impl Stream<Item = Arc<NodeClaim>> + Send + 'static {
        self.node_claim_changes.subscribe()
    }

    fn pod(&self, key: &str) -> Option<Arc<StoredPod>> {
        let (ns, name) = key.split_once('/')?;
        self.pods.get(&ObjectRef::new(name).within(ns))
    }
}

/// Pods: indexed (node, pending, phase), pod moves told, provisionable pods trigger the
/// provisioner.
fn watch_pods(
    client: &Client,
    gate: &SyncGate,
    indexes: &Arc<Indexes>,
    moves: &broadcast::Sender<PodMoved>,
    triggers: &UnboundedSender<Trigger>,
) -> (Store<StoredPod>, JoinHandle<()>) {
    let (pods, writer, sync) = store::<StoredPod>(gate);
    let (idx, moves, tx) = (indexes.clone(), moves.clone(), triggers.clone());
    let mut specs = stored_pod::SpecInterner::default();
    let task = watch::spawn_mapped(
        Api::<Pod>::all(client.clone()),
        writer,
        Some(sync),
        move |mut pod: Pod| {
            watch::slim_pod(&mut pod);
            specs.store(pod)
        },
        move |event: &watcher::Event<StoredPod>| {
            if let Some(moved) = fold(&idx.pods, event) {
                // No listener (not leading): nobody records pod events.
                let _ = moves.send(moved);
            }
            if let watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) = event
                && awaits_capacity(pod)
            {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                // A closed channel means the provisioner stopped; nothing to tell.
                let _ = tx.send(Trigger::Pod(uid));
            }
        },
        |_| {},
    );
    (pods, task)
}

/// Nodes: indexed by providerID, fanned out to the controllers, deletions trigger the
/// provisioner.
fn watch_nodes(
    client: &Client,
    gate: &SyncGate,
    indexes: &Arc<Indexes>,
    triggers: &UnboundedSender<Trigger>,
) -> (Store<Node>, FanOut<Node>, JoinHandle<()>) {
    let (nodes, writer, sync) = store::<Node>(gate);
    let changes = FanOut::new(nodes.clone());
    let (idx, fan, tx) = (indexes.clone(), changes.clone(), triggers.clone());
    let task = watch::spawn(
        Api::all(client.clone()),
        writer,
        Some(sync),
        watch::slim_node,
        move |event: &watcher::Event<Node>| {
            fold(&idx.nodes, event);
        },
        move |event: &watcher::Event<Node>| {
            fan.publish(event);
            if let watcher::Event::Delete(_) = event {
                let _ = tx.send(Trigger::CapacityRemoved);
            }
        },
    );
    (nodes, changes, task)
}

/// NodeClaims: indexed by providerID, fanned out to the lifecycle controller; a delivered
/// claim leaves the created-in-flight set; deletions trigger the provisioner.
fn watch_node_claims(
    client: &Client,
    gate: &SyncGate,
    indexes: &Arc<Indexes>,
    created: &Arc<Created>,
    triggers: UnboundedSender<Trigger>,
) -> (Store<NodeClaim>, FanOut<NodeClaim>, JoinHandle<()>) {
    let (claims, writer, sync) = store::<NodeClaim>(gate);
    let changes = FanOut::new(claims.clone());
    let (idx, fan, done) = (indexes.clone(), changes.clone(), created.clone());
    let task = watch::spawn(
        Api::all(client.clone()),
        writer,
        Some(sync),
        |_| {},
        move |event: &watcher::Event<NodeClaim>| {
            fold(&idx.node_claims, event);
        },
        move |event: &watcher::Event<NodeClaim>| {
            fan.publish(event);
            match event {
                // A listed claim reaches the store only at InitDone; until then it stays in the
                // created set (which drops claims the store has on its own).
                watcher::Event::Apply(c) => {
                    done.delivered(c.metadata.name.as_deref().unwrap_or_default());
                }
                watcher::Event::Delete(c) => {
                    done.delivered(c.metadata.name.as_deref().unwrap_or_default());
                    let _ = triggers.send(Trigger::CapacityRemoved);
                }
                watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {}
            }
        },
    );
    (claims, changes, task)
}

/// Legacy Provisioners: the gate waits for their first list only when the API serves them,
/// and not for their re-lists (many clusters no longer have the v1alpha5 CRD: its watch would
/// retry forever and the controller would never become ready; if the CRD appears later the
/// watch picks it up).
fn legacy_provisioners(
    client: &Client,
    gate: &SyncGate,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<Provisioner> {
    let (reader, writer, sync) = store::<Provisioner>(gate);
    let listed = sync.clone();
    tasks.push(watch::spawn(
        Api::all(client.clone()),
        writer,
        None,
        |_| {},
        |_| {},
        move |event: &watcher::Event<Provisioner>| {
            if let watcher::Event::InitDone = event {
                listed.listed();
            }
        },
    ));
    let client = client.clone();
    tasks.push(tokio::spawn(async move {
        if !serves_provisioners(&client).await {
            sync.listed();
        }
    }));
    reader
}

/// Whether the API server serves `karpenter.sh/v1alpha5` Provisioners to us.
async fn serves_provisioners(client: &Client) -> bool {
    match served::<Provisioner>(client).await {
        Served::Yes => true,
        Served::NotFound => {
            tracing::info!(
                "karpenter.sh/v1alpha5 Provisioners are not served; not waiting for them to sync"
            );
            false
        }
        Served::Forbidden => {
            tracing::warn!(
                "not allowed to list karpenter.sh/v1alpha5 Provisioners; they are ignored until RBAC allows it"
            );
            false
        }
    }
}
