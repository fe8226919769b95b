//! Watch plumbing: one watch per kind, trimmed, folded into the kind's store, with hooks for
//! the indexes (before the store applies an event) and for the sync gate, the in-flight
//! NodeClaims and the fan-out to controllers (after).

use std::collections::VecDeque;
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::sync::KindSync;

/// The annotation `kubectl apply` keeps a full copy of the object in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How many changes a slow subscriber may fall behind before it is sent everything again.
const FAN_OUT_CAPACITY: usize = 4096;

/// Drops what no loop reads and what makes up much of an object's size: `managedFields` and
/// kubectl's last-applied copy. Nothing writes a stored object back whole, so they are not
/// lost on the API side.
pub fn trim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Drops what no loop reads from a pod and what is most of its size once `managedFields` are
/// gone: container environments, commands, probes, mounts, images and security contexts,
/// volumes that claim no storage (the projected service-account token every pod carries was
/// the largest part of a stored pod on the perf suite's heap profile), and the container
/// statuses. Kept: names, resources, ports and restart policies (effective requests, sidecars,
/// host ports), claimed volumes (zones), and of the status the phase, the nominated node and
/// the conditions in [`KEPT_POD_CONDITIONS`].
pub fn slim_pod(pod: &mut Pod) {
    if let Some(spec) = pod.spec.as_mut() {
        spec.security_context = None;
        spec.host_aliases = None;
        spec.dns_config = None;
        spec.image_pull_secrets = None;
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
        }
        if spec.volumes.as_ref().is_some_and(Vec::is_empty) {
            spec.volumes = None;
        }
        let init = spec.init_containers.iter_mut().flatten();
        for c in spec.containers.iter_mut().chain(init) {
            c.args = None;
            c.command = None;
            c.env = None;
            c.env_from = None;
            c.image = None;
            c.lifecycle = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.volume_devices = None;
            c.volume_mounts = None;
            c.working_dir = None;
            c.termination_message_path = None;
            c.termination_message_policy = None;
            c.security_context = None;
            c.image_pull_policy = None;
            c.resize_policy = None;
        }
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
        status.host_ip = None;
        status.host_ips = None;
        status.pod_ip = None;
        status.pod_ips = None;
        status.qos_class = None;
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| KEPT_POD_CONDITIONS.contains(&c.type_.as_str()));
        }
    }
}

/// The pod conditions a loop reads: `PodScheduled` (whether kube-scheduler judged the pod, and
/// found it unschedulable) and `Ready` (pod startup metrics). A pod carries five; at 10 000
/// pods the other three were ~6 MB of the store.
const KEPT_POD_CONDITIONS: [&str; 2] = ["PodScheduled", "Ready"];

/// Drops the image list kubelets report on a Node (often the bulk of its status).
pub fn slim_node(node: &mut Node) {
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
}

/// What a subscriber hears: one object changed, or everything must be looked at again (a
/// re-list completed, or the subscriber fell behind).
#[derive(Debug, Clone)]
enum Change {
    Object(String, Option<String>),
    All,
}

/// Fans the changes of one store out to the controllers driven by it, as names: the objects
/// stay in the store, and a subscriber reads the latest version when it gets to it.
#[derive(Clone)]
pub struct FanOut<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq,
{
    tx: broadcast::Sender<Change>,
    store: Store<K>,
    /// Set at the store's first complete list. Not `Store::wait_until_ready`: that wakes only
    /// one of several concurrent waiters (and the controllers wait on the same store).
    listed: Arc<watch::Sender<bool>>,
}

impl<K> FanOut<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + std::hash::Hash + Eq + Clone,
{
    /// A fan-out over this store.
    pub fn new(store: Store<K>) -> Self {
        let (tx, _) = broadcast::channel(FAN_OUT_CAPACITY);
        let (listed, _) = watch::channel(false);
        Self {
            tx,
            store,
            listed: Arc::new(listed),
        }
    }

    /// Tells subscribers about an event the store applied.
    pub fn publish(&self, event: &watcher::Event<K>) {
        let change = match event {
            watcher::Event::Apply(obj) => {
                let meta = obj.meta();
                let Some(name) = meta.name.clone() else {
                    return;
                };
                Change::Object(name, meta.namespace.clone())
            }
            watcher::Event::InitDone => {
                self.listed.send_replace(true);
                Change::All
            }
            // Deleted objects are gone from the store; reconcilers see deletions as updates
            // carrying a deletionTimestamp (finalizers), before this.
            _ => return,
        };
        // No subscriber (not leading): nothing to tell.
        let _ = self.tx.send(change);
    }

    /// Every object in the store once the store has its first list, then every object that
    /// changes (latest version), for as long as the stream is polled.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        // Subscribe before reading the store, so no change falls between the two.
        let rx = self.tx.subscribe();
        let store = self.store.clone();
        let listed = self.listed.subscribe();
        let state = (rx, listed, store, None::<VecDeque<Arc<K>>>);
        futures::stream::unfold(state, |(mut rx, mut listed, store, backlog)| async move {
            let mut backlog = match backlog {
                Some(b) => b,
                None => {
                    listed.wait_for(|l| *l).await.ok()?;
                    store.state().into()
                }
            };
            loop {
                if let Some(obj) = backlog.pop_front() {
                    return Some((obj, (rx, listed, store, Some(backlog))));
                }
                match rx.recv().await {
                    Ok(Change::Object(name, ns)) => {
                        let mut r = ObjectRef::<K>::new(&name);
                        r.namespace = ns;
                        if let Some(obj) = store.get(&r) {
                            return Some((obj, (rx, listed, store, Some(backlog))));
                        }
                    }
                    Ok(Change::All) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        backlog = store.state().into();
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}

/// Watches `api` into `writer`: each object trimmed ([`trim`]) and slimmed in place by `slim`.
/// See [`spawn_mapped`].
pub fn spawn<K, B, A>(
    api: Api<K>,
    writer: Writer<K>,
    sync: Option<KindSync>,
    slim: fn(&mut K),
    before: B,
    after: A,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    B: FnMut(&watcher::Event<K>) + Send + 'static,
    A: FnMut(&watcher::Event<K>) + Send + 'static,
{
    spawn_mapped(
        api,
        writer,
        sync,
        move |mut obj| {
            slim(&mut obj);
            obj
        },
        before,
        after,
    )
}

/// Watches `api`, trims each object ([`trim`]) and turns it into what the store keeps with
/// `store_as`, then calls `before` (indexes), folds the event into `writer`, tells `sync` of
/// list starts and ends, and calls `after` (fan-out). Watch errors are retried with backoff.
pub fn spawn_mapped<K, S, M, B, A>(
    api: Api<K>,
    writer: Writer<S>,
    sync: Option<KindSync>,
    mut store_as: M,
    mut before: B,
    mut after: A,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    S: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    S::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    M: FnMut(K) -> S + Send + 'static,
    B: FnMut(&watcher::Event<S>) + Send + 'static,
    A: FnMut(&watcher::Event<S>) + Send + 'static,
{
    let kind = K::kind(&Default::default()).to_string();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .map_ok(move |event| {
            map_event(event, |mut obj| {
                trim(&mut obj);
                store_as(obj)
            })
        })
        .inspect(move |item| {
            if let Ok(event) = item {
                before(event);
            }
        })
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    match (&event, &sync) {
                        (watcher::Event::Init, Some(sync)) => sync.listing(),
                        (watcher::Event::InitDone, Some(sync)) => sync.listed(),
                        _ => {}
                    }
                    after(&event);
                }
                // The backoff retries; the store keeps serving the last state meanwhile.
                Err(e) => tracing::warn!(error = %e, kind = %kind, "watch failed"),
            }
        }
        tracing::warn!(kind = %kind, "watch stream ended");
    })
}

fn map_event<K, S>(event: watcher::Event<K>, mut f: impl FnMut(K) -> S) -> watcher::Event<S> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Whether the API server serves an optional kind (a CRD that may not be installed) to us.
pub(crate) enum Served {
    /// Listed, or an error other than "not found" and "forbidden": a flaky API server must
    /// not make a loop skip the kind.
    Yes,
    /// The kind is not served (no CRD).
    NotFound,
    /// RBAC does not allow listing it.
    Forbidden,
}

/// Lists one object of `K` to see whether it is [`Served`].
pub(crate) async fn served<K>(client: &kube::Client) -> Served
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api = Api::<K>::all(client.clone());
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Served::NotFound,
        Err(kube::Error::Api(e)) if e.code == 403 => Served::Forbidden,
        _ => Served::Yes,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn node(name: &str, label: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("v".to_string(), label.to_string())])),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    #[test]
    fn trim_drops_managed_fields_and_the_last_applied_copy() {
        let mut n = node("n", "1");
        n.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        n.metadata.annotations = Some(BTreeMap::from([
            (LAST_APPLIED_ANNOTATION.to_string(), "{...}".to_string()),
            ("keep".to_string(), "me".to_string()),
        ]));
        trim(&mut n);
        assert_eq!(n.metadata.managed_fields, None);
        assert_eq!(
            n.metadata.annotations,
            Some(BTreeMap::from([("keep".to_string(), "me".to_string())]))
        );
    }

    #[test]
    fn slim_pods_keep_what_the_loops_read() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [{"name": "app", "image": "i", "env": [{"name": "A", "value": "1"}],
                    "resources": {"requests": {"cpu": "1"}}, "ports": [{"containerPort": 80, "hostPort": 80}],
                    "readinessProbe": {"tcpSocket": {"port": 80}}}],
                "initContainers": [{"name": "sidecar", "restartPolicy": "Always", "command": ["x"],
                    "resources": {"requests": {"memory": "1Gi"}}}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "c"}},
                    {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}],
                "securityContext": {"runAsUser": 1000}
            },
            "status": {"phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "PodScheduled", "status": "True"},
                    {"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "True"}],
                "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}], "podIP": "10.1.0.1", "podIPs": [{"ip": "10.1.0.1"}],
                "qosClass": "Burstable",
                "containerStatuses": [{"name": "app", "image": "i", "imageID": "x", "ready": true, "restartCount": 0}]}
        }))
        .unwrap();
        slim_pod(&mut pod);
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(
            v["spec"]["containers"][0],
            serde_json::json!({"name": "app", "resources": {"requests": {"cpu": "1"}},
                "ports": [{"containerPort": 80, "hostPort": 80}]})
        );
        assert_eq!(
            v["spec"]["initContainers"][0],
            serde_json::json!({"name": "sidecar", "restartPolicy": "Always",
                "resources": {"requests": {"memory": "1Gi"}}})
        );
        let volumes: Vec<&str> = v["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(volumes, ["v", "e"], "claimed volumes only");
        assert_eq!(
            v["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "c"
        );
        assert!(v["spec"].get("securityContext").is_none());
        assert_eq!(
            v["status"],
            serde_json::json!({"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"}]})
        );
    }

    async fn next(s: &mut (impl Stream<Item = Arc<Node>> + Unpin)) -> (String, String) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .unwrap();
        let label = n.metadata.labels.as_ref().unwrap()["v"].clone();
        (n.metadata.name.clone().unwrap(), label)
    }

    #[tokio::test]
    async fn subscribers_get_the_store_then_its_changes() {
        let (store, mut writer) = reflector::store::<Node>();
        let fan = FanOut::new(store);
        let mut early = Box::pin(fan.subscribe());
        let publish = |writer: &mut Writer<Node>, e: watcher::Event<Node>| {
            writer.apply_watcher_event(&e);
            fan.publish(&e);
        };
        publish(&mut writer, watcher::Event::Init);
        publish(&mut writer, watcher::Event::InitApply(node("a", "1")));
        publish(&mut writer, watcher::Event::InitDone);
        // Subscribed before the list: the store once it is ready, then the list again for
        // its completion (reconcilers are idempotent; missing an object would not be).
        assert_eq!(next(&mut early).await, ("a".into(), "1".into()));
        assert_eq!(next(&mut early).await, ("a".into(), "1".into()));
        let mut late = Box::pin(fan.subscribe());
        assert_eq!(next(&mut late).await, ("a".into(), "1".into()));
        publish(&mut writer, watcher::Event::Apply(node("a", "2")));
        assert_eq!(next(&mut late).await, ("a".into(), "2".into()));
        assert_eq!(next(&mut early).await, ("a".into(), "2".into()));
    }

    #[tokio::test]
    async fn every_waiting_subscriber_wakes_at_the_first_list() {
        let (store, mut writer) = reflector::store::<Node>();
        let fan = FanOut::new(store);
        // Subscribers polled before the store has a list, as controllers started at once are.
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let mut sub = Box::pin(fan.subscribe());
                tokio::spawn(async move { next(&mut sub).await })
            })
            .collect();
        tokio::task::yield_now().await;
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(node("a", "1")),
            watcher::Event::InitDone,
        ] {
            writer.apply_watcher_event(&e);
            fan.publish(&e);
        }
        for w in waiting {
            assert_eq!(w.await.unwrap(), ("a".into(), "1".into()));
        }
    }
}
