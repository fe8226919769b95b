//! The cluster state's secondary indexes, pure: folded from watch events, tested without an API
//! server. They hold keys (names, `namespace/name`), never objects: the objects live once, in
//! the kind's store, and a lookup goes index → key → store.
//!
//! A watcher re-list (`Init`, `InitApply`…, `InitDone`) builds a fresh index on the side and
//! swaps it in at `InitDone`, exactly as kube's store does with its objects, so the index and the
//! store describe the same list.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::api::core::v1::Node;

use super::StoredPod as Pod;
use karpenter_api::v1::NodeClaim;
use kube::runtime::watcher::Event;

use crate::pods::{awaits_capacity, is_provisionable, is_terminal, pod_key};

/// An index over one kind: folds objects in and out, and says what changed.
pub trait Fold<K>: Default {
    /// What an update tells the loops (for example, the node a pod arrived on).
    type Change;
    /// Folds in an added or updated object.
    fn apply(&mut self, obj: &K) -> Option<Self::Change>;
    /// Folds out a deleted object.
    fn delete(&mut self, obj: &K) -> Option<Self::Change>;
}

/// An index following a watch: live between re-lists, rebuilt aside during one.
#[derive(Debug, Default)]
pub struct Indexed<T> {
    live: T,
    next: Option<T>,
}

impl<T> Indexed<T> {
    /// The index as of the last complete list plus the events since.
    pub fn live(&self) -> &T {
        &self.live
    }

    /// Folds one watch event in. Changes are reported for `Apply` and `Delete` only: objects
    /// of a (re-)list are remembered, not reported, since nothing is known to have changed.
    pub fn on_event<K>(&mut self, event: &Event<K>) -> Option<T::Change>
    where
        T: Fold<K>,
    {
        match event {
            Event::Init => {
                self.next = Some(T::default());
                None
            }
            Event::InitApply(obj) => {
                self.next.get_or_insert_with(T::default).apply(obj);
                None
            }
            Event::InitDone => {
                if let Some(next) = self.next.take() {
                    self.live = next;
                }
                None
            }
            Event::Apply(obj) => self.live.apply(obj),
            Event::Delete(obj) => self.live.delete(obj),
        }
    }
}

/// A one-to-many map kept consistent both ways: each object (by key) has at most one value,
/// and each value lists its objects.
#[derive(Debug, Default)]
pub struct Multimap {
    by_value: HashMap<String, BTreeSet<String>>,
    of: HashMap<String, String>,
}

impl Multimap {
    /// Sets (or clears) the object's value; returns its previous value.
    pub fn set(&mut self, key: &str, value: Option<&str>) -> Option<String> {
        if self.of.get(key).map(String::as_str) == value {
            return value.map(str::to_string);
        }
        let old = self.of.remove(key);
        if let Some(old) = &old
            && let Some(keys) = self.by_value.get_mut(old)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.by_value.remove(old);
            }
        }
        if let Some(value) = value {
            self.of.insert(key.to_string(), value.to_string());
            self.by_value
                .entry(value.to_string())
                .or_default()
                .insert(key.to_string());
        }
        old
    }

    /// The objects with this value, in key order.
    pub fn keys_of(&self, value: &str) -> impl Iterator<Item = &str> {
        self.by_value
            .get(value)
            .into_iter()
            .flat_map(|keys| keys.iter().map(String::as_str))
    }

    /// The object's value.
    pub fn value_of(&self, key: &str) -> Option<&str> {
        self.of.get(key).map(String::as_str)
    }
}

/// NodeClaims by `status.providerID`.
#[derive(Debug, Default)]
pub struct NodeClaimIndex {
    /// providerID → NodeClaim names.
    pub by_provider_id: Multimap,
}

impl Fold<NodeClaim> for NodeClaimIndex {
    type Change = ();

    fn apply(&mut self, claim: &NodeClaim) -> Option<()> {
        let name = claim.metadata.name.as_deref()?;
        let pid = claim.status.as_ref().and_then(|s| s.provider_id.as_deref());
        self.by_provider_id.set(name, pid.filter(|p| !p.is_empty()));
        None
    }

    fn delete(&mut self, claim: &NodeClaim) -> Option<()> {
        self.by_provider_id
            .set(claim.metadata.name.as_deref()?, None);
        Some(())
    }
}

/// Nodes by `spec.providerID`.
#[derive(Debug, Default)]
pub struct NodeIndex {
    /// providerID → Node names.
    pub by_provider_id: Multimap,
}

impl Fold<Node> for NodeIndex {
    type Change = ();

    fn apply(&mut self, node: &Node) -> Option<()> {
        let name = node.metadata.name.as_deref()?;
        let pid = node.spec.as_ref().and_then(|s| s.provider_id.as_deref());
        self.by_provider_id.set(name, pid.filter(|p| !p.is_empty()));
        None
    }

    fn delete(&mut self, node: &Node) -> Option<()> {
        self.by_provider_id
            .set(node.metadata.name.as_deref()?, None);
        Some(())
    }
}

/// Pods by the node they hold resources on, the provisionable (pending) ones, and how many are
/// in each phase (for `karpenter_pods_state`).
#[derive(Debug, Default)]
pub struct PodIndex {
    /// Node name → `namespace/name` of the live (bound, not finished) pods on it.
    pub on_node: Multimap,
    /// `namespace/name` of the pods waiting for capacity.
    pub pending: HashSet<String>,
    phases: HashMap<String, &'static str>,
    counts: BTreeMap<&'static str, i64>,
}

/// A pod arrived on, or left, this node (bound, deleted, or finished there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMoved {
    /// The node.
    pub node: String,
}

/// The `karpenter_pods_state` phase of a pod: `Unschedulable` while it waits for capacity.
fn phase(pod: &Pod) -> &'static str {
    if is_provisionable(pod) {
        return "Unschedulable";
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => "Pending",
        Some("Running") => "Running",
        Some("Succeeded") => "Succeeded",
        Some("Failed") => "Failed",
        _ => "Unknown",
    }
}

/// The node a pod holds resources on: bound and not finished.
pub fn live_node(pod: &Pod) -> Option<&str> {
    let node = pod.bound_node()?;
    (!is_terminal(pod)).then_some(node)
}

impl PodIndex {
    /// Pods per `karpenter_pods_state` phase.
    pub fn phase_counts(&self) -> &BTreeMap<&'static str, i64> {
        &self.counts
    }

    fn count(&mut self, key: &str, phase: Option<&'static str>) {
        let old = match phase {
            Some(p) => self.phases.insert(key.to_string(), p),
            None => self.phases.remove(key),
        };
        if old == phase {
            return;
        }
        if let Some(old) = old
            && let Some(n) = self.counts.get_mut(old)
        {
            *n -= 1;
            if *n <= 0 {
                self.counts.remove(old);
            }
        }
        if let Some(p) = phase {
            *self.counts.entry(p).or_default() += 1;
        }
    }
}

impl Fold<Pod> for PodIndex {
    type Change = PodMoved;

    fn apply(&mut self, pod: &Pod) -> Option<PodMoved> {
        let key = pod_key(pod);
        if awaits_capacity(pod) {
            self.pending.insert(key.clone());
        } else {
            self.pending.remove(&key);
        }
        self.count(&key, Some(phase(pod)));
        let node = live_node(pod);
        let old = self.on_node.set(&key, node);
        match (old, node) {
            (old, Some(node)) if old.as_deref() != Some(node) => Some(PodMoved {
                node: node.to_string(),
            }),
            (Some(old), None) => Some(PodMoved { node: old }),
            _ => None,
        }
    }

    fn delete(&mut self, pod: &Pod) -> Option<PodMoved> {
        let key = pod_key(pod);
        self.pending.remove(&key);
        self.count(&key, None);
        self.on_node.set(&key, None).map(|node| PodMoved { node })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": name},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase}
        }))
        .unwrap()
        .into()
    }

    fn pending(name: &str) -> Pod {
        crate::pods::tests::unschedulable(name).into()
    }

    fn claim(name: &str, pid: Option<&str>) -> NodeClaim {
        serde_json::from_value(json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": name},
            "spec": {"nodeClassRef": {"group": "g", "kind": "k", "name": "n"}, "requirements": []},
            "status": {"providerID": pid}
        }))
        .unwrap()
    }

    fn node(name: &str, pid: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"providerID": pid}
        }))
        .unwrap()
    }

    fn on<'a>(i: &'a PodIndex, node: &str) -> Vec<&'a str> {
        i.on_node.keys_of(node).collect()
    }

    #[test]
    fn pods_follow_their_node_and_report_moves() {
        let mut i = Indexed::<PodIndex>::default();
        let moved = |n: &str| Some(PodMoved { node: n.into() });
        assert_eq!(i.on_event(&Event::Apply(pending("a"))), None);
        assert!(i.live().pending.contains("ns/a"));
        assert_eq!(
            i.on_event(&Event::Apply(pod("a", Some("n1"), "Pending"))),
            moved("n1")
        );
        assert!(i.live().pending.is_empty(), "bound: no longer pending");
        assert_eq!(on(i.live(), "n1"), vec!["ns/a"]);
        // A status update on the same node is no move.
        assert_eq!(
            i.on_event(&Event::Apply(pod("a", Some("n1"), "Running"))),
            None
        );
        assert_eq!(
            i.on_event(&Event::Apply(pod("b", Some("n1"), "Running"))),
            moved("n1")
        );
        assert_eq!(on(i.live(), "n1"), vec!["ns/a", "ns/b"]);
        // Finishing frees the node.
        assert_eq!(
            i.on_event(&Event::Apply(pod("a", Some("n1"), "Succeeded"))),
            moved("n1")
        );
        assert_eq!(on(i.live(), "n1"), vec!["ns/b"]);
        // Deleting a finished pod is no move; deleting a live one is.
        assert_eq!(
            i.on_event(&Event::Delete(pod("a", Some("n1"), "Succeeded"))),
            None
        );
        assert_eq!(
            i.on_event(&Event::Delete(pod("b", Some("n1"), "Running"))),
            moved("n1")
        );
        assert!(on(i.live(), "n1").is_empty());
        assert!(i.live().phase_counts().is_empty(), "every pod counted out");
    }

    #[test]
    fn phase_counts_follow_updates() {
        let mut i = Indexed::<PodIndex>::default();
        i.on_event(&Event::Apply(pending("a")));
        i.on_event(&Event::Apply(pending("b")));
        i.on_event(&Event::Apply(pod("c", Some("n"), "Running")));
        let counts = |i: &Indexed<PodIndex>| {
            i.live()
                .phase_counts()
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            counts(&i),
            vec![("Running".into(), 1), ("Unschedulable".into(), 2)]
        );
        i.on_event(&Event::Apply(pod("a", Some("n"), "Running")));
        assert_eq!(
            counts(&i),
            vec![("Running".into(), 2), ("Unschedulable".into(), 1)]
        );
        i.on_event(&Event::Delete(pending("b")));
        assert_eq!(counts(&i), vec![("Running".into(), 2)]);
    }

    #[test]
    fn a_relist_replaces_the_index_at_init_done() {
        let mut i = Indexed::<PodIndex>::default();
        i.on_event(&Event::Apply(pod("gone", Some("n1"), "Running")));
        i.on_event(&Event::<Pod>::Init);
        assert_eq!(
            i.on_event(&Event::InitApply(pod("kept", Some("n2"), "Running"))),
            None,
            "a listed pod is remembered, not reported"
        );
        // Until the list is complete, readers see the previous one.
        assert_eq!(on(i.live(), "n1"), vec!["ns/gone"]);
        assert!(on(i.live(), "n2").is_empty());
        i.on_event(&Event::<Pod>::InitDone);
        assert!(on(i.live(), "n1").is_empty(), "deleted while not watching");
        assert_eq!(on(i.live(), "n2"), vec!["ns/kept"]);
        // The listed pod moving is reported as usual afterwards.
        assert_eq!(
            i.on_event(&Event::Apply(pod("kept", Some("n3"), "Running"))),
            Some(PodMoved { node: "n3".into() })
        );
    }

    #[test]
    fn claims_and_nodes_by_provider_id() {
        let mut claims = Indexed::<NodeClaimIndex>::default();
        claims.on_event(&Event::Apply(claim("a", None)));
        assert_eq!(claims.live().by_provider_id.value_of("a"), None);
        claims.on_event(&Event::Apply(claim("a", Some("kwok://1"))));
        claims.on_event(&Event::Apply(claim("b", Some("kwok://2"))));
        let of = |i: &Indexed<NodeClaimIndex>, pid: &str| {
            i.live()
                .by_provider_id
                .keys_of(pid)
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(of(&claims, "kwok://1"), vec!["a"]);
        claims.on_event(&Event::Delete(claim("a", Some("kwok://1"))));
        assert!(of(&claims, "kwok://1").is_empty());
        assert_eq!(of(&claims, "kwok://2"), vec!["b"]);

        let mut nodes = Indexed::<NodeIndex>::default();
        nodes.on_event(&Event::Apply(node("n1", "kwok://1")));
        nodes.on_event(&Event::Apply(node("n2", "kwok://1")));
        let names: Vec<&str> = nodes.live().by_provider_id.keys_of("kwok://1").collect();
        assert_eq!(names, vec!["n1", "n2"], "duplicates are all kept");
        nodes.on_event(&Event::Apply(node("n2", "kwok://2")));
        let names: Vec<&str> = nodes.live().by_provider_id.keys_of("kwok://1").collect();
        assert_eq!(names, vec!["n1"], "a changed providerID moves the node");
    }
}
