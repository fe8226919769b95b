//! The provider's view of the management cluster: one watch on the opted-in MachineDeployments
//! and one on our Machines, started on first use, read from memory by every `instance_types`
//! and `node_group_floors` call (which used to list both per NodePool per round).
//!
//! A watch lags our own writes a little, and max size must count a Machine we just created
//! (or a replica we just added) before the watch shows it; so what we write is kept beside
//! the stores ([`Overlay`]) until the watch catches up, and reads merge the two.
//! Decisions that must not act on a stale view (whether a MachineDeployment was already scaled
//! for a NodeClaim, which Machine to take, whether a Machine exists before deleting it) read the
//! API server instead (see `scale.rs` and `lookup.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

use super::{ClusterApiProvider, machine_deployment_resource, machine_resource};
use crate::machine::MACHINE_DEPLOYMENT_LABEL;
use crate::shape::MEMBER_LABEL;
use karpenter_providers::CloudProviderError;

/// How long a read waits for the first list of a watch before failing (transiently).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one of our writes is kept beside a store that has not shown it: past this, the
/// store (or the object's deletion) is trusted.
const OVERLAY_TTL: Duration = Duration::from_secs(60);

/// Objects we wrote, by `namespace/name`, until the watch shows them (or something newer).
#[derive(Default)]
pub(super) struct Overlay(Mutex<HashMap<String, (DynamicObject, Instant)>>);

fn key(o: &DynamicObject) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// Whether the store's version `stored` has caught up with our write `ours`: the same
/// resourceVersion, or (the API server's are etcd revisions in practice) a later one.
fn caught_up(stored: &DynamicObject, ours: &DynamicObject) -> bool {
    let (Some(s), Some(o)) = (stored.resource_version(), ours.resource_version()) else {
        return true;
    };
    s == o || matches!((s.parse::<u64>(), o.parse::<u64>()), (Ok(s), Ok(o)) if s >= o)
}

impl Overlay {
    /// Remembers an object we just wrote.
    pub(super) fn record(&self, o: &DynamicObject) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key(o), (o.clone(), Instant::now()));
    }

    /// The store's objects with ours in place of those it has not caught up with, and ours it
    /// does not have yet. Forgets what the store caught up with, and what is too old.
    pub(super) fn merge(
        &self,
        stored: Vec<Arc<DynamicObject>>,
        now: Instant,
    ) -> Vec<DynamicObject> {
        let mut ours = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ours.retain(|_, (_, at)| now.duration_since(*at) < OVERLAY_TTL);
        let mut out = Vec::with_capacity(stored.len() + ours.len());
        let mut seen = std::collections::HashSet::new();
        for s in stored {
            let k = key(&s);
            match ours.get(&k) {
                Some((o, _)) if !caught_up(&s, o) => out.push(o.clone()),
                Some(_) => {
                    ours.remove(&k);
                    out.push((*s).clone());
                }
                None => out.push((*s).clone()),
            }
            seen.insert(k);
        }
        out.extend(
            ours.iter()
                .filter(|(k, _)| !seen.contains(*k))
                .map(|(_, (o, _))| o.clone()),
        );
        out
    }
}

/// One watched kind: its store, the task feeding it, and the watch's last error.
struct Watched {
    store: Store<DynamicObject>,
    task: JoinHandle<()>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Watched {
    fn start(
        client: kube::Client,
        namespace: Option<&str>,
        ar: &ApiResource,
        labels: &str,
    ) -> Self {
        let api: kube::Api<DynamicObject> = match namespace {
            Some(ns) => kube::Api::namespaced_with(client, ns, ar),
            None => kube::Api::all_with(client, ar),
        };
        let writer = Writer::new(ar.clone());
        let store = writer.as_reader();
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let kind = ar.kind.clone();
        let stream = reflector::reflector(
            writer,
            watcher::watcher(api, watcher::Config::default().labels(labels)).default_backoff(),
        );
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    tracing::warn!(kind = %kind, error = %e, "Cluster API watch failed; retrying");
                    *errors.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                }
            }
        });
        Self {
            store,
            task,
            last_error,
        }
    }

    async fn ready(&self, what: &str) -> Result<(), CloudProviderError> {
        match tokio::time::timeout(READY_TIMEOUT, self.store.wait_until_ready()).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                let why = self
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .unwrap_or_else(|| "no answer yet".into());
                Err(CloudProviderError::Transient(format!(
                    "the watch of {what} has not listed them yet: {why}"
                )))
            }
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The two watches.
pub(super) struct Cache {
    mds: Watched,
    machines: Watched,
}

impl Cache {
    fn start(client: &kube::Client, namespace: Option<&str>) -> Self {
        Self {
            mds: Watched::start(
                client.clone(),
                namespace,
                &machine_deployment_resource(),
                MEMBER_LABEL,
            ),
            machines: Watched::start(
                client.clone(),
                namespace,
                &machine_resource(),
                MACHINE_DEPLOYMENT_LABEL,
            ),
        }
    }
}

impl ClusterApiProvider {
    /// The watches, started on first use (so a provider made outside a runtime, or never used,
    /// starts none); they stop when the provider is dropped.
    async fn cache(&self) -> &Cache {
        self.cache
            .get_or_init(|| async { Cache::start(&self.client, self.namespace.as_deref()) })
            .await
    }

    /// The opted-in MachineDeployments: the watch's, with our latest writes.
    pub(super) async fn watched_mds(&self) -> Result<Vec<DynamicObject>, CloudProviderError> {
        let cache = self.cache().await;
        cache.mds.ready("opted-in MachineDeployments").await?;
        Ok(self
            .written_mds
            .merge(cache.mds.store.state(), Instant::now()))
    }

    /// Our Machines: the watch's, with those we created that it does not show yet.
    pub(super) async fn watched_machines(&self) -> Result<Vec<DynamicObject>, CloudProviderError> {
        let cache = self.cache().await;
        cache.machines.ready("our Machines").await?;
        Ok(self
            .written_machines
            .merge(cache.machines.store.state(), Instant::now()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, rv: &str, replicas: i64) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
            "spec": {"replicas": replicas}
        }))
        .unwrap()
    }

    fn replicas(objs: &[DynamicObject], name: &str) -> Option<i64> {
        objs.iter()
            .find(|o| o.name_any() == name)
            .and_then(|o| o.data["spec"]["replicas"].as_i64())
    }

    #[test]
    fn our_writes_count_until_the_watch_shows_them() {
        let overlay = Overlay::default();
        let t0 = Instant::now();
        // We scaled md-a to 3 (rv 12) and created md-b; the watch still has md-a at rv 10.
        overlay.record(&obj("md-a", "12", 3));
        overlay.record(&obj("md-b", "5", 1));
        let stale = vec![Arc::new(obj("md-a", "10", 2))];
        let merged = overlay.merge(stale, t0);
        assert_eq!(
            replicas(&merged, "md-a"),
            Some(3),
            "our write, not the stale one"
        );
        assert_eq!(
            replicas(&merged, "md-b"),
            Some(1),
            "not watched yet, still counted"
        );
        assert_eq!(merged.len(), 2);
        // The watch catches up (and a later write by someone else wins too).
        let fresh = vec![
            Arc::new(obj("md-a", "13", 4)),
            Arc::new(obj("md-b", "5", 1)),
        ];
        let merged = overlay.merge(fresh, t0);
        assert_eq!(replicas(&merged, "md-a"), Some(4));
        assert_eq!(merged.len(), 2);
        assert!(overlay.0.lock().unwrap().is_empty(), "forgotten once seen");
    }

    #[test]
    fn an_unseen_write_is_forgotten_after_the_ttl() {
        let overlay = Overlay::default();
        let t0 = Instant::now();
        overlay.record(&obj("gone", "7", 1));
        assert_eq!(overlay.merge(vec![], t0).len(), 1);
        // Deleted before the watch ever showed it: the store is trusted after the TTL.
        assert!(overlay.merge(vec![], t0 + OVERLAY_TTL * 2).is_empty());
    }
}
