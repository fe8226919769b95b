//! Launching: the clones of a Machine's templates, waiting for its providerID (and giving up on
//! an offering whose Machines do not get one in time), and the providerID label.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use karpenter_api::v1::NodeClaim;
use karpenter_providers::{CloudProviderError, OfferingKey};
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{ClusterApiProvider, fatal, is_status, machine_resource, transient};
use crate::machine::{
    CLONED_ANNOTATION, PROVIDER_ID_LABEL, TemplateRef, bootstrap_template, clone_template,
    infrastructure_template, launched, provider_id, provider_id_hash, provider_id_labelled,
};
use crate::shape::Shape;

/// How long a Machine may wait for its providerID before its offering counts as out of
/// capacity ([`ClusterApiProvider::with_launch_timeout`]); the same as the controller's
/// registration timeout, so a stuck infrastructure fails a launch like a Node that never
/// registers.
pub const DEFAULT_LAUNCH_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Whether a Machine created `timeout` or longer before `now` still has no providerID.
pub fn launch_overdue(machine: &DynamicObject, now: Timestamp, timeout: Duration) -> bool {
    if provider_id(machine).is_some() {
        return false;
    }
    let Some(created) = machine.metadata.creation_timestamp.as_ref() else {
        return false;
    };
    let age = now.duration_since(created.0);
    !age.is_negative() && age.unsigned_abs() >= timeout
}

impl ClusterApiProvider {
    /// The API resource of `kind` in `group`, found by discovery (the version is the group's
    /// preferred one, as CAPI's contract asks), cached.
    pub(super) async fn resource(
        &self,
        group: &str,
        kind: &str,
    ) -> Result<ApiResource, CloudProviderError> {
        let key = (group.to_string(), kind.to_string());
        if let Some(ar) = self
            .kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(ar.clone());
        }
        let g = kube::discovery::group(&self.client, group)
            .await
            .map_err(transient)?;
        let (ar, _) = g.recommended_kind(kind).ok_or_else(|| {
            CloudProviderError::Fatal(format!(
                "the API server serves no kind {kind} in group {group}"
            ))
        })?;
        self.kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, ar.clone());
        Ok(ar)
    }

    /// Creates the clone of one template for `machine` (already there: fine).
    pub(super) async fn ensure_clone(
        &self,
        template_ref: &TemplateRef,
        machine: &DynamicObject,
    ) -> Result<(), CloudProviderError> {
        let ns = machine.namespace();
        let template_ar = self
            .resource(&template_ref.api_group, &template_ref.kind)
            .await?;
        let template = self
            .api(&template_ar, ns.as_deref())
            .get_opt(&template_ref.name)
            .await
            .map_err(transient)?
            .ok_or_else(|| {
                CloudProviderError::Fatal(format!(
                    "{} {}/{} not found",
                    template_ref.kind,
                    ns.clone().unwrap_or_default(),
                    template_ref.name
                ))
            })?;
        let clone = clone_template(&template, template_ref, machine).map_err(fatal)?;
        let clone_ar = self
            .resource(&template_ref.api_group, &template_ref.cloned_kind())
            .await?;
        match self
            .api(&clone_ar, ns.as_deref())
            .create(&PostParams::default(), &clone)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) if is_status(&e, 422) || is_status(&e, 400) => Err(fatal(e)),
            Err(e) => Err(transient(e)),
        }
    }

    /// Makes sure the Machine's clones exist, then reports it launched once it has a
    /// providerID.
    pub(super) async fn finish(
        &self,
        claim: &NodeClaim,
        shape: &Shape,
        md: &DynamicObject,
        machine: DynamicObject,
    ) -> Result<NodeClaim, CloudProviderError> {
        let name = machine.name_any();
        let ns = machine.namespace().unwrap_or_default();
        let mut machine = machine;
        if !machine.annotations().contains_key(CLONED_ANNOTATION) {
            let infra = infrastructure_template(md).map_err(fatal)?;
            self.ensure_clone(&infra, &machine).await?;
            if let Some(bootstrap) = bootstrap_template(md).map_err(fatal)? {
                self.ensure_clone(&bootstrap, &machine).await?;
            }
            machine = self
                .api(&machine_resource(), Some(&ns))
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {CLONED_ANNOTATION: "true"}}}),
                    ),
                )
                .await
                .map_err(transient)?;
        }
        if provider_id(&machine).is_none() {
            if launch_overdue(&machine, Timestamp::now(), self.launch_timeout) {
                let key = OfferingKey {
                    instance_type: shape.instance_type.clone(),
                    zone: shape.zone.clone(),
                    capacity_type: shape.capacity_type.clone(),
                };
                self.unavailable.mark(key, Instant::now());
                return Err(CloudProviderError::InsufficientCapacity(format!(
                    "Machine {ns}/{name} (MachineDeployment {}) got no providerID within {}s: instance type {} in zone {} ({}) is unavailable for a while, and the NodeClaim is replaced",
                    shape.key(),
                    self.launch_timeout.as_secs(),
                    shape.instance_type,
                    shape.zone,
                    shape.capacity_type
                )));
            }
            return Err(CloudProviderError::Transient(format!(
                "Machine {ns}/{name} (MachineDeployment {}): waiting for its infrastructure provider to set spec.providerID",
                shape.key()
            )));
        }
        self.label_provider_id(&machine).await?;
        Ok(launched(claim, shape, &machine))
    }

    /// Puts [`PROVIDER_ID_LABEL`] on a Machine with a providerID, unless it is there.
    pub(super) async fn label_provider_id(
        &self,
        machine: &DynamicObject,
    ) -> Result<(), CloudProviderError> {
        let (Some(false), Some(pid)) = (provider_id_labelled(machine), provider_id(machine)) else {
            return Ok(());
        };
        let patch = json!({"metadata": {"labels": {PROVIDER_ID_LABEL: provider_id_hash(&pid)}}});
        match self
            .api(&machine_resource(), machine.namespace().as_deref())
            .patch(
                &machine.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(transient(e)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn overdue_only_without_provider_id_and_after_the_timeout() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |secs: i64| {
            t0.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
                .unwrap()
        };
        let mut m: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "m"}, "spec": {}
        }))
        .unwrap();
        let timeout = Duration::from_secs(600);
        assert!(
            !launch_overdue(&m, at(601), timeout),
            "no creation time: never"
        );
        m.metadata.creation_timestamp = Some(Time(t0));
        assert!(!launch_overdue(&m, at(599), timeout));
        assert!(launch_overdue(&m, at(600), timeout));
        assert!(
            !launch_overdue(&m, at(-5), timeout),
            "a clock behind the server's"
        );
        m.data["spec"]["providerID"] = json!("in-memory://m");
        assert!(!launch_overdue(&m, at(601), timeout), "launched");
    }
}
