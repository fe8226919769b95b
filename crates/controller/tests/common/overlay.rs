//! NodeOverlay e2e helpers: the pool's Nodes by instance type, and an overlay's conditions.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use karpenter_api::labels::INSTANCE_TYPE_LABEL;
use karpenter_api::v1::find_condition;
use karpenter_api::v1alpha1::NodeOverlay;
use kube::{Api, ResourceExt};

use super::{Env, TIMEOUT};

/// The instance types of this pool's Nodes, counted.
pub async fn node_types(env: &Env) -> Result<BTreeMap<String, usize>> {
    let mut types = BTreeMap::new();
    for n in env.nodes().await? {
        let it = n
            .labels()
            .get(INSTANCE_TYPE_LABEL)
            .with_context(|| format!("node {} has no instance type", n.name_any()))?;
        *types.entry(it.clone()).or_default() += 1;
    }
    Ok(types)
}

/// Waits until the pool's Nodes are exactly `want`.
pub async fn wait_types(env: &Env, want: &[(&str, usize)]) -> Result<()> {
    let want: BTreeMap<String, usize> = want.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    let last = std::sync::Mutex::new(BTreeMap::new());
    let waited = env
        .cluster
        .wait_for(TIMEOUT, format!("nodes of types {want:?}"), || async {
            let types = node_types(env).await?;
            let done = types == want;
            if let Ok(mut l) = last.lock() {
                *l = types;
            }
            Ok::<_, anyhow::Error>(done.then_some(()))
        })
        .await;
    waited.with_context(|| format!("last seen: {:?}", last.lock().map(|l| l.clone())))
}

/// Waits until the overlay's `ValidationSucceeded` and `Ready` have `status`; returns the
/// `ValidationSucceeded` (reason, message).
pub async fn wait_condition(env: &Env, name: &str, status: &str) -> Result<(String, String)> {
    let api: Api<NodeOverlay> = Api::all(env.client.clone());
    env.cluster
        .wait_for(
            TIMEOUT,
            format!("NodeOverlay {name} ValidationSucceeded={status}"),
            || async {
                let o = api.get(name).await?;
                let conditions = o.status.map(|s| s.conditions).unwrap_or_default();
                let validated = find_condition(&conditions, "ValidationSucceeded");
                let ready = find_condition(&conditions, "Ready");
                let done = validated.is_some_and(|c| c.status == status)
                    && ready.is_some_and(|c| c.status == status);
                Ok::<_, anyhow::Error>(validated.filter(|_| done).map(|c| {
                    (
                        c.reason.clone().unwrap_or_default(),
                        c.message.clone().unwrap_or_default(),
                    )
                }))
            },
        )
        .await
        .map_err(Into::into)
}
