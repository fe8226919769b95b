//! How the state keeps a pod: its metadata and status, and a spec shared with the other pods
//! of the same owner whose specs are equal.
//!
//! The pods of one ReplicaSet, StatefulSet or Job differ in their metadata and status and in
//! `spec.nodeName` only. The Kubernetes `Pod` struct is ~2 KB before any field is set, and its
//! spec (with one container, another 2 KB) was most of the ~7.8 KB a slimmed pod took in the
//! store: at 10 000 pods that was ~80 MB of the controller's memory. Keeping `nodeName` apart
//! lets identical specs be one allocation.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use karpenter_api::solver_input::PodObject;
use kube::Resource;

/// A pod as stored: `spec.nodeName` lifted out of the (shared) spec.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredPod {
    /// `metadata`.
    pub metadata: ObjectMeta,
    /// `spec` without `nodeName`; an object without a spec gets the default one.
    pub spec: Arc<PodSpec>,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `status`.
    pub status: Option<PodStatus>,
}

impl StoredPod {
    /// The node the pod is bound to, if any (an empty name is none).
    pub fn bound_node(&self) -> Option<&str> {
        self.node_name.as_deref().filter(|n| !n.is_empty())
    }

    /// The Kubernetes object again (its spec copied out of the shared one).
    pub fn to_pod(&self) -> Pod {
        let mut spec = PodSpec::clone(&self.spec);
        spec.node_name.clone_from(&self.node_name);
        Pod {
            metadata: self.metadata.clone(),
            spec: Some(spec),
            status: self.status.clone(),
        }
    }
}

impl From<Pod> for StoredPod {
    /// A stored pod with a spec of its own (the watch shares specs through [`SpecInterner`]).
    fn from(pod: Pod) -> Self {
        let mut spec = pod.spec.unwrap_or_default();
        let node_name = spec.node_name.take();
        Self {
            metadata: pod.metadata,
            spec: Arc::new(spec),
            node_name,
            status: pod.status,
        }
    }
}

impl PodObject for StoredPod {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    /// Without `nodeName`: the conversion to the solver's view never reads it (bound pods are
    /// placed by their caller).
    fn spec(&self) -> Option<&PodSpec> {
        Some(&self.spec)
    }
}

impl Resource for StoredPod {
    type DynamicType = ();
    type Scope = <Pod as Resource>::Scope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        Pod::kind(dt)
    }

    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        Pod::group(dt)
    }

    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        Pod::version(dt)
    }

    fn api_version(dt: &()) -> std::borrow::Cow<'_, str> {
        Pod::api_version(dt)
    }

    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        Pod::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Shares equal specs of pods with the same controlling owner: the last spec seen per owner
/// UID is kept, and a pod whose spec equals it gets that allocation. A pod template change (a
/// new ReplicaSet has a new UID) or an in-place resize just starts a new shared spec.
#[derive(Debug, Default)]
pub struct SpecInterner {
    by_owner: HashMap<String, Arc<PodSpec>>,
    /// Size of `by_owner` after the last sweep of owners no stored pod refers to any more.
    swept_at: usize,
}

impl SpecInterner {
    /// `pod` as stored, its spec shared when an equal one of the same owner is.
    pub fn store(&mut self, pod: Pod) -> StoredPod {
        let mut stored = StoredPod::from(pod);
        let Some(owner) = controller_uid(&stored.metadata) else {
            return stored;
        };
        match self.by_owner.get(owner) {
            Some(known) if **known == *stored.spec => stored.spec = known.clone(),
            _ => {
                self.by_owner.insert(owner.to_owned(), stored.spec.clone());
                self.sweep();
            }
        }
        stored
    }

    /// Drops specs only this interner still holds, once the map has doubled since the last
    /// sweep: amortised constant per pod, and bounded by twice the live owners.
    fn sweep(&mut self) {
        if self.by_owner.len() < 2 * self.swept_at.max(64) {
            return;
        }
        self.by_owner.retain(|_, spec| Arc::strong_count(spec) > 1);
        self.swept_at = self.by_owner.len();
    }

    /// How many owners' specs are kept.
    pub fn len(&self) -> usize {
        self.by_owner.len()
    }

    /// Whether no spec is kept.
    pub fn is_empty(&self) -> bool {
        self.by_owner.is_empty()
    }
}

fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(name: &str, owner: Option<&str>, cpu: &str, node: Option<&str>) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
        }))
        .unwrap();
        if let Some(uid) = owner {
            p.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    kind: "ReplicaSet".into(),
                    name: "rs".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]);
        }
        if let Some(s) = p.spec.as_mut() {
            s.node_name = node.map(Into::into);
        }
        p
    }

    #[test]
    fn pods_of_one_owner_share_equal_specs_whatever_their_node() {
        let mut i = SpecInterner::default();
        let a = i.store(pod("a", Some("rs1"), "1", Some("n1")));
        let b = i.store(pod("b", Some("rs1"), "1", Some("n2")));
        let c = i.store(pod("c", Some("rs1"), "1", None));
        assert!(Arc::ptr_eq(&a.spec, &b.spec));
        assert!(Arc::ptr_eq(&a.spec, &c.spec));
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(b.node_name.as_deref(), Some("n2"));
        assert_eq!(c.bound_node(), None);
        assert_eq!(
            a.spec.node_name, None,
            "nodeName lives beside the shared spec"
        );
    }

    #[test]
    fn different_specs_or_owners_are_not_shared() {
        let mut i = SpecInterner::default();
        let a = i.store(pod("a", Some("rs1"), "1", None));
        let resized = i.store(pod("b", Some("rs1"), "2", None));
        let other_owner = i.store(pod("c", Some("rs2"), "1", None));
        let no_owner = i.store(pod("d", None, "1", None));
        assert!(!Arc::ptr_eq(&a.spec, &resized.spec));
        assert_ne!(a.spec, resized.spec);
        assert!(!Arc::ptr_eq(&a.spec, &other_owner.spec));
        assert!(!Arc::ptr_eq(&a.spec, &no_owner.spec));
        // The owner's latest spec is the one shared from now on.
        let after = i.store(pod("e", Some("rs1"), "2", None));
        assert!(Arc::ptr_eq(&resized.spec, &after.spec));
    }

    #[test]
    fn the_pod_comes_back_whole() {
        let original = pod("a", Some("rs1"), "1", Some("n1"));
        let stored = SpecInterner::default().store(original.clone());
        assert_eq!(stored.to_pod(), original);
    }

    #[test]
    fn specs_of_gone_owners_are_swept() {
        let mut i = SpecInterner::default();
        for n in 0..1000 {
            // Each pod dropped at once: its owner's spec is held by the interner alone.
            i.store(pod("p", Some(&format!("rs{n}")), "1", None));
        }
        assert!(i.len() < 200, "kept {} specs of gone owners", i.len());
        let kept: Vec<StoredPod> = (0..300)
            .map(|n| i.store(pod("q", Some(&format!("live{n}")), "1", None)))
            .collect();
        for n in 0..1000 {
            i.store(pod("p", Some(&format!("again{n}")), "1", None));
        }
        // Live owners' specs survive sweeps.
        let again = i.store(pod("r", Some("live7"), "1", None));
        assert!(Arc::ptr_eq(&kept[7].spec, &again.spec));
    }
}
