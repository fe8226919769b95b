//! The `CloudProvider` trait: what the controllers (and `simulate`, which only needs
//! [`CloudProvider::instance_types`]) ask of a cloud.
//!
//! The trait is async and dyn-compatible (`Arc<dyn CloudProvider>`), so the controller crate is
//! written once against it and the binary picks a provider at start-up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use karpenter_api::v1::{NodeClaim, NodePool};
use karpenter_solver::InstanceType;

/// Everything a provider call can fail with. The variants drive what the controllers do next,
/// so providers must map their own errors onto them carefully.
#[derive(Debug, thiserror::Error)]
pub enum CloudProviderError {
    /// No capacity for any offering the NodeClaim allows. The NodeClaim is deleted and its
    /// pods are re-solved; the provider marks the offerings it tried unavailable for a while
    /// ([`UnavailableOfferings`]) so the next round picks something else.
    #[error("insufficient capacity: {0}")]
    InsufficientCapacity(String),
    /// The instance does not exist (any more). Deletion loops stop on this.
    #[error("instance not found: {0}")]
    NodeClaimNotFound(String),
    /// The NodeClaim's NodeClass is missing or not ready; launching cannot succeed until it is.
    #[error("node class not ready: {0}")]
    NodeClassNotReady(String),
    /// A failure worth retrying (API throttling, timeouts, conflicts).
    #[error("transient provider error: {0}")]
    Transient(String),
    /// A failure retrying will not fix (invalid request, unsupported NodeClass kind).
    #[error("provider error: {0}")]
    Fatal(String),
}

impl CloudProviderError {
    /// Whether this says the instance is gone.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NodeClaimNotFound(_))
    }

    /// A short snake-case label for metrics and condition reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InsufficientCapacity(_) => "insufficient_capacity",
            Self::NodeClaimNotFound(_) => "not_found",
            Self::NodeClassNotReady(_) => "nodeclass_not_ready",
            Self::Transient(_) => "transient",
            Self::Fatal(_) => "fatal",
        }
    }
}

/// A cloud that launches and terminates instances for NodeClaims.
///
/// Instances are described as NodeClaims (upstream's convention): `create` returns the
/// launched view (providerID, labels, capacity, allocatable), `get`/`list` return one view per
/// instance with `metadata.name` set to the instance name and `status.providerID` set.
#[async_trait]
pub trait CloudProvider: Send + Sync {
    /// Launches an instance satisfying the NodeClaim's requirements, choosing the cheapest
    /// available compatible offering. Must be idempotent for a NodeClaim (a retry after a
    /// crash returns the instance already launched for it rather than a second one).
    ///
    /// The result is the NodeClaim with `status.providerID`, `status.capacity`,
    /// `status.allocatable` and the instance-type / zone / capacity-type labels set.
    async fn create(&self, claim: &NodeClaim) -> Result<NodeClaim, CloudProviderError>;

    /// Starts terminating the NodeClaim's instance. Callers repeat the call until it returns
    /// [`CloudProviderError::NodeClaimNotFound`], which means the instance is gone.
    async fn delete(&self, claim: &NodeClaim) -> Result<(), CloudProviderError>;

    /// The instance with this providerID ([`CloudProviderError::NodeClaimNotFound`] if none).
    async fn get(&self, provider_id: &str) -> Result<NodeClaim, CloudProviderError>;

    /// Every instance this provider manages (for garbage collection).
    async fn list(&self) -> Result<Vec<NodeClaim>, CloudProviderError>;

    /// The instance types a NodePool may launch, with live offering availability and prices.
    async fn instance_types(
        &self,
        pool: &NodePool,
    ) -> Result<Vec<InstanceType>, CloudProviderError>;

    /// Why the NodeClaim no longer matches its NodeClass (`None` when it does).
    async fn is_drifted(&self, claim: &NodeClaim) -> Result<Option<String>, CloudProviderError>;

    /// [`Self::is_drifted`] for many NodeClaims at once, the answers in the same order. The
    /// controller asks every due NodeClaim in one call (each every few minutes), so a provider
    /// whose check calls the cloud should batch the calls (AWS: one DescribeInstances for many
    /// instances); the default asks one at a time.
    async fn are_drifted(
        &self,
        claims: &[NodeClaim],
    ) -> Vec<Result<Option<String>, CloudProviderError>> {
        let mut out = Vec::with_capacity(claims.len());
        for c in claims {
            out.push(self.is_drifted(c).await);
        }
        out
    }

    /// Groups of instances with a minimum size that emptiness and consolidation respect (a
    /// Cluster API MachineDeployment with Cluster Autoscaler's min-size annotation): they never
    /// remove more of a group's NodeClaims than its [`NodeGroupFloor::removable`]. Drift and
    /// expiration are not limited (they replace). Providers without such groups have none
    /// (the default).
    async fn node_group_floors(&self) -> Result<Vec<NodeGroupFloor>, CloudProviderError> {
        Ok(Vec::new())
    }

    /// Node conditions that mean "replace this node" after a toleration (node repair).
    fn repair_policies(&self) -> Vec<RepairPolicy> {
        Vec::new()
    }

    /// How the provider's capacity reservations are told apart (`None`: it has none, the
    /// default). A planned NodeClaim on a reservation is pinned to it with this label.
    fn reservations(&self) -> Option<ReservationLabel> {
        None
    }

    /// The provider's name (`kwok`, `aws`), used in metrics and logs.
    fn name(&self) -> &str;
}

/// The label naming the capacity reservation an instance runs in (upstream
/// `cloudprovider.ReservationIDLabel`), and what the provider's reservation capacities mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationLabel {
    /// Label key, e.g. `karpenter.k8s.aws/capacity-reservation-id`.
    pub key: &'static str,
    /// `true`: offerings report a reservation's whole size, and the controller subtracts the
    /// NodeClaims it knows on each reservation (kwok, where the cluster is the only record of
    /// what runs). `false`: they report what is left, as a cloud API does.
    pub capacity_is_total: bool,
}

/// A group of instances with a minimum size ([`CloudProvider::node_group_floors`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroupFloor {
    /// The group, as messages name it (`MachineDeployment ns/name`).
    pub group: String,
    /// The NodeClaims of the group's live instances that Karpenter manages.
    pub node_claims: Vec<String>,
    /// How many of them scale-down may remove before the group is at its minimum size (at
    /// most `node_claims.len()`).
    pub removable: usize,
}

/// A node condition that, held for `toleration`, makes a node unhealthy (node repair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairPolicy {
    /// Node condition type, e.g. `Ready`.
    pub condition_type: String,
    /// The unhealthy status, e.g. `False`.
    pub condition_status: String,
    /// How long the condition may hold before the node is replaced.
    pub toleration: Duration,
}

/// One offering: instance type × zone × capacity type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OfferingKey {
    /// Instance type name.
    pub instance_type: String,
    /// Zone.
    pub zone: String,
    /// Capacity type.
    pub capacity_type: String,
}

/// Offerings that recently failed with insufficient capacity ("ICE cache"). They are reported
/// unavailable until their entry expires, so the solver and the provider choose others.
#[derive(Debug)]
pub struct UnavailableOfferings {
    ttl: Duration,
    entries: Mutex<HashMap<OfferingKey, Instant>>,
}

/// How long an offering stays unavailable after an insufficient-capacity error (AWS uses 3 min).
pub const DEFAULT_UNAVAILABLE_TTL: Duration = Duration::from_secs(180);

impl Default for UnavailableOfferings {
    fn default() -> Self {
        Self::new(DEFAULT_UNAVAILABLE_TTL)
    }
}

impl UnavailableOfferings {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Marks an offering unavailable from `now` for the TTL.
    pub fn mark(&self, key: OfferingKey, now: Instant) {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key, now + self.ttl);
    }

    /// Whether the offering is unavailable at `now`.
    pub fn is_unavailable(&self, key: &OfferingKey, now: Instant) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).is_some_and(|until| *until > now)
    }

    /// Sets `available = false` on every offering in the cache at `now` and drops expired
    /// entries.
    pub fn apply(&self, instance_types: &mut [InstanceType], now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, until| *until > now);
        if entries.is_empty() {
            return;
        }
        for it in instance_types.iter_mut() {
            for o in &mut it.offerings {
                let key = OfferingKey {
                    instance_type: it.name.clone(),
                    zone: o.zone.clone(),
                    capacity_type: o.capacity_type.clone(),
                };
                if entries.contains_key(&key) {
                    o.available = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpenter_solver::{Offering, Resources};

    fn key(zone: &str) -> OfferingKey {
        OfferingKey {
            instance_type: "m".into(),
            zone: zone.into(),
            capacity_type: "spot".into(),
        }
    }

    #[test]
    fn unavailable_offerings_expire() {
        let cache = UnavailableOfferings::new(Duration::from_secs(60));
        let t0 = Instant::now();
        cache.mark(key("a"), t0);
        assert!(cache.is_unavailable(&key("a"), t0 + Duration::from_secs(59)));
        assert!(!cache.is_unavailable(&key("a"), t0 + Duration::from_secs(61)));
        assert!(!cache.is_unavailable(&key("b"), t0));

        let mut its = vec![InstanceType {
            name: "m".into(),
            capacity: Resources::new(),
            overhead: Default::default(),
            labels: Default::default(),
            offerings: vec![
                Offering::new("a", "spot", 1.0),
                Offering::new("b", "spot", 1.0),
            ],
        }];
        cache.apply(&mut its, t0);
        assert!(!its[0].offerings[0].available);
        assert!(its[0].offerings[1].available);
        let mut fresh = its.clone();
        fresh[0].offerings[0].available = true;
        cache.apply(&mut fresh, t0 + Duration::from_secs(61));
        assert!(
            fresh[0].offerings[0].available,
            "expired entries no longer apply"
        );
    }

    #[test]
    fn trait_is_dyn_compatible() {
        fn takes(_: Option<std::sync::Arc<dyn CloudProvider>>) {}
        takes(None);
    }
}
