//! The kwok `CloudProvider`: an "instance" is a Node object the kwok controller acts as the
//! kubelet for. Creating the Node launches the instance; deleting it terminates it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Node;
use karpenter_api::kwok::{KWOK_GROUP, KWOKNodeClass};
use karpenter_api::v1::{NodeClaim, NodePool, find_condition};
use karpenter_solver::InstanceType;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};

use super::launch::{
    KWOK_NODE_ANNOTATION, KWOK_NODE_VALUE, RESERVATION_ID_LABEL, build_node, claim_requirements,
    instance_view, is_instance, launched, node_name, parse_resource_list, select,
};
use crate::cloudprovider::{
    CloudProvider, CloudProviderError, RepairPolicy, ReservationLabel, UnavailableOfferings,
};

/// Kind of the kwok NodeClass.
pub const KWOK_NODE_CLASS_KIND: &str = "KWOKNodeClass";

/// The kwok provider.
pub struct KwokProvider {
    client: Client,
    catalog: Vec<InstanceType>,
    unavailable: Arc<UnavailableOfferings>,
}

impl KwokProvider {
    /// A provider over the generated catalog ([`super::catalog`], as `simulate --catalog kwok`).
    pub fn new(client: Client) -> Self {
        Self::with_catalog(client, super::catalog())
    }

    /// A provider over a custom catalog.
    pub fn with_catalog(client: Client, catalog: Vec<InstanceType>) -> Self {
        Self {
            client,
            catalog,
            unavailable: Arc::new(UnavailableOfferings::default()),
        }
    }

    /// The insufficient-capacity cache: offerings marked here are neither chosen nor reported
    /// available until they expire.
    pub fn unavailable_offerings(&self) -> Arc<UnavailableOfferings> {
        self.unavailable.clone()
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Checks the NodeClaim's NodeClass exists, is a KWOKNodeClass and is not `Ready=False`.
    async fn check_node_class(&self, claim: &NodeClaim) -> Result<(), CloudProviderError> {
        let r = &claim.spec.node_class_ref;
        if r.group != KWOK_GROUP || r.kind != KWOK_NODE_CLASS_KIND {
            return Err(CloudProviderError::Fatal(format!(
                "nodeClassRef {}/{} is not a {KWOK_GROUP}/{KWOK_NODE_CLASS_KIND}",
                r.group, r.kind
            )));
        }
        let api: Api<KWOKNodeClass> = Api::all(self.client.clone());
        let class = api.get_opt(&r.name).await.map_err(transient)?;
        let Some(class) = class else {
            return Err(CloudProviderError::NodeClassNotReady(format!(
                "KWOKNodeClass {:?} not found",
                r.name
            )));
        };
        // Upstream defaults a KWOKNodeClass to Ready; only an explicit False blocks launches.
        let conditions = class.status.map(|s| s.conditions).unwrap_or_default();
        if let Some(c) = find_condition(&conditions, "Ready")
            && c.status == "False"
        {
            return Err(CloudProviderError::NodeClassNotReady(format!(
                "KWOKNodeClass {:?} is not ready: {}",
                r.name,
                c.message.clone().unwrap_or_default()
            )));
        }
        Ok(())
    }
}

fn transient(e: kube::Error) -> CloudProviderError {
    CloudProviderError::Transient(e.to_string())
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[async_trait]
impl CloudProvider for KwokProvider {
    async fn create(&self, claim: &NodeClaim) -> Result<NodeClaim, CloudProviderError> {
        self.check_node_class(claim).await?;
        let name = claim
            .metadata
            .name
            .clone()
            .ok_or_else(|| CloudProviderError::Fatal("NodeClaim has no name".into()))?;
        let reqs = claim_requirements(claim).map_err(CloudProviderError::Fatal)?;
        let requests = parse_resource_list(&claim.spec.resources.requests)
            .map_err(CloudProviderError::Fatal)?;
        let Some(choice) = select(
            &self.catalog,
            &reqs,
            &requests,
            &self.unavailable,
            Instant::now(),
        ) else {
            return Err(CloudProviderError::InsufficientCapacity(format!(
                "no available offering of the kwok catalog satisfies NodeClaim {name}'s requirements and requests"
            )));
        };
        let it = &self.catalog[choice.instance_type];
        let node = build_node(claim, it, choice.offering);
        match self.nodes().create(&PostParams::default(), &node).await {
            Ok(created) => Ok(launched(claim, &instance_view(&created))),
            // Launched before (e.g. we crashed before recording it): adopt the Node that is
            // named after this NodeClaim instead of launching a second instance.
            Err(e) if is_status(&e, 409) => {
                let existing = self.nodes().get(&name).await.map_err(transient)?;
                if existing.metadata.deletion_timestamp.is_some() {
                    return Err(CloudProviderError::Transient(format!(
                        "node {name} from an earlier launch is still terminating"
                    )));
                }
                Ok(launched(claim, &instance_view(&existing)))
            }
            Err(e) if is_status(&e, 422) || is_status(&e, 400) => {
                Err(CloudProviderError::Fatal(e.to_string()))
            }
            Err(e) => Err(transient(e)),
        }
    }

    async fn delete(&self, claim: &NodeClaim) -> Result<(), CloudProviderError> {
        let provider_id = claim
            .status
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default();
        let Some(name) = node_name(&provider_id) else {
            return Err(CloudProviderError::NodeClaimNotFound(format!(
                "no kwok providerID on {:?}",
                claim.metadata.name
            )));
        };
        let Some(node) = self.nodes().get_opt(name).await.map_err(transient)? else {
            return Err(CloudProviderError::NodeClaimNotFound(provider_id));
        };
        // A kwok instance dies the moment its Node is marked for deletion; what remains is the
        // Node's finalizer, which the termination controller removes once this returns
        // NotFound. Reporting "still there" would deadlock it.
        if node.metadata.deletion_timestamp.is_some() {
            return Err(CloudProviderError::NodeClaimNotFound(provider_id));
        }
        match self.nodes().delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Err(CloudProviderError::NodeClaimNotFound(provider_id)),
            Err(e) => Err(transient(e)),
        }
    }

    async fn get(&self, provider_id: &str) -> Result<NodeClaim, CloudProviderError> {
        let name = node_name(provider_id)
            .ok_or_else(|| CloudProviderError::NodeClaimNotFound(provider_id.to_string()))?;
        match self.nodes().get_opt(name).await.map_err(transient)? {
            Some(node) if node.metadata.deletion_timestamp.is_none() => Ok(instance_view(&node)),
            _ => Err(CloudProviderError::NodeClaimNotFound(
                provider_id.to_string(),
            )),
        }
    }

    async fn list(&self) -> Result<Vec<NodeClaim>, CloudProviderError> {
        // Every instance, ours or upstream Karpenter's, carries kwok's label (see is_instance).
        let nodes = self
            .nodes()
            .list(
                &ListParams::default().labels(&format!("{KWOK_NODE_ANNOTATION}={KWOK_NODE_VALUE}")),
            )
            .await
            .map_err(transient)?;
        Ok(nodes
            .items
            .iter()
            .filter(|n| is_instance(n))
            .map(instance_view)
            .collect())
    }

    async fn instance_types(
        &self,
        _pool: &NodePool,
    ) -> Result<Vec<InstanceType>, CloudProviderError> {
        let mut its = self.catalog.clone();
        self.unavailable.apply(&mut its, Instant::now());
        Ok(its)
    }

    async fn is_drifted(&self, _claim: &NodeClaim) -> Result<Option<String>, CloudProviderError> {
        // kwok instances have no image or configuration that could drift.
        Ok(None)
    }

    fn repair_policies(&self) -> Vec<RepairPolicy> {
        repair_policies()
    }

    fn reservations(&self) -> Option<ReservationLabel> {
        // The catalog declares each reservation's size; the Nodes in the cluster are what
        // runs in it, and the controller counts those.
        Some(ReservationLabel {
            key: RESERVATION_ID_LABEL,
            capacity_is_total: true,
        })
    }

    fn name(&self) -> &str {
        "kwok"
    }
}

/// The condition upstream's kwok provider uses to simulate an unhealthy node (kwok keeps nodes
/// Ready, and its stages would undo a `Ready=False` patch): set it `True` on a Node and the
/// node is repaired after 30 s.
pub const KWOK_UNHEALTHY_CONDITION: &str = "KWOKUnhealthy";

/// Upstream's kwok repair policies: `Ready` `False` or `Unknown` for 10 minutes, and the
/// simulated fault [`KWOK_UNHEALTHY_CONDITION`] `True` for 30 seconds.
pub fn repair_policies() -> Vec<RepairPolicy> {
    let policy = |condition: &str, status: &str, secs: u64| RepairPolicy {
        condition_type: condition.to_string(),
        condition_status: status.to_string(),
        toleration: Duration::from_secs(secs),
    };
    vec![
        policy("Ready", "False", 10 * 60),
        policy("Ready", "Unknown", 10 * 60),
        policy(KWOK_UNHEALTHY_CONDITION, "True", 30),
    ]
}
