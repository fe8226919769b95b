//! Puts the suite's objects on a fresh plane: our CRDs, the namespace, the KWOKNodeClass, the
//! NodePool, and (when the measured phase starts) the Deployments.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use karpenter_api::kwok::{KWOKNodeClass, KWOKNodeClassSpec};
use karpenter_api::v1::NodePool;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::workload::{self, NAMESPACE, POOL};

const FIELD_MANAGER: &str = "karpenter-perf";

/// CRDs (server-side apply, then Established), namespace + its `default` ServiceAccount,
/// KWOKNodeClass and NodePool.
pub async fn install(client: &Client, budget_percent: u64) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in karpenter_api::all_crds() {
        let name = crd.metadata.name.clone().context("a CRD without a name")?;
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
        karpenter_testkit::wait_crd_established(&crds, &name, Duration::from_secs(60)).await?;
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .context("creating the namespace")?;
    // Pods are rejected until the namespace's `default` ServiceAccount exists; making it here
    // beats waiting for the controller manager (409: it was quicker).
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &sa)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e).context("creating the default ServiceAccount"),
    }
    Api::<KWOKNodeClass>::all(client.clone())
        .create(
            &PostParams::default(),
            &KWOKNodeClass::new(POOL, KWOKNodeClassSpec::default()),
        )
        .await
        .context("creating the KWOKNodeClass")?;
    Api::<NodePool>::all(client.clone())
        .create(
            &PostParams::default(),
            &workload::node_pool(budget_percent)?,
        )
        .await
        .context("creating the NodePool")?;
    Ok(())
}

/// Creates the Deployments for `total` pods.
pub async fn create_deployments(client: &Client, total: usize) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    for (shape, n) in workload::replicas(total) {
        api.create(&PostParams::default(), &workload::deployment(&shape, n))
            .await
            .with_context(|| format!("creating Deployment {}", shape.name))?;
    }
    Ok(())
}

/// Scales the Deployments to the replicas of `total` pods.
pub async fn scale_deployments(client: &Client, total: usize) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    for (shape, n) in workload::replicas(total) {
        api.patch(
            shape.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": n}})),
        )
        .await
        .with_context(|| format!("scaling Deployment {}", shape.name))?;
    }
    Ok(())
}
