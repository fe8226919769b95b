//! Cluster state: one reflector per kind (Pods, Nodes, NodePools, NodeClaims, DaemonSets,
//! Namespaces, PersistentVolumeClaims, PersistentVolumes, StorageClasses), folded into
//! in-memory stores that every loop reads. The provisioner is also told here,
//! through a channel, when something happened that may need new capacity.
//!
//! The watch plumbing lives in this file; what the provisioner derives from the stores (which
//! pods are pending, what capacity is in flight) lives in `provisioning`, as pure functions.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use karpenter_api::v1::{NodeClaim, NodePool};
use karpenter_api::v1alpha5::Provisioner;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::provisioning::pending::is_provisionable;

pub mod legacy;

/// The reflectors stopped before every store was populated.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the cluster state stopped before it was populated")]
pub struct NotReady;

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

/// Read handles on every store.
#[derive(Clone)]
pub struct ClusterState {
    /// All pods.
    pub pods: Store<Pod>,
    /// All nodes.
    pub nodes: Store<Node>,
    /// All NodePools.
    pub node_pools: Store<NodePool>,
    /// All NodeClaims.
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
    /// True once every store is populated. A `watch` rather than each caller awaiting
    /// `Store::wait_until_ready`: the latter wakes only one of several concurrent waiters.
    ready: watch::Receiver<bool>,
}

/// A consistent-enough copy of the stores for one provisioning round.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Pods.
    pub pods: Vec<Arc<Pod>>,
    /// Nodes.
    pub nodes: Vec<Arc<Node>>,
    /// NodePools, followed by the legacy Provisioners converted to NodePools
    /// ([`legacy::effective_node_pools`]).
    pub node_pools: Vec<Arc<NodePool>>,
    /// NodeClaims.
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
}

impl ClusterState {
    /// Starts the reflectors. Returns the stores and the tasks driving them (abort them to
    /// stop). Provisionable pods and removed capacity are reported on `triggers`.
    pub fn start(
        client: &Client,
        triggers: UnboundedSender<Trigger>,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let mut tasks = Vec::new();
        let pod_triggers = triggers.clone();
        let pods = reflect(
            Api::<Pod>::all(client.clone()),
            &mut tasks,
            move |event: &watcher::Event<Pod>| {
                if let watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) = event
                    && is_provisionable(pod)
                {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    // A closed channel means the provisioner stopped; nothing to tell.
                    let _ = pod_triggers.send(Trigger::Pod(uid));
                }
            },
        );
        let node_triggers = triggers.clone();
        let nodes = reflect(
            Api::<Node>::all(client.clone()),
            &mut tasks,
            move |event: &watcher::Event<Node>| {
                if let watcher::Event::Delete(_) = event {
                    let _ = node_triggers.send(Trigger::CapacityRemoved);
                }
            },
        );
        let node_pools = reflect(Api::<NodePool>::all(client.clone()), &mut tasks, |_| {});
        let claim_triggers = triggers;
        let node_claims = reflect(
            Api::<NodeClaim>::all(client.clone()),
            &mut tasks,
            move |event: &watcher::Event<NodeClaim>| {
                if let watcher::Event::Delete(_) = event {
                    let _ = claim_triggers.send(Trigger::CapacityRemoved);
                }
            },
        );
        let provisioners = reflect(Api::<Provisioner>::all(client.clone()), &mut tasks, |_| {});
        let daemon_sets = reflect(Api::<DaemonSet>::all(client.clone()), &mut tasks, |_| {});
        let namespaces = reflect(Api::<Namespace>::all(client.clone()), &mut tasks, |_| {});
        // No triggers: a pod waiting on its claim is still pending and is looked at again by
        // the kube-scheduler's next update of it or by the periodic resync.
        let volume_claims = reflect(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            &mut tasks,
            |_| {},
        );
        let volumes = reflect(
            Api::<PersistentVolume>::all(client.clone()),
            &mut tasks,
            |_| {},
        );
        let storage_classes = reflect(Api::<StorageClass>::all(client.clone()), &mut tasks, |_| {});
        let (ready_tx, ready) = watch::channel(false);
        let stores = (
            pods.clone(),
            nodes.clone(),
            node_pools.clone(),
            node_claims.clone(),
            daemon_sets.clone(),
            namespaces.clone(),
            volume_claims.clone(),
            volumes.clone(),
            storage_classes.clone(),
            (client.clone(), provisioners.clone()),
        );
        // The only task that awaits the stores' own readiness (see `ready`).
        tasks.push(tokio::spawn(async move {
            let all = async {
                stores.0.wait_until_ready().await?;
                stores.1.wait_until_ready().await?;
                stores.2.wait_until_ready().await?;
                stores.3.wait_until_ready().await?;
                stores.4.wait_until_ready().await?;
                stores.5.wait_until_ready().await?;
                stores.6.wait_until_ready().await?;
                stores.7.wait_until_ready().await?;
                stores.8.wait_until_ready().await?;
                let (client, provisioners) = stores.9;
                // Many clusters no longer have the v1alpha5 CRD: its watch would retry forever
                // and the controller would never become ready. Wait for the Provisioners only
                // when the API serves them; if the CRD appears later the watch picks it up.
                if serves_provisioners(&client).await {
                    provisioners.wait_until_ready().await?;
                }
                Ok::<(), reflector::store::WriterDropped>(())
            };
            match all.await {
                Ok(()) => {
                    let _ = ready_tx.send(true);
                    // Keep the sender alive so waiters see `true`, not a closed channel.
                    ready_tx.closed().await;
                }
                Err(e) => tracing::error!(error = %e, "cluster state never became ready"),
            }
        }));
        (
            Self {
                pods,
                nodes,
                node_pools,
                node_claims,
                provisioners,
                daemon_sets,
                namespaces,
                volume_claims,
                volumes,
                storage_classes,
                ready,
            },
            tasks,
        )
    }

    /// Waits until every store has seen its initial list; `Err` when the reflectors stopped
    /// before that.
    pub async fn wait_until_ready(&self) -> Result<(), NotReady> {
        let mut rx = self.ready.clone();
        rx.wait_for(|ready| *ready)
            .await
            .map(|_| ())
            .map_err(|_| NotReady)
    }

    /// Whether every store has seen its initial list.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Copies the stores.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            pods: self.pods.state(),
            nodes: self.nodes.state(),
            node_pools: legacy::effective_node_pools(
                self.node_pools.state(),
                &self.provisioners.state(),
            ),
            node_claims: self.node_claims.state(),
            daemon_sets: self.daemon_sets.state(),
            namespaces: self.namespaces.state(),
            volume_claims: self.volume_claims.state(),
            volumes: self.volumes.state(),
            storage_classes: self.storage_classes.state(),
        }
    }

    /// The NodeClaim whose instance has this providerID.
    pub fn node_claim_for_provider_id(&self, provider_id: &str) -> Option<Arc<NodeClaim>> {
        self.node_claims.find(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .is_some_and(|p| p == provider_id)
        })
    }

    /// The Nodes with this providerID (normally at most one).
    pub fn nodes_for_provider_id(&self, provider_id: &str) -> Vec<Arc<Node>> {
        self.nodes.state_filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .is_some_and(|p| p == provider_id)
        })
    }
}

/// Whether the API server serves `karpenter.sh/v1alpha5` Provisioners to us (errors other
/// than "not found" and "forbidden" count as yes, so a flaky API server cannot make us skip
/// them).
async fn serves_provisioners(client: &Client) -> bool {
    let api = Api::<Provisioner>::all(client.clone());
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::info!(
                "karpenter.sh/v1alpha5 Provisioners are not served; not waiting for them to sync"
            );
            false
        }
        Err(kube::Error::Api(e)) if e.code == 403 => {
            tracing::warn!(
                "not allowed to list karpenter.sh/v1alpha5 Provisioners; they are ignored until RBAC allows it"
            );
            false
        }
        Err(_) => true,
    }
}

/// Spawns one reflector; `on_event` sees every event after the store applied it.
fn reflect<K, F>(api: Api<K>, tasks: &mut Vec<JoinHandle<()>>, on_event: F) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    F: Fn(&watcher::Event<K>) + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tasks.push(tokio::spawn(drive(
        stream,
        on_event,
        K::kind(&Default::default()).to_string(),
    )));
    reader
}

async fn drive<K, S, F>(stream: S, on_event: F, kind: String)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    F: Fn(&watcher::Event<K>),
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => on_event(&event),
            // The backoff retries; the store keeps serving the last state meanwhile.
            Err(e) => tracing::warn!(error = %e, kind = %kind, "watch failed"),
        }
    }
    tracing::warn!(kind = %kind, "watch stream ended");
}
