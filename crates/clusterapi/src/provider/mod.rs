//! The Cluster API `CloudProvider`: an instance is a CAPI Machine, one per NodeClaim and named
//! after it, made from the Machine template of the cheapest opted-in MachineDeployment that
//! fits the NodeClaim.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use karpenter_api::labels::NODE_POOL_LABEL;
use karpenter_api::v1::{NodeClaim, NodePool};
use karpenter_providers::kwok::launch::{claim_requirements, parse_resource_list, select};
use karpenter_providers::{
    CloudProvider, CloudProviderError, NodeGroupFloor, OfferingKey, UnavailableOfferings,
};
use karpenter_solver::InstanceType;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client, ResourceExt};

mod cache;
mod launch;
mod lookup;
mod scale;

pub use launch::{DEFAULT_LAUNCH_TIMEOUT, launch_overdue};

use crate::catalog::{self, Catalog};
use crate::machine::{
    CAPI_GROUP, CAPI_VERSION, MACHINE_DEPLOYMENT_LABEL, TemplateError, build_machine, drift_reason,
    instance_view,
};
use crate::report::{EventReporter, Problem};
use crate::scale::claim_of;
use crate::shape::{LaunchMode, Shape, ShapeError};

/// The provider's name (`--cloud-provider clusterapi`).
pub const PROVIDER_NAME: &str = "clusterapi";

fn capi_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: CAPI_GROUP.into(),
        version: CAPI_VERSION.into(),
        api_version: format!("{CAPI_GROUP}/{CAPI_VERSION}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// `cluster.x-k8s.io/v1beta2` MachineDeployment.
pub fn machine_deployment_resource() -> ApiResource {
    capi_resource("MachineDeployment", "machinedeployments")
}

/// `cluster.x-k8s.io/v1beta2` Machine.
pub fn machine_resource() -> ApiResource {
    capi_resource("Machine", "machines")
}

/// The Cluster API provider.
pub struct ClusterApiProvider {
    /// Client of the management cluster (where MachineDeployments and Machines live).
    client: Client,
    namespace: Option<String>,
    unavailable: Arc<UnavailableOfferings>,
    /// Discovered API resources of template and clone kinds, by (group, kind).
    kinds: Mutex<HashMap<(String, String), ApiResource>>,
    /// Events on MachineDeployments that cannot be offered or are skipped.
    reporter: EventReporter,
    /// Held from reading the catalog to creating the Machine, so concurrent launches count
    /// each other's Machines against a MachineDeployment's max size.
    launching: tokio::sync::Mutex<()>,
    /// [`Self::with_launch_timeout`].
    launch_timeout: std::time::Duration,
    /// Scale mode: NodeClaim → `namespace/name` of the MachineDeployment this process scaled
    /// up for it, until released. The ledger on the MachineDeployment is the durable record;
    /// this one answers before a list shows our own write.
    scaled: Mutex<HashMap<String, String>>,
    /// The watches of opted-in MachineDeployments and our Machines, started on first use.
    cache: tokio::sync::OnceCell<cache::Cache>,
    /// MachineDeployments we patched (scale mode) until the watch shows the patch.
    written_mds: cache::Overlay,
    /// Machines we created or took until the watch shows them.
    written_machines: cache::Overlay,
}

/// Shapes of the readable opted-in MachineDeployments, why the others are not offered, and
/// every opted-in MachineDeployment by `namespace/name`.
type Members = (Vec<Shape>, Vec<ShapeError>, HashMap<String, DynamicObject>);

/// An opted-in MachineDeployment and its shape.
struct Member {
    shape: Shape,
    object: DynamicObject,
}

fn transient(e: kube::Error) -> CloudProviderError {
    CloudProviderError::Transient(e.to_string())
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn fatal(e: impl std::fmt::Display) -> CloudProviderError {
    CloudProviderError::Fatal(e.to_string())
}

impl ClusterApiProvider {
    /// A provider acting on the management cluster behind `client`, in every namespace, or
    /// only in `namespace` when given.
    ///
    /// MachineDeployments it cannot launch from get Events (see [`crate::report`]), written
    /// through the same client.
    pub fn new(client: Client, namespace: Option<String>) -> Self {
        Self {
            client: client.clone(),
            namespace,
            unavailable: Arc::new(UnavailableOfferings::default()),
            kinds: Mutex::new(HashMap::new()),
            reporter: EventReporter::new(client.clone()),
            launching: tokio::sync::Mutex::new(()),
            launch_timeout: DEFAULT_LAUNCH_TIMEOUT,
            scaled: Mutex::new(HashMap::new()),
            cache: tokio::sync::OnceCell::new(),
            written_mds: cache::Overlay::default(),
            written_machines: cache::Overlay::default(),
        }
    }

    /// How long a launched Machine may wait for its providerID ([`DEFAULT_LAUNCH_TIMEOUT`]).
    /// After that its offering is unavailable for a while (the insufficient-capacity cache)
    /// and the launch fails as insufficient capacity: the controller deletes the NodeClaim (so
    /// the Machine) and places its pods again, on another offering.
    pub fn with_launch_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.launch_timeout = timeout;
        self
    }

    /// The insufficient-capacity cache.
    pub fn unavailable_offerings(&self) -> Arc<UnavailableOfferings> {
        self.unavailable.clone()
    }

    fn api(&self, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace.or(self.namespace.as_deref()) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }

    /// Opted-in MachineDeployments with their shapes (from the watch, see [`cache`]); those
    /// that cannot be read come back as errors (reported by callers), and the others keep
    /// working. The last item holds every opted-in MachineDeployment by `namespace/name`.
    async fn members(&self) -> Result<Members, CloudProviderError> {
        let mds = self.watched_mds().await?;
        let (shapes, errors) = catalog::shapes(&mds);
        let objects = mds
            .into_iter()
            .map(|md| {
                let key = format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any());
                (key, md)
            })
            .collect();
        Ok((shapes, errors, objects))
    }

    /// The catalog a NodePool with these taints sees, and the MachineDeployment objects by key.
    /// Publishes the Events of MachineDeployments that cannot be offered or are skipped.
    async fn catalog(
        &self,
        pool_taints: &[karpenter_api::v1::Taint],
    ) -> Result<(Catalog, HashMap<String, DynamicObject>), CloudProviderError> {
        let (shapes, errors, objects) = self.members().await?;
        let machines = self.our_machines().await?;
        let counts = catalog::machine_counts(&machines);
        // Problems come from every opted-in MachineDeployment, whichever NodePool asks, so one
        // NodePool's taints never hide (and so re-raise) another's Events.
        let all = catalog::build(shapes.clone(), &counts);
        let problems: Vec<Problem> = errors
            .iter()
            .chain(&all.errors)
            .map(Problem::invalid)
            .chain(all.unavailable.iter().map(Problem::unavailable))
            .collect();
        self.reporter.report(&problems, &objects).await;
        let mut catalog = catalog::for_pool(&shapes, pool_taints, &counts);
        catalog.errors.splice(0..0, errors);
        Ok((catalog, objects))
    }

    /// The MachineDeployment a Machine of ours came from, and its shape.
    async fn origin(&self, machine: &DynamicObject) -> Result<Option<Member>, CloudProviderError> {
        let Some(md_name) = machine.labels().get(MACHINE_DEPLOYMENT_LABEL) else {
            return Ok(None);
        };
        let ns = machine.namespace();
        let Some(object) = self
            .api(&machine_deployment_resource(), ns.as_deref())
            .get_opt(md_name)
            .await
            .map_err(transient)?
        else {
            return Ok(None);
        };
        let shape = Shape::from_machine_deployment(&object).map_err(fatal)?;
        Ok(Some(Member { shape, object }))
    }
}

fn template_error(e: TemplateError) -> CloudProviderError {
    CloudProviderError::Fatal(e.to_string())
}

#[async_trait]
impl CloudProvider for ClusterApiProvider {
    async fn create(&self, claim: &NodeClaim) -> Result<NodeClaim, CloudProviderError> {
        let name = claim
            .metadata
            .name
            .clone()
            .ok_or_else(|| CloudProviderError::Fatal("NodeClaim has no name".into()))?;
        // Launched before (we crashed, or are waiting for the providerID): adopt that Machine,
        // never launch a second one.
        if let Some(machine) = self.find_machine(&name).await? {
            if machine.metadata.deletion_timestamp.is_some() {
                return Err(CloudProviderError::Transient(format!(
                    "Machine {}/{name} from an earlier launch is still being deleted",
                    machine.namespace().unwrap_or_default()
                )));
            }
            let Some(member) = self.origin(&machine).await? else {
                return Err(CloudProviderError::Fatal(format!(
                    "the MachineDeployment of Machine {}/{name} is gone",
                    machine.namespace().unwrap_or_default()
                )));
            };
            return self
                .finish(claim, &member.shape, &member.object, machine)
                .await;
        }
        // Scale mode: a MachineDeployment was scaled up for it before; take (or find again)
        // its Machine, never scale again.
        if let Some((ns, md_name)) = self.scaled_for(&name).await? {
            let md = self.fresh_md_shape(&ns, &md_name).await?;
            return self.take_machine(claim, &md).await;
        }
        let reqs = claim_requirements(claim).map_err(CloudProviderError::Fatal)?;
        let requests = parse_resource_list(&claim.spec.resources.requests)
            .map_err(CloudProviderError::Fatal)?;
        let taints: Vec<_> = claim
            .spec
            .taints
            .iter()
            .chain(&claim.spec.startup_taints)
            .cloned()
            .collect();
        // Until the Machine exists (a list sees it), so the next launch counts it.
        let launching = self.launching.lock().await;
        let (catalog, objects) = self.catalog(&taints).await?;
        let choice = select(
            &catalog.instance_types,
            &reqs,
            &requests,
            &self.unavailable,
            Instant::now(),
        );
        let Some(choice) = choice else {
            let mut why: Vec<String> = catalog.errors.iter().map(|e| e.to_string()).collect();
            why.extend(catalog.unavailable.iter().map(ToString::to_string));
            return Err(CloudProviderError::InsufficientCapacity(format!(
                "no available MachineDeployment offering fits NodeClaim {name}{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", why.join("; "))
                }
            )));
        };
        let it = &catalog.instance_types[choice.instance_type];
        let offering = &it.offerings[choice.offering];
        let key = OfferingKey {
            instance_type: it.name.clone(),
            zone: offering.zone.clone(),
            capacity_type: offering.capacity_type.clone(),
        };
        let shape = catalog.offerings.get(&key).ok_or_else(|| {
            CloudProviderError::Fatal(format!("no MachineDeployment for {key:?}"))
        })?;
        let md = objects.get(&shape.key()).ok_or_else(|| {
            CloudProviderError::Fatal(format!("MachineDeployment {} vanished", shape.key()))
        })?;
        if shape.mode == LaunchMode::Scale {
            let launched = self.launch_scaled(claim, shape).await;
            drop(launching);
            return launched;
        }
        let pool = claim
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(NODE_POOL_LABEL))
            .cloned()
            .unwrap_or_default();
        let machine = build_machine(md, &name, &pool).map_err(template_error)?;
        let machines = self.api(&machine_resource(), Some(&shape.namespace));
        let created = match machines.create(&PostParams::default(), &machine).await {
            Ok(m) => m,
            Err(e) if is_status(&e, 409) => machines.get(&name).await.map_err(transient)?,
            Err(e) if is_status(&e, 422) || is_status(&e, 400) => return Err(fatal(e)),
            Err(e) => return Err(transient(e)),
        };
        // Counted against the max size by the next launch, before the watch shows it.
        self.written_machines.record(&created);
        drop(launching);
        tracing::info!(
            NodeClaim = %name,
            machine_deployment = %shape.key(),
            instance_type = %shape.instance_type,
            zone = %shape.zone,
            "created Machine"
        );
        self.finish(claim, shape, md, created).await
    }

    async fn delete(&self, claim: &NodeClaim) -> Result<(), CloudProviderError> {
        let name = claim.name_any();
        let provider_id = claim
            .status
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default();
        let mut machine = self.find_machine(&name).await?;
        if machine.is_none() {
            machine = self.find_taken(&name).await?;
        }
        if machine.is_none() && !provider_id.is_empty() {
            // Garbage collection names instances by providerID only.
            machine = self.machine_by_provider_id(&provider_id).await?;
        }
        let Some(machine) = machine else {
            // Scale mode, before a Machine was taken: give the replica back.
            if let Some((ns, md_name)) = self.scaled_for(&name).await? {
                return self.delete_scaled(&name, &ns, &md_name).await;
            }
            return Err(CloudProviderError::NodeClaimNotFound(format!(
                "no Machine for NodeClaim {name}"
            )));
        };
        if let Some(taken_by) = claim_of(&machine).map(str::to_string) {
            let ns = machine.namespace().unwrap_or_default();
            let md_name = machine
                .labels()
                .get(MACHINE_DEPLOYMENT_LABEL)
                .cloned()
                .unwrap_or_default();
            return self.delete_scaled(&taken_by, &ns, &md_name).await;
        }
        // Once CAPI has it, the Machine goes away on its own (drain, infrastructure deletion,
        // Node deletion); waiting for it here could deadlock with the Node's finalizer, which
        // the termination controller only removes after this reports NotFound.
        if machine.metadata.deletion_timestamp.is_some() {
            return Err(CloudProviderError::NodeClaimNotFound(format!(
                "Machine {}/{} is being deleted",
                machine.namespace().unwrap_or_default(),
                machine.name_any()
            )));
        }
        let ns = machine.namespace();
        match self
            .api(&machine_resource(), ns.as_deref())
            .delete(&machine.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {
                tracing::info!(NodeClaim = %name, machine = %machine.name_any(), "deleting Machine");
                Ok(())
            }
            Err(e) if is_status(&e, 404) => Err(CloudProviderError::NodeClaimNotFound(format!(
                "Machine {} is gone",
                machine.name_any()
            ))),
            Err(e) => Err(transient(e)),
        }
    }

    async fn get(&self, provider_id: &str) -> Result<NodeClaim, CloudProviderError> {
        self.machine_by_provider_id(provider_id)
            .await?
            .as_ref()
            .map(instance_view)
            .ok_or_else(|| CloudProviderError::NodeClaimNotFound(provider_id.to_string()))
    }

    async fn list(&self) -> Result<Vec<NodeClaim>, CloudProviderError> {
        // From the API server, not the watch: garbage collection deletes NodeClaims whose
        // instance is missing here, and it runs every few minutes, not per round.
        Ok(self
            .our_machines_listed()
            .await?
            .iter()
            .map(instance_view)
            .collect())
    }

    async fn instance_types(
        &self,
        pool: &NodePool,
    ) -> Result<Vec<InstanceType>, CloudProviderError> {
        let t = &pool.spec.template.spec;
        let taints: Vec<_> = t.taints.iter().chain(&t.startup_taints).cloned().collect();
        let (catalog, _) = self.catalog(&taints).await?;
        let mut its = catalog.instance_types;
        self.unavailable.apply(&mut its, Instant::now());
        Ok(its)
    }

    async fn is_drifted(&self, claim: &NodeClaim) -> Result<Option<String>, CloudProviderError> {
        let Some(machine) = self.find_machine(&claim.name_any()).await? else {
            return Ok(None);
        };
        match self.origin(&machine).await {
            Ok(Some(member)) => Ok(drift_reason(&machine, &member.object)),
            Ok(None) => Ok(Some(format!(
                "MachineDeployment {}/{} is gone",
                machine.namespace().unwrap_or_default(),
                machine
                    .labels()
                    .get(MACHINE_DEPLOYMENT_LABEL)
                    .cloned()
                    .unwrap_or_default()
            ))),
            // A MachineDeployment whose annotations became unreadable still has a template.
            Err(CloudProviderError::Fatal(_)) => {
                let ns = machine.namespace();
                let md_name = machine
                    .labels()
                    .get(MACHINE_DEPLOYMENT_LABEL)
                    .cloned()
                    .unwrap_or_default();
                let md = self
                    .api(&machine_deployment_resource(), ns.as_deref())
                    .get_opt(&md_name)
                    .await
                    .map_err(transient)?;
                Ok(md.and_then(|md| drift_reason(&machine, &md)))
            }
            Err(e) => Err(e),
        }
    }

    async fn node_group_floors(&self) -> Result<Vec<NodeGroupFloor>, CloudProviderError> {
        let (shapes, _, _) = self.members().await?;
        let machines = self.our_machines().await?;
        Ok(catalog::floors(&shapes, &machines))
    }

    fn name(&self) -> &str {
        PROVIDER_NAME
    }
}
