//! Finding our Machines: all of them (by our label), a NodeClaim's (by name), and one by
//! providerID (through [`PROVIDER_ID_LABEL`]).

use karpenter_providers::CloudProviderError;
use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams};

use super::{ClusterApiProvider, machine_resource, transient};
use crate::machine::{MACHINE_DEPLOYMENT_LABEL, PROVIDER_ID_LABEL, provider_id_hash};

impl ClusterApiProvider {
    /// Every Machine this provider launched or took (carrying [`MACHINE_DEPLOYMENT_LABEL`]),
    /// from the watch (with those it does not show yet).
    pub(super) async fn our_machines(&self) -> Result<Vec<DynamicObject>, CloudProviderError> {
        self.watched_machines().await
    }

    /// Every Machine this provider launched or took, listed from the API server.
    pub(super) async fn our_machines_listed(
        &self,
    ) -> Result<Vec<DynamicObject>, CloudProviderError> {
        Ok(self
            .api(&machine_resource(), None)
            .list(&ListParams::default().labels(MACHINE_DEPLOYMENT_LABEL))
            .await
            .map_err(transient)?
            .items)
    }

    /// Our Machine named `name` (a NodeClaim's), in whichever namespace it is.
    pub(super) async fn find_machine(
        &self,
        name: &str,
    ) -> Result<Option<DynamicObject>, CloudProviderError> {
        let found = self
            .api(&machine_resource(), None)
            .list(
                &ListParams::default()
                    .labels(MACHINE_DEPLOYMENT_LABEL)
                    .fields(&format!("metadata.name={name}")),
            )
            .await
            .map_err(transient)?;
        Ok(found.items.into_iter().next())
    }

    /// The Machine NodeClaim `claim` took in scale mode (named by its MachineSet, annotated
    /// with the NodeClaim), as the watch shows it (a miss is settled by `delete_scaled`, which
    /// asks the API server).
    pub(super) async fn find_taken(
        &self,
        claim: &str,
    ) -> Result<Option<DynamicObject>, CloudProviderError> {
        Ok(self
            .our_machines()
            .await?
            .into_iter()
            .find(|m| crate::scale::claim_of(m) == Some(claim)))
    }

    /// Our live Machine with this providerID: found through [`PROVIDER_ID_LABEL`] (the API
    /// server selects it); a Machine not labelled yet (its providerID came after our last look,
    /// or it was launched by an older version) is found by a scan of our Machines, and labelled
    /// so the next lookup needs none.
    pub(super) async fn machine_by_provider_id(
        &self,
        provider_id: &str,
    ) -> Result<Option<DynamicObject>, CloudProviderError> {
        let matches = |m: &DynamicObject| {
            m.metadata.deletion_timestamp.is_none()
                && crate::machine::provider_id(m).as_deref() == Some(provider_id)
        };
        // The watch first; a miss (a providerID set after the watch's last event, or a
        // Machine truly gone) asks the API server, since a wrong "not found" would make the
        // caller give the instance up.
        if let Some(m) = self.our_machines().await?.into_iter().find(|m| matches(m)) {
            // Keep the label right for the API server's lookups (ours after a watch miss,
            // anyone's with a selector).
            if let Err(e) = self.label_provider_id(&m).await {
                tracing::debug!(error = %e, machine = %m.name_any(), "labelling a Machine by providerID failed");
            }
            return Ok(Some(m));
        }
        let selector = format!(
            "{MACHINE_DEPLOYMENT_LABEL},{PROVIDER_ID_LABEL}={}",
            provider_id_hash(provider_id)
        );
        let labelled = self
            .api(&machine_resource(), None)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(transient)?;
        if let Some(m) = labelled.items.into_iter().find(|m| matches(m)) {
            return Ok(Some(m));
        }
        let Some(m) = self
            .our_machines_listed()
            .await?
            .into_iter()
            .find(|m| matches(m))
        else {
            return Ok(None);
        };
        if let Err(e) = self.label_provider_id(&m).await {
            tracing::debug!(error = %e, machine = %m.name_any(), "labelling a Machine by providerID failed");
        }
        Ok(Some(m))
    }
}
