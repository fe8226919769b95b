//! `karpenter_providers::CloudProvider` for AWS: the [`Ec2Provider`] plus the EC2NodeClass of
//! each NodeClaim (read from the API server, resolved and cached for a short TTL), cached
//! instance types, and drift.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use karpenter_api::ec2::{AWS_GROUP, EC2NodeClass, EC2NodeClassStatus};
use karpenter_api::v1::{NodeClaim, NodeClassReference, NodePool};
use karpenter_providers::cloudprovider::ReservationLabel;
use karpenter_providers::{CloudProvider, CloudProviderError, RepairPolicy};
use karpenter_solver::InstanceType;
use karpenter_solver::labels::ARCH;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use super::AwsClients;
use super::ami::kubernetes_version;
use super::convert::kubelet_spec;
use super::drift::{
    NODECLASS_HASH_ANNOTATION, NODECLASS_HASH_VERSION, NODECLASS_HASH_VERSION_ANNOTATION,
    drift_reason, node_class_hash,
};
use super::error::AwsError;
use super::instance::instance_facts;
use super::launch;
use super::provider::Ec2Provider;
use super::reservations::{CAPACITY_RESERVATION_ID_LABEL, offer_reservations};
use super::status::{EC2_NODE_CLASS_KIND, compute_status};
use crate::kubelet::KubeletOverrides;
use crate::userdata::ClusterInfo;

/// How long a resolved EC2NodeClass is reused (a spec change re-resolves at once).
pub const RESOLVE_TTL: Duration = Duration::from_secs(60);
/// How long the instance types (and spot prices) are reused before they are fetched again.
pub const INSTANCE_TYPES_TTL: Duration = Duration::from_secs(5 * 60);

/// A class's instance types: the shared ones (fetched at `base_at`) with its kubelet overrides.
struct ClassTypes {
    base_at: Instant,
    kubelet: KubeletOverrides,
    types: Vec<InstanceType>,
}

struct Resolved {
    uid: Option<String>,
    generation: Option<i64>,
    at: Instant,
    status: EC2NodeClassStatus,
}

/// The AWS cloud provider.
pub struct AwsCloudProvider {
    ec2: Ec2Provider,
    aws: AwsClients,
    client: Client,
    resolve_ttl: Duration,
    instance_types_ttl: Duration,
    resolved: Mutex<HashMap<String, Resolved>>,
    instance_types: tokio::sync::Mutex<Option<(Instant, Vec<InstanceType>)>>,
    /// Per EC2NodeClass name: its instance types with `spec.kubelet` applied.
    class_types: Mutex<HashMap<String, ClassTypes>>,
    /// Feature gate `ReservedCapacity`: offer the classes' capacity reservations.
    reserved_capacity: bool,
}

fn to_cloud(e: AwsError) -> CloudProviderError {
    match e {
        AwsError::InsufficientCapacity(m) => CloudProviderError::InsufficientCapacity(m),
        AwsError::NodeClaimNotFound(m) => CloudProviderError::NodeClaimNotFound(m),
        AwsError::NodeClassNotReady(m) => CloudProviderError::NodeClassNotReady(m),
        AwsError::Transient(m) => CloudProviderError::Transient(m),
        AwsError::Fatal(m) => CloudProviderError::Fatal(m),
    }
}

/// The EC2 instance id behind a NodeClaim's providerID.
fn instance_id_of(claim: &NodeClaim) -> Option<&str> {
    let pid = claim.status.as_ref()?.provider_id.as_deref()?;
    launch::instance_id(pid)
}

/// Why the instance behind `claim` drifted from its resolved NodeClass, if it did.
fn claim_drift(
    claim: &NodeClaim,
    nc: &EC2NodeClass,
    status: &EC2NodeClassStatus,
    instance: &aws_sdk_ec2::types::Instance,
) -> Option<String> {
    let annotations = claim.metadata.annotations.as_ref();
    // A hash written by another scheme version says nothing about this one.
    let hash = annotations
        .and_then(|a| a.get(NODECLASS_HASH_ANNOTATION))
        .filter(|_| {
            annotations
                .and_then(|a| a.get(NODECLASS_HASH_VERSION_ANNOTATION))
                .is_some_and(|v| v == NODECLASS_HASH_VERSION)
        })
        .map(String::as_str);
    drift_reason(hash, nc, status, &instance_facts(instance)).map(str::to_owned)
}

fn kube_err(e: kube::Error) -> CloudProviderError {
    CloudProviderError::Transient(format!("kubernetes API: {e}"))
}

impl AwsCloudProvider {
    /// A provider for `cluster` in `region`: AWS calls through `aws`, EC2NodeClasses and
    /// NodeClaim annotations through `client`; launched nodes bootstrap against `cluster`'s
    /// API server endpoint and CA bundle.
    pub fn new(client: Client, aws: AwsClients, cluster: ClusterInfo, region: &str) -> Self {
        Self {
            ec2: Ec2Provider::new(aws.ec2.clone(), cluster, region),
            aws,
            client,
            resolve_ttl: RESOLVE_TTL,
            instance_types_ttl: INSTANCE_TYPES_TTL,
            resolved: Mutex::new(HashMap::new()),
            instance_types: tokio::sync::Mutex::new(None),
            class_types: Mutex::new(HashMap::new()),
            reserved_capacity: true,
        }
    }

    /// Feature gate `ReservedCapacity` (on by default): off, the classes' capacity
    /// reservations are neither offered nor launched into, and launch templates leave EC2's
    /// reservation preference at its default (`open`).
    pub fn with_reserved_capacity(mut self, on: bool) -> Self {
        self.reserved_capacity = on;
        self.ec2 = self.ec2.with_reserved_capacity(on);
        self
    }

    /// Overrides the cache lifetimes (tests use short ones).
    pub fn with_ttls(mut self, resolve: Duration, instance_types: Duration) -> Self {
        self.resolve_ttl = resolve;
        self.instance_types_ttl = instance_types;
        self
    }

    /// The EC2 half.
    pub fn ec2(&self) -> &Ec2Provider {
        &self.ec2
    }

    /// The EC2NodeClass a reference names; `NodeClassNotReady` when it does not exist, `Fatal`
    /// when the reference is not to an EC2NodeClass.
    pub async fn node_class(
        &self,
        r: &NodeClassReference,
    ) -> Result<EC2NodeClass, CloudProviderError> {
        if r.group != AWS_GROUP || r.kind != EC2_NODE_CLASS_KIND {
            return Err(CloudProviderError::Fatal(format!(
                "nodeClassRef {}/{} is not a {AWS_GROUP}/{EC2_NODE_CLASS_KIND}",
                r.group, r.kind
            )));
        }
        Api::<EC2NodeClass>::all(self.client.clone())
            .get_opt(&r.name)
            .await
            .map_err(kube_err)?
            .ok_or_else(|| {
                CloudProviderError::NodeClassNotReady(format!(
                    "EC2NodeClass {:?} not found",
                    r.name
                ))
            })
    }

    /// The class's resolved status (subnets, security groups, images, instance profile),
    /// cached for the resolve TTL per (uid, generation).
    pub async fn resolve(
        &self,
        nc: &EC2NodeClass,
    ) -> Result<EC2NodeClassStatus, CloudProviderError> {
        let name = nc.metadata.name.clone().unwrap_or_default();
        {
            let cache = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = cache.get(&name)
                && r.uid == nc.metadata.uid
                && r.generation == nc.metadata.generation
                && r.at.elapsed() < self.resolve_ttl
            {
                return Ok(r.status.clone());
            }
        }
        let version = kubernetes_version(&self.client).await.map_err(to_cloud)?;
        let status = compute_status(&self.aws, self.ec2.cluster(), nc, false, &version)
            .await
            .map_err(to_cloud)?;
        // Fresh from DescribeCapacityReservations: the counts replace what launches estimated.
        self.ec2
            .reservation_availability()
            .sync(&status.capacity_reservations, Instant::now());
        let mut cache = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(
            name,
            Resolved {
                uid: nc.metadata.uid.clone(),
                generation: nc.metadata.generation,
                at: Instant::now(),
                status: status.clone(),
            },
        );
        Ok(status)
    }

    /// Every instance type of the region (cached for the instance-types TTL), with offerings
    /// that recently had no capacity marked unavailable, sized with kubelet's defaults.
    pub async fn all_instance_types(&self) -> Result<Vec<InstanceType>, CloudProviderError> {
        let (_, mut its) = self.base_instance_types().await?;
        self.ec2.apply_unavailable(&mut its);
        Ok(its)
    }

    /// The cached region-wide types and when they were fetched.
    async fn base_instance_types(
        &self,
    ) -> Result<(Instant, Vec<InstanceType>), CloudProviderError> {
        let mut cached = self.instance_types.lock().await;
        match cached.as_ref() {
            Some((at, its)) if at.elapsed() < self.instance_types_ttl => Ok((*at, its.clone())),
            _ => {
                let its = self.ec2.instance_types().await.map_err(to_cloud)?;
                let at = Instant::now();
                *cached = Some((at, its.clone()));
                Ok((at, its))
            }
        }
    }

    /// The instance types a NodePool of this class can get: pods and allocatable follow the
    /// class's `spec.kubelet` (cached per class until the shared types are refetched or the
    /// kubelet settings change); with the `ReservedCapacity` gate, each selected capacity
    /// reservation adds a `reserved` offering with the instances it can still take; offerings
    /// recently out of capacity, in zones without a selected subnet, or of an architecture no
    /// resolved image boots are unavailable.
    pub async fn class_instance_types(
        &self,
        nc: &EC2NodeClass,
        status: &EC2NodeClassStatus,
    ) -> Result<Vec<InstanceType>, CloudProviderError> {
        let kubelet = KubeletOverrides::parse(&kubelet_spec(nc.spec.kubelet.as_ref()))
            .map_err(|e| CloudProviderError::NodeClassNotReady(e.to_string()))?;
        let (base_at, base) = self.base_instance_types().await?;
        let name = nc.metadata.name.clone().unwrap_or_default();
        let mut its = {
            let mut cache = self.class_types.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&name) {
                Some(c) if c.base_at == base_at && c.kubelet == kubelet => c.types.clone(),
                _ => {
                    let mut types = base;
                    for it in &mut types {
                        kubelet.apply(it);
                    }
                    cache.insert(
                        name,
                        ClassTypes {
                            base_at,
                            kubelet,
                            types: types.clone(),
                        },
                    );
                    types
                }
            }
        };
        offer_reservations(
            self.reserved_capacity,
            &mut its,
            &status.capacity_reservations,
            self.ec2.reservation_availability(),
            SystemTime::now(),
        );
        self.ec2.apply_unavailable(&mut its);
        for it in &mut its {
            let bootable =
                launch::image_for(&status.amis, it.labels.get(ARCH).map(String::as_str)).is_some();
            for o in &mut it.offerings {
                if !bootable || !status.subnets.iter().any(|s| s.zone == o.zone) {
                    o.available = false;
                }
            }
        }
        Ok(its)
    }

    async fn class_and_status(
        &self,
        r: &NodeClassReference,
    ) -> Result<(EC2NodeClass, EC2NodeClassStatus), CloudProviderError> {
        let nc = self.node_class(r).await?;
        let status = self.resolve(&nc).await?;
        Ok((nc, status))
    }

    /// Records the NodeClass hash on the NodeClaim in the API (the controller copies only
    /// labels and status from `create`'s result). A NodeClaim that is not in the API (an
    /// orphan launch) is skipped.
    async fn stamp_hash(&self, claim: &NodeClaim, hash: &str) -> Result<(), CloudProviderError> {
        let Some(name) = claim.metadata.name.as_deref() else {
            return Ok(());
        };
        let patch = serde_json::json!({"metadata": {"annotations": {
            NODECLASS_HASH_ANNOTATION: hash,
            NODECLASS_HASH_VERSION_ANNOTATION: NODECLASS_HASH_VERSION,
        }}});
        match Api::<NodeClaim>::all(self.client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(kube_err(e)),
        }
    }
}

#[async_trait]
impl CloudProvider for AwsCloudProvider {
    async fn create(&self, claim: &NodeClaim) -> Result<NodeClaim, CloudProviderError> {
        let (nc, status) = self.class_and_status(&claim.spec.node_class_ref).await?;
        let its = self.class_instance_types(&nc, &status).await?;
        let mut launched = self
            .ec2
            .create(claim, &nc, &status, &its)
            .await
            .map_err(to_cloud)?;
        let hash = node_class_hash(&nc);
        self.stamp_hash(claim, &hash).await?;
        let annotations = launched.metadata.annotations.get_or_insert_default();
        annotations.insert(NODECLASS_HASH_ANNOTATION.to_owned(), hash);
        annotations.insert(
            NODECLASS_HASH_VERSION_ANNOTATION.to_owned(),
            NODECLASS_HASH_VERSION.to_owned(),
        );
        Ok(launched)
    }

    async fn delete(&self, claim: &NodeClaim) -> Result<(), CloudProviderError> {
        self.ec2.delete(claim).await.map_err(to_cloud)?;
        // Its slot in the reservation frees up (upstream `MarkTerminated`).
        if let Some(id) = claim
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CAPACITY_RESERVATION_ID_LABEL))
        {
            self.ec2.reservation_availability().mark_terminated(id);
        }
        Ok(())
    }

    async fn get(&self, provider_id: &str) -> Result<NodeClaim, CloudProviderError> {
        let its = self.all_instance_types().await?;
        self.ec2.get(provider_id, &its).await.map_err(to_cloud)
    }

    async fn list(&self) -> Result<Vec<NodeClaim>, CloudProviderError> {
        let its = self.all_instance_types().await?;
        self.ec2.list(&its).await.map_err(to_cloud)
    }

    /// The region's instance types sized by the pool's EC2NodeClass (`spec.kubelet`), with
    /// offerings nothing could launch (no subnet in the zone, no image for the architecture)
    /// marked unavailable.
    async fn instance_types(
        &self,
        pool: &NodePool,
    ) -> Result<Vec<InstanceType>, CloudProviderError> {
        let (nc, status) = self
            .class_and_status(&pool.spec.template.spec.node_class_ref)
            .await?;
        if let Some(reason) = super::nodeclass::not_ready_reason(&status) {
            return Err(CloudProviderError::NodeClassNotReady(reason));
        }
        self.class_instance_types(&nc, &status).await
    }

    async fn is_drifted(&self, claim: &NodeClaim) -> Result<Option<String>, CloudProviderError> {
        let Some(id) = instance_id_of(claim) else {
            return Ok(None);
        };
        let (nc, status) = self.class_and_status(&claim.spec.node_class_ref).await?;
        let instance = self.ec2.describe(id).await.map_err(to_cloud)?;
        Ok(claim_drift(claim, &nc, &status, &instance))
    }

    /// One DescribeInstances per 100 instances and one NodeClass resolution per NodeClass for
    /// the whole batch (one call per claim would be throttled at a thousand nodes).
    async fn are_drifted(
        &self,
        claims: &[NodeClaim],
    ) -> Vec<Result<Option<String>, CloudProviderError>> {
        let mut ids: Vec<String> = claims
            .iter()
            .filter_map(|c| instance_id_of(c).map(str::to_owned))
            .collect();
        ids.sort();
        ids.dedup();
        let instances = if ids.is_empty() {
            Ok(HashMap::new())
        } else {
            self.ec2.describe_many(&ids).await
        };
        let mut classes = HashMap::new();
        let mut out = Vec::with_capacity(claims.len());
        for claim in claims {
            let Some(id) = instance_id_of(claim) else {
                out.push(Ok(None));
                continue;
            };
            let instance = match &instances {
                Ok(found) => found.get(id),
                Err(e) => {
                    out.push(Err(CloudProviderError::Transient(e.to_string())));
                    continue;
                }
            };
            let Some(instance) = instance else {
                out.push(Err(CloudProviderError::NodeClaimNotFound(format!(
                    "instance {id}"
                ))));
                continue;
            };
            let r = &claim.spec.node_class_ref;
            let key = format!("{}/{}/{}", r.group, r.kind, r.name);
            if !classes.contains_key(&key) {
                let resolved = self.class_and_status(r).await.map_err(|e| e.to_string());
                classes.insert(key.clone(), resolved);
            }
            out.push(match classes.get(&key) {
                Some(Ok((nc, status))) => Ok(claim_drift(claim, nc, status, instance)),
                Some(Err(e)) => Err(CloudProviderError::Transient(e.clone())),
                None => Ok(None),
            });
        }
        out
    }

    /// Reserved NodeClaims carry `karpenter.k8s.aws/capacity-reservation-id`; EC2 reports what
    /// each reservation has left (the provider's availability cache follows launches between
    /// DescribeCapacityReservations calls), so the controller subtracts nothing.
    fn reservations(&self) -> Option<ReservationLabel> {
        Some(ReservationLabel {
            key: CAPACITY_RESERVATION_ID_LABEL,
            capacity_is_total: false,
        })
    }

    fn repair_policies(&self) -> Vec<RepairPolicy> {
        crate::repair::REPAIR_POLICIES
            .iter()
            .map(|(condition, status, toleration)| RepairPolicy {
                condition_type: (*condition).to_string(),
                condition_status: (*status).to_string(),
                toleration: *toleration,
            })
            .collect()
    }

    fn name(&self) -> &str {
        self.ec2.name()
    }
}
