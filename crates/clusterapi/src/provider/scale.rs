//! Scale mode's calls ([`crate::scale`] plans them): scale a MachineDeployment up for a
//! NodeClaim, take the Machine its MachineSet creates, and release it on delete. Every write to
//! a MachineDeployment or to a Machine being taken is conditioned on the resourceVersion just
//! read and retried on conflict, from a fresh read, a few times.

use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::NODE_POOL_LABEL;
use karpenter_api::v1::NodeClaim;
use karpenter_providers::{CloudProviderError, OfferingKey};
use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::{
    ClusterApiProvider, fatal, is_status, launch_overdue, machine_deployment_resource,
    machine_resource, transient,
};
use crate::machine::{launched, provider_id};
use crate::scale::{self, DELETE_MACHINE_ANNOTATION, DEPLOYMENT_NAME_LABEL, Ledger, Pick, ScaleUp};
use crate::shape::Shape;

/// Conditioned writes tried this many times before the launch or delete is retried later.
const ATTEMPTS: u32 = 8;
/// Field manager of our writes to MachineDeployments and Machines.
const FIELD_MANAGER: &str = "karpenter-clusterapi";

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Before attempt `attempt` (none before the first): 10 ms doubling per attempt (640 ms before
/// the last), plus up to as much again at random, so writers that conflicted do not collide
/// again in lockstep.
async fn backoff(attempt: u32) {
    if attempt == 0 {
        return;
    }
    let base = 10u64 << (attempt - 1).min(10);
    // Random bits without a dependency: std's per-process random hash keys.
    let jitter = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(attempt);
        h.finish() % (base + 1)
    };
    tokio::time::sleep(std::time::Duration::from_millis(base + jitter)).await;
}

fn conflicted(what: &str) -> CloudProviderError {
    CloudProviderError::Transient(format!(
        "{what}: the object kept changing under us ({ATTEMPTS} conflicts); retrying later"
    ))
}

impl ClusterApiProvider {
    /// The MachineDeployment as the API server has it now (not a cache: its ledger and replica
    /// count decide whether to scale).
    async fn fresh_md(&self, ns: &str, name: &str) -> Result<DynamicObject, CloudProviderError> {
        self.api(&machine_deployment_resource(), Some(ns))
            .get(name)
            .await
            .map_err(|e| {
                if is_status(&e, 404) {
                    CloudProviderError::Fatal(format!("MachineDeployment {ns}/{name} is gone"))
                } else {
                    transient(e)
                }
            })
    }

    /// The MachineDeployment's shape as the API server has it now.
    pub(super) async fn fresh_md_shape(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Shape, CloudProviderError> {
        let md = self.fresh_md(ns, name).await?;
        Shape::from_machine_deployment(&md).map_err(fatal)
    }

    /// The Machines of MachineDeployment `md` now (its MachineSets' Machines, by CAPI's label).
    async fn md_machines(
        &self,
        ns: &str,
        md: &str,
    ) -> Result<Vec<DynamicObject>, CloudProviderError> {
        Ok(self
            .api(&machine_resource(), Some(ns))
            .list(&ListParams::default().labels(&format!("{DEPLOYMENT_NAME_LABEL}={md}")))
            .await
            .map_err(transient)?
            .items)
    }

    /// Writes a conditioned patch to a MachineDeployment; `Ok(false)` on a conflict. The
    /// result counts (replicas against the max size) before the watch shows it.
    async fn patch_md(
        &self,
        md: &DynamicObject,
        patch: &Value,
    ) -> Result<bool, CloudProviderError> {
        let ns = md.namespace().unwrap_or_default();
        match self
            .api(&machine_deployment_resource(), Some(&ns))
            .patch(&md.name_any(), &params(), &Patch::Merge(patch))
            .await
        {
            Ok(patched) => {
                self.written_mds.record(&patched);
                Ok(true)
            }
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) if is_status(&e, 422) || is_status(&e, 400) => Err(fatal(e)),
            Err(e) => Err(transient(e)),
        }
    }

    /// Launches NodeClaim `claim` from MachineDeployment `shape` in scale mode: scales it up
    /// for the NodeClaim unless its ledger says that was done, then takes the Machine.
    pub(super) async fn launch_scaled(
        &self,
        claim: &NodeClaim,
        shape: &Shape,
    ) -> Result<NodeClaim, CloudProviderError> {
        let name = claim.name_any();
        let mut scaled = false;
        for attempt in 0..ATTEMPTS {
            backoff(attempt).await;
            let md = self.fresh_md(&shape.namespace, &shape.name).await?;
            let fresh = Shape::from_machine_deployment(&md).map_err(fatal)?;
            let plan =
                scale::scale_up(&md, &name, Timestamp::now(), fresh.max_size).map_err(fatal)?;
            match plan {
                ScaleUp::Done(_) => {
                    scaled = true;
                    break;
                }
                ScaleUp::AtMaxSize { size, max } => {
                    return Err(CloudProviderError::InsufficientCapacity(format!(
                        "MachineDeployment {} is at its max size ({size} of {max})",
                        shape.key()
                    )));
                }
                ScaleUp::Patch(patch) => {
                    let machines = self.md_machines(&shape.namespace, &shape.name).await?;
                    if let Some(m) = scale::marked_not_deleting(&machines, &shape.name).next() {
                        return Err(CloudProviderError::Transient(format!(
                            "MachineDeployment {}: waiting for its MachineSet to delete Machine {} before scaling up",
                            shape.key(),
                            m.name_any()
                        )));
                    }
                    if self.patch_md(&md, &patch).await? {
                        tracing::info!(
                            NodeClaim = %name,
                            machine_deployment = %shape.key(),
                            replicas = scale::replicas(&md) + 1,
                            "scaled up MachineDeployment"
                        );
                        self.remember_scaled(&name, &shape.key());
                        scaled = true;
                        break;
                    }
                }
            }
        }
        if !scaled {
            return Err(conflicted(&format!(
                "scaling MachineDeployment {} up",
                shape.key()
            )));
        }
        self.take_machine(claim, shape).await
    }

    /// Takes (or finds again) the Machine for a NodeClaim the MachineDeployment was scaled up
    /// for, and reports the launch once that Machine has a providerID.
    pub(super) async fn take_machine(
        &self,
        claim: &NodeClaim,
        shape: &Shape,
    ) -> Result<NodeClaim, CloudProviderError> {
        let name = claim.name_any();
        let pool = claim
            .labels()
            .get(NODE_POOL_LABEL)
            .cloned()
            .unwrap_or_default();
        for attempt in 0..ATTEMPTS {
            backoff(attempt).await;
            let md = self.fresh_md(&shape.namespace, &shape.name).await?;
            let shape = Shape::from_machine_deployment(&md).map_err(fatal)?;
            let ledger = Ledger::read(&md).map_err(fatal)?;
            let Some(entry) = ledger.0.get(&name) else {
                return Err(CloudProviderError::Fatal(format!(
                    "MachineDeployment {} no longer records NodeClaim {name} in {}",
                    shape.key(),
                    scale::CLAIMS_ANNOTATION
                )));
            };
            let machines = self.md_machines(&shape.namespace, &shape.name).await?;
            let machine = match scale::pick(&machines, &shape.name, &name, entry.since) {
                Pick::Taken(m) => m.clone(),
                Pick::Free(m) => {
                    let patch = scale::take(m, &name, &shape.name, &pool);
                    match self
                        .api(&machine_resource(), Some(&shape.namespace))
                        .patch(&m.name_any(), &params(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(taken) => {
                            self.written_machines.record(&taken);
                            tracing::info!(
                                NodeClaim = %name,
                                machine = %taken.name_any(),
                                machine_deployment = %shape.key(),
                                "took Machine"
                            );
                            taken
                        }
                        // Another NodeClaim took it, or its MachineSet changed it: look again.
                        Err(e) if is_status(&e, 409) => continue,
                        Err(e) => return Err(transient(e)),
                    }
                }
                Pick::Nothing => {
                    let waited = Timestamp::now().duration_since(entry.since);
                    if !waited.is_negative() && waited.unsigned_abs() >= self.launch_timeout {
                        return Err(self.give_up(&shape, &format!(
                            "MachineDeployment {} created no Machine for NodeClaim {name} within {}s",
                            shape.key(),
                            self.launch_timeout.as_secs()
                        )));
                    }
                    return Err(CloudProviderError::Transient(format!(
                        "MachineDeployment {}: waiting for its MachineSet to create the Machine of NodeClaim {name}",
                        shape.key()
                    )));
                }
            };
            // The ledger names the Machine too, so a delete finds it even before a watch or
            // list shows its annotation. Best effort: the annotation on the Machine is what
            // adoption relies on.
            if let Some(patch) =
                scale::record_machine(&md, &name, &machine.name_any()).map_err(fatal)?
                && !self.patch_md(&md, &patch).await?
            {
                tracing::debug!(NodeClaim = %name, "recording the Machine in the ledger conflicted; recorded on a later attempt");
            }
            return self.finish_scaled(claim, &shape, machine).await;
        }
        Err(conflicted(&format!(
            "taking a Machine of MachineDeployment {}",
            shape.key()
        )))
    }

    /// Reports the NodeClaim launched once its Machine has a providerID; gives its offering up
    /// after the launch timeout.
    async fn finish_scaled(
        &self,
        claim: &NodeClaim,
        shape: &Shape,
        machine: DynamicObject,
    ) -> Result<NodeClaim, CloudProviderError> {
        if provider_id(&machine).is_none() {
            let (ns, name) = (shape.namespace.as_str(), machine.name_any());
            if launch_overdue(&machine, Timestamp::now(), self.launch_timeout) {
                return Err(self.give_up(
                    shape,
                    &format!(
                        "Machine {ns}/{name} (MachineDeployment {}) got no providerID within {}s",
                        shape.key(),
                        self.launch_timeout.as_secs()
                    ),
                ));
            }
            return Err(CloudProviderError::Transient(format!(
                "Machine {ns}/{name} (MachineDeployment {}): waiting for its infrastructure provider to set spec.providerID",
                shape.key()
            )));
        }
        self.label_provider_id(&machine).await?;
        Ok(launched(claim, shape, &machine))
    }

    /// Marks the shape's offering unavailable for a while and fails the launch as insufficient
    /// capacity (the controller deletes the NodeClaim, whose delete releases the replica).
    fn give_up(&self, shape: &Shape, why: &str) -> CloudProviderError {
        let key = OfferingKey {
            instance_type: shape.instance_type.clone(),
            zone: shape.zone.clone(),
            capacity_type: shape.capacity_type.clone(),
        };
        self.unavailable.mark(key, Instant::now());
        CloudProviderError::InsufficientCapacity(format!(
            "{why}: instance type {} in zone {} ({}) is unavailable for a while, and the NodeClaim is replaced",
            shape.instance_type, shape.zone, shape.capacity_type
        ))
    }

    /// Deletes NodeClaim `claim`'s instance in scale mode, from MachineDeployment `ns/md_name`:
    /// marks its Machine (if it took one) for deletion, then releases its replica in one
    /// conditioned write. `Ok(())` while the Machine is still there; NotFound once it is being
    /// deleted or gone and the replica released. The Machine is looked up on the API server,
    /// not the watch: lowering the replicas without marking the NodeClaim's Machine would let
    /// the MachineSet delete any other.
    pub(super) async fn delete_scaled(
        &self,
        claim: &str,
        ns: &str,
        md_name: &str,
    ) -> Result<(), CloudProviderError> {
        let mut machine =
            self.md_machines(ns, md_name).await?.into_iter().find(|m| {
                scale::claim_of(m) == Some(claim) && m.metadata.deletion_timestamp.is_none()
            });
        if machine.is_none() {
            machine = self.mark_spare(claim, ns, md_name).await?;
        }
        let machines = self.api(&machine_resource(), Some(ns));
        if let Some(m) = &machine
            && !scale::leaving(m)
        {
            // First the mark: when the MachineSet sees the lower count, it deletes this one.
            // Ours alone (no other NodeClaim takes a taken Machine): no condition needed.
            let patch = json!({"metadata": {"annotations": {DELETE_MACHINE_ANNOTATION: "true"}}});
            match machines
                .patch(&m.name_any(), &params(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(transient(e)),
            }
        }
        let mut released = false;
        for attempt in 0..ATTEMPTS {
            backoff(attempt).await;
            let md = match self.fresh_md(ns, md_name).await {
                Ok(md) => md,
                // No MachineDeployment, no replica to give back (its MachineSets' Machines go
                // with it).
                Err(CloudProviderError::Fatal(_)) => {
                    released = true;
                    break;
                }
                Err(e) => return Err(e),
            };
            let Some(patch) = scale::release(&md, claim).map_err(fatal)? else {
                released = true;
                break;
            };
            if self.patch_md(&md, &patch).await? {
                tracing::info!(
                    NodeClaim = %claim,
                    machine = machine.as_ref().map(|m| m.name_any()).unwrap_or_default(),
                    machine_deployment = %format!("{ns}/{md_name}"),
                    replicas = (scale::replicas(&md) - 1).max(0),
                    "scaled down MachineDeployment"
                );
                released = true;
                break;
            }
        }
        if !released {
            return Err(conflicted(&format!(
                "scaling MachineDeployment {ns}/{md_name} down"
            )));
        }
        self.forget_scaled(claim);
        let Some(m) = machine else {
            return Err(CloudProviderError::NodeClaimNotFound(format!(
                "NodeClaim {claim} has no Machine (replica of {ns}/{md_name} released)"
            )));
        };
        match machines.get_opt(&m.name_any()).await.map_err(transient)? {
            Some(now) if now.metadata.deletion_timestamp.is_none() => Ok(()),
            _ => Err(CloudProviderError::NodeClaimNotFound(format!(
                "Machine {ns}/{} is being deleted by its MachineSet",
                m.name_any()
            ))),
        }
    }

    /// A NodeClaim released before it took a Machine: its scale-up may have made one that no
    /// NodeClaim took yet. Marks the one it would have taken (conditioned, so never one another
    /// NodeClaim takes meanwhile), so the lower replica count removes that spare Machine rather
    /// than one in use. Returns the marked Machine.
    async fn mark_spare(
        &self,
        claim: &str,
        ns: &str,
        md_name: &str,
    ) -> Result<Option<DynamicObject>, CloudProviderError> {
        for attempt in 0..ATTEMPTS {
            backoff(attempt).await;
            let md = match self.fresh_md(ns, md_name).await {
                Ok(md) => md,
                Err(CloudProviderError::Fatal(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let ledger = Ledger::read(&md).map_err(fatal)?;
            let Some(entry) = ledger.0.get(claim) else {
                return Ok(None);
            };
            let machines = self.md_machines(ns, md_name).await?;
            let spare = match scale::pick(&machines, md_name, claim, entry.since) {
                Pick::Taken(m) | Pick::Free(m) => m,
                Pick::Nothing => return Ok(None),
            };
            match self
                .api(&machine_resource(), Some(ns))
                .patch(
                    &spare.name_any(),
                    &params(),
                    &Patch::Merge(&scale::mark(spare)),
                )
                .await
            {
                Ok(marked) => return Ok(Some(marked)),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) if is_status(&e, 404) => continue,
                Err(e) => return Err(transient(e)),
            }
        }
        Err(conflicted(&format!(
            "marking a spare Machine of MachineDeployment {ns}/{md_name}"
        )))
    }

    /// The MachineDeployment (`namespace/name`) a NodeClaim without a Machine was scaled up
    /// for: this process's record, else the ledgers of the opted-in MachineDeployments.
    pub(super) async fn scaled_for(
        &self,
        claim: &str,
    ) -> Result<Option<(String, String)>, CloudProviderError> {
        let split = |key: &str| {
            key.split_once('/')
                .map(|(ns, n)| (ns.to_string(), n.to_string()))
        };
        if let Some(key) = self
            .scaled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(claim)
        {
            return Ok(split(key));
        }
        let (_, _, objects) = self.members().await?;
        Ok(objects.iter().find_map(|(key, md)| {
            let ledger = Ledger::read(md).ok()?;
            ledger.0.contains_key(claim).then(|| split(key)).flatten()
        }))
    }

    fn remember_scaled(&self, claim: &str, md_key: &str) {
        self.scaled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(claim.to_string(), md_key.to_string());
    }

    fn forget_scaled(&self, claim: &str) {
        self.scaled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(claim);
    }
}
