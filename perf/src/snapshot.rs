//! The cluster as `karpenter simulate -f` reads it (NodePools, Nodes, the workload's pods),
//! written after the scale-down settles, so a consolidation that stopped short of the plan can
//! be replayed offline: `karpenter simulate -f <file>` shows what the
//! planner would still do on exactly that state.

use std::path::Path;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use karpenter_api::v1::NodePool;
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde_json::Value;

use crate::workload::NAMESPACE;

/// Writes every NodePool and Node and the workload namespace's pods to `path`
/// as YAML documents (JSON is YAML), managedFields dropped.
pub async fn write(client: &Client, path: &Path) -> Result<()> {
    let mut docs = Vec::new();
    docs.extend(documents::<NodePool>(Api::all(client.clone())).await?);
    docs.extend(documents::<Node>(Api::all(client.clone())).await?);
    docs.extend(documents::<Pod>(Api::namespaced(client.clone(), NAMESPACE)).await?);
    std::fs::write(path, docs.join("\n---\n"))
        .with_context(|| format!("writing {}", path.display()))
}

async fn documents<K>(api: Api<K>) -> Result<Vec<String>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let list = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing {}", K::plural(&())))?;
    list.items
        .into_iter()
        .map(|item| {
            let mut v = serde_json::to_value(&item)?;
            // Typed lists leave apiVersion/kind out; simulate picks the type by them.
            v["apiVersion"] = Value::String(K::api_version(&()).into_owned());
            v["kind"] = Value::String(K::kind(&()).into_owned());
            if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("managedFields");
            }
            Ok(serde_json::to_string(&v)?)
        })
        .collect()
}
